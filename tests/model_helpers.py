"""A tiny causal LM saved to disk, as a user's `--model PATH` (or a TRL/verl run's model) would be."""
from __future__ import annotations

import torch
from transformers import Qwen2Config, Qwen2ForCausalLM

from aspo.model import build_tokenizer

ALPHABET = "0123456789+= ab"


def save_tiny_model(path) -> str:
    """A 2-layer Qwen2 (~20k parameters) and a char-level tokenizer, save_pretrained'ed into `path`."""
    tok = build_tokenizer(ALPHABET)  # aspo's char-level tokenizer: the same one the trainer builds
    tok.padding_side = "left"
    cfg = Qwen2Config(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                      num_key_value_heads=1, intermediate_size=64, max_position_embeddings=128,
                      tie_word_embeddings=True, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                      pad_token_id=tok.pad_token_id)
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(cfg)
    model.generation_config.pad_token_id, model.generation_config.eos_token_id = tok.pad_token_id, tok.eos_token_id
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return str(path)
