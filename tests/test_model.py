"""aspo.model: char tokenizer, embedded Qwen2, local HF model loading, devices, prompt formatting."""
from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

from aspo.model import (ModelError, build_small_model, build_tokenizer, format_prompt, load_local_model,
                        resolve_device)
from aspo.rollout import generate

ALPHABET = "0123456789+="


@pytest.fixture(scope="module")
def tok():
    return build_tokenizer(ALPHABET)


def n_params(model) -> int:
    return sum(p.numel() for p in model.parameters())


# ----------------------------------------------------------------------------------------------- tokenizer
def test_tokenizer_is_char_level_with_special_tokens(tok):
    assert len(tok) == len(ALPHABET) + 4
    ids = tok("12+3=")["input_ids"]
    assert ids[0] == tok.bos_token_id and len(ids) == 6
    assert tok.convert_ids_to_tokens(ids[1:]) == list("12+3=")
    assert tok.decode(ids, skip_special_tokens=True) == "12+3="
    assert tok("1x2", add_special_tokens=False)["input_ids"][1] == tok.unk_token_id
    assert {tok.pad_token_id, tok.bos_token_id, tok.eos_token_id, tok.unk_token_id} == {0, 1, 2, 3}
    assert tok.padding_side == "left"


def test_tokenizer_keeps_spaces_and_newlines():
    t = build_tokenizer("ab \n")
    text = "a b\n\nba "
    assert t.decode(t(text, add_special_tokens=False)["input_ids"]) == text


def test_tokenizer_save_and_reload(tok, tmp_path):
    tok.save_pretrained(tmp_path)
    again = AutoTokenizer.from_pretrained(tmp_path, local_files_only=True)
    batch = ["1+2=", "34+56="]
    assert again(batch, padding=True)["input_ids"] == tok(batch, padding=True)["input_ids"]
    assert again.padding_side == "left"
    assert (again.pad_token_id, again.eos_token_id, again.bos_token_id) == (0, 2, 1)


# ----------------------------------------------------------------------------------------------- embedded model
def test_small_model_sizes_and_tied_embeddings(tok):
    tiny, small = build_small_model(tok, "tiny", seed=0), build_small_model(tok, "small", seed=0)
    assert 0.4e6 <= n_params(tiny) <= 0.8e6
    assert 1.5e6 <= n_params(small) <= 2.5e6
    assert tiny.lm_head.weight.data_ptr() == tiny.model.embed_tokens.weight.data_ptr()
    assert tiny.config.vocab_size == len(tok) and tiny.config.eos_token_id == tok.eos_token_id


def test_small_model_seeded_and_leaves_global_rng_alone(tok):
    state = torch.get_rng_state()
    a, b = build_small_model(tok, "tiny", seed=3), build_small_model(tok, "tiny", seed=3)
    assert torch.equal(torch.get_rng_state(), state)
    c = build_small_model(tok, "tiny", seed=4)
    wa, wb, wc = (m.model.layers[0].mlp.up_proj.weight for m in (a, b, c))
    assert torch.equal(wa, wb) and not torch.equal(wa, wc)


def test_unknown_size_is_a_clear_error(tok):
    with pytest.raises(ModelError, match="unknown model size 'huge'"):
        build_small_model(tok, "huge", seed=0)


# ----------------------------------------------------------------------------------------------- local models
def test_small_model_round_trips_through_load_local_model(tok, tmp_path):
    model = build_small_model(tok, "tiny", seed=1)
    model.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    loaded, tok2 = load_local_model(tmp_path, device="cpu")
    x = torch.tensor([tok("12+34=")["input_ids"]])
    with torch.no_grad():
        assert torch.allclose(loaded(x).logits, model(x).logits, atol=1e-6)
    assert loaded.dtype == torch.float32 and not loaded.training
    ro = generate(loaded, tok2, ["1+2=", "33+4="], 5, 1.0, torch.Generator().manual_seed(0))
    assert ro.completion_ids.shape[0] == 2 and len(ro.texts) == 2


def test_load_llama_without_pad_token_sets_pad_and_left_padding(tmp_path):
    tok = build_tokenizer(ALPHABET)
    tok.pad_token = None
    tok.padding_side = "right"
    config = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                         bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    model, loaded_tok = load_local_model(str(tmp_path), device="auto", dtype="float32")
    assert loaded_tok.pad_token_id == loaded_tok.eos_token_id and loaded_tok.padding_side == "left"
    ro = generate(model, loaded_tok, ["1+1=", "22+22="], 6, 1.0, torch.Generator().manual_seed(0))
    assert ro.input_ids.shape[0] == 2 and ro.completion_mask.shape == ro.completion_ids.shape


def test_missing_path_is_a_clear_error(tmp_path):
    with pytest.raises(ModelError, match="does not exist"):
        load_local_model(tmp_path / "nope")


def test_directory_that_is_not_a_model_is_a_clear_error(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(ModelError, match="not a Hugging Face model directory"):
        load_local_model(tmp_path)
    with pytest.raises(ModelError, match="not a Hugging Face model directory"):
        load_local_model(tmp_path / "notes.txt")


def test_missing_tokenizer_or_weights_is_a_clear_error(tok, tmp_path):
    model = build_small_model(tok, "tiny", seed=0)
    model.save_pretrained(tmp_path / "no_tok")
    with pytest.raises(ModelError, match="tokenizer") as err:
        load_local_model(tmp_path / "no_tok")
    assert "\n" not in str(err.value)
    model.config.save_pretrained(tmp_path / "no_weights")
    tok.save_pretrained(tmp_path / "no_weights")
    with pytest.raises(ModelError, match="cannot load a causal LM") as err:
        load_local_model(tmp_path / "no_weights")
    assert "\n" not in str(err.value)
    assert issubclass(ModelError, ValueError)


def test_bad_config_is_a_clear_error(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "no-such-architecture"}))
    with pytest.raises(ModelError):
        load_local_model(tmp_path)


# ----------------------------------------------------------------------------------------------- devices, prompts
def test_resolve_device():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")
    with pytest.raises(ModelError, match="unknown device"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ModelError, match="CUDA is not available"):
            resolve_device("cuda")


def test_format_prompt_uses_chat_template_when_present():
    tok = build_tokenizer(ALPHABET + "<>|")
    assert format_prompt(tok, "1+2=") == "1+2="
    tok.chat_template = ("{% for m in messages %}<|{{ m['content'] }}|>{% endfor %}"
                         "{% if add_generation_prompt %}>{% endif %}")
    assert format_prompt(tok, "1+2=") == "<|1+2=|>>"
