"""Models: a small char-level Qwen2 built from a config, or any local Hugging Face causal LM.

Nothing here touches the network: tokenizers are built with the `tokenizers` library and local models are loaded
with `local_files_only=True`.
"""
from __future__ import annotations

from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, processors
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

from aspo.config import ConfigError

SPECIAL_TOKENS = ("<pad>", "<bos>", "<eos>", "<unk>")

# Embedded model sizes. tiny ~0.6M parameters, small ~2.0M (plus 128*V resp. 192*V for the tied embedding).
# Depth matters more than width for carries in a+b, hence 4-5 thin layers; GQA halves the KV cache.
SIZES: dict[str, dict] = {
    "tiny": dict(hidden_size=128, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2,
                 intermediate_size=256),
    "small": dict(hidden_size=192, num_hidden_layers=5, num_attention_heads=6, num_key_value_heads=2,
                  intermediate_size=512),
}
MAX_POSITIONS = 1024
# transformers 5 builds an *empty* tokenizer from config.json alone, so a missing tokenizer is detected by its files
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json", "vocab.txt",
                   "spiece.model")  # RoPE: costs no parameters; code-task prompts are a few hundred characters


class ModelError(ConfigError):
    """A model path or device that cannot be used; the message is one line meant for the user."""


# ----------------------------------------------------------------------------------------------- tokenizer
def build_tokenizer(alphabet: str) -> PreTrainedTokenizerFast:
    """One token per character of `alphabet` plus <pad>, <bos>, <eos>, <unk>; <bos> is prepended on encoding.

    A BPE model without merges over a character vocabulary: every character is its own token, anything outside the
    alphabet becomes <unk>, and `decode` concatenates (no spaces inserted). Left padding, for generation.
    """
    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS)}
    for ch in alphabet:
        vocab.setdefault(ch, len(vocab))
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    tok.decoder = decoders.Fuse()
    tok.post_processor = processors.TemplateProcessing(
        single="<bos> $A", pair="<bos> $A $B", special_tokens=[("<bos>", vocab["<bos>"])])
    tok.add_special_tokens(list(SPECIAL_TOKENS))
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", bos_token="<bos>", eos_token="<eos>",
                                   unk_token="<unk>", padding_side="left", model_max_length=MAX_POSITIONS)


# ----------------------------------------------------------------------------------------------- models
def build_small_model(tokenizer, size: str = "tiny", seed: int = 0) -> Qwen2ForCausalLM:
    """A randomly initialised Qwen2 (tied embeddings, float32) sized for CPU training; same seed -> same weights."""
    if size not in SIZES:
        raise ModelError(f"unknown model size {size!r}: choose one of {', '.join(SIZES)}")
    config = Qwen2Config(
        vocab_size=len(tokenizer), max_position_embeddings=MAX_POSITIONS, tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
        initializer_range=0.02, use_cache=True, **SIZES[size])
    config._attn_implementation = "sdpa"  # measured faster than eager on CPU at these sizes (benchmarks/)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Qwen2ForCausalLM(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model.eval()


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """'auto' -> cuda if available else cpu; 'cpu', 'cuda', 'cuda:N' as given (clear error if CUDA is absent)."""
    if isinstance(device, torch.device):
        return device
    name = (device or "auto").strip().lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ModelError(f"device {device!r} requested but CUDA is not available (use --device cpu or auto)")
    try:
        return torch.device(name)
    except RuntimeError:
        raise ModelError(f"unknown device {device!r}: auto, cpu, cuda or cuda:N") from None


def _dtype(dtype):
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype or torch.float32
    value = getattr(torch, str(dtype).removeprefix("torch."), None)
    if not isinstance(value, torch.dtype):
        raise ModelError(f"unknown dtype {dtype!r} (e.g. float32, bfloat16)")
    return value


def load_local_model(path, device: str | torch.device = "auto", dtype=None):
    """(model, tokenizer) from a local Hugging Face causal-LM directory; never contacts a hub.

    dtype None loads float32 (exact log-ratios matter more here than speed; pass "bfloat16" for big models).
    The tokenizer gets a pad token (its eos) if it has none and pads on the left, for batched generation.
    """
    root = Path(path).expanduser()
    if not root.exists():
        raise ModelError(f"model path {root} does not exist")
    if not root.is_dir() or not (root / "config.json").is_file():
        raise ModelError(f"{root} is not a Hugging Face model directory (no config.json)")
    if not any((root / name).is_file() for name in TOKENIZER_FILES):
        raise ModelError(f"no tokenizer in {root} (expected one of {', '.join(TOKENIZER_FILES)})")
    dev = resolve_device(device)
    try:
        tokenizer = AutoTokenizer.from_pretrained(root, local_files_only=True)
    except Exception as exc:  # noqa: BLE001  (transformers raises many types here)
        raise ModelError(f"no usable tokenizer in {root}: {_one_line(exc)}") from None
    if not callable(tokenizer) or len(tokenizer) < 2:
        raise ModelError(f"no usable tokenizer in {root} (empty vocabulary)")
    try:
        model = AutoModelForCausalLM.from_pretrained(root, local_files_only=True, dtype=_dtype(dtype))
    except Exception as exc:  # noqa: BLE001
        raise ModelError(f"cannot load a causal LM from {root}: {_one_line(exc)}") from None
    _prepare_tokenizer(tokenizer, model)
    return model.to(dev).eval(), tokenizer


def _prepare_tokenizer(tokenizer, model) -> None:
    if tokenizer.pad_token_id is None:
        if tokenizer.eos_token_id is None:
            raise ModelError("the tokenizer has neither a pad nor an eos token: cannot pad or stop generation")
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    if getattr(model.generation_config, "pad_token_id", None) is None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id


def _one_line(exc: Exception) -> str:
    text = " ".join(str(exc).split())
    return (text[:300] + "...") if len(text) > 300 else text or type(exc).__name__


def format_prompt(tokenizer, prompt: str) -> str:
    """The prompt wrapped in the tokenizer's chat template (as a user turn, generation prompt added), if it has one."""
    if not getattr(tokenizer, "chat_template", None):
        return prompt
    return tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                         add_generation_prompt=True)
