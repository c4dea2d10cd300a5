"""Where and in what precision the trainer computes: dtype/autocast, TF32, device generators, micro-batch sizes.

Design of `--dtype bf16` (and fp16, CUDA only): autocast around the model forwards, weights stay float32.
 - AdamW updates a float32 master copy. With bf16 weights an update of lr=1e-6 (the paper's) relative to a weight
   of ~0.02 is ~5e-5, far below bf16's resolution (2^-8 ~ 4e-3): most updates would round to nothing.
 - Autocast runs the matmuls in bf16 and keeps reductions (norms, softmax) in float32; `rollout.py` casts the
   logits to float32 before log-softmax, so logp, entropy, ratio, weight and the loss are float32 maths on
   bf16-rounded logits: the same formulas as an fp32 run, within bf16 tolerance of its values.
 - The frozen reference model stays float32 under the same autocast, so at step 0 its logps equal the policy's.
TF32: where float32 matmuls remain on CUDA (all of an fp32 run), TF32 is on unless --no-tf32; never on CPU.
"""
from __future__ import annotations

import time
from collections import defaultdict
from contextlib import contextmanager, nullcontext

import torch

from aspo.config import ConfigError

DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
CPU_MICRO_BATCH = 64  # sequences per forward on CPU: what the trainer always used there
TOKEN_CAP = 1 << 20   # never more tokens than this in one forward, whatever the memory says


def autocast_dtype(cfg, device: torch.device) -> torch.dtype | None:
    """The dtype of the forwards' autocast (None: plain float32). Refuses combinations that cannot work."""
    dtype = DTYPES[cfg.dtype]
    if dtype is torch.float16 and device.type != "cuda":
        raise ConfigError("--dtype fp16 needs a CUDA device (its loss scaling is CUDA's): use --dtype bf16 or fp32")
    if dtype is torch.bfloat16 and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ConfigError("this GPU has no bf16 support: use --dtype fp16 or fp32")
    return dtype


def autocast(device: torch.device, dtype: torch.dtype | None):
    """Context for a model forward: autocast to `dtype`, or nothing for float32."""
    return torch.autocast(device.type, dtype=dtype) if dtype is not None else nullcontext()


def set_tf32(device: torch.device, enabled: bool) -> bool:
    """TF32 matmuls/convolutions for the float32 work left on CUDA. Returns whether TF32 is now on."""
    if device.type != "cuda":
        return False
    mode = "tf32" if enabled else "ieee"
    if hasattr(torch.backends.cuda.matmul, "fp32_precision"):  # torch >= 2.9; mixing with allow_tf32 is an error
        torch.backends.cuda.matmul.fp32_precision = mode
        torch.backends.cudnn.conv.fp32_precision = mode
    else:
        torch.backends.cuda.matmul.allow_tf32 = enabled
        torch.backends.cudnn.allow_tf32 = enabled
    return enabled


def grad_scaler(device: torch.device, dtype: torch.dtype | None):
    """fp16 gradients need loss scaling; for fp32 and bf16 the scaler is a pass-through."""
    return torch.amp.GradScaler(device.type, enabled=dtype is torch.float16)


def sampler_generator(device: torch.device, seed: int, cpu_generator: torch.Generator) -> torch.Generator:
    """The generator the rollouts draw from. On CUDA its own, on the device: no host draw or copy per token.
    On CPU the run's one generator, as always, so a CPU run samples exactly the tokens it sampled before."""
    if device.type == "cpu":
        return cpu_generator
    return torch.Generator(device=device).manual_seed(seed)


# ----------------------------------------------------------------------------------------------- micro-batches
def token_budgets(model, device: torch.device, dtype: torch.dtype | None) -> dict | None:
    """Tokens per micro-batch for training (forward+backward) and scoring (no grad), from the card's memory.

    None on CPU (a fixed number of sequences there). A rough model of the bytes per token: the activations
    kept for backward (about 12 hidden + 4 MLP-width values per layer) and the float32 log-softmax over the
    vocabulary (a few copies). Micro-batching never changes the gradient, so an estimate only moves speed.
    """
    if device.type != "cuda":
        return None
    c = model.config
    hidden, layers = c.hidden_size, c.num_hidden_layers
    inter, vocab = getattr(c, "intermediate_size", 4 * hidden), c.vocab_size
    act = 2 if dtype is not None else 4
    params = sum(p.numel() for p in model.parameters()) * 4
    free = torch.cuda.get_device_properties(device).total_memory - 5 * params  # weights, grads, AdamW, reference
    budget = max(free, 0) * 0.4
    train = layers * (12 * hidden + 4 * inter) * act + vocab * 16
    score = (8 * hidden + 3 * inter) * act + vocab * 16
    return {"train": int(min(TOKEN_CAP, max(budget // train, 1))),
            "score": int(min(TOKEN_CAP, max(budget // score, 1)))}


def micro_batch(cfg, budgets: dict | None, kind: str, seq_len: int) -> int:
    """Sequences per forward: --micro-batch-seqs if set, else 64 on CPU, else the token budget / seq_len."""
    if cfg.micro_batch_seqs > 0:
        return cfg.micro_batch_seqs
    if budgets is None:
        return CPU_MICRO_BATCH
    return max(1, budgets[kind] // max(seq_len, 1))


def runtime_record(device: torch.device, tf32: bool, budgets: dict | None) -> dict:
    """What the config alone does not say: the resolved device and precision choices (kept with the config)."""
    import transformers  # noqa: PLC0415  (only for its version)
    return {"device": str(device), "tf32": tf32, "micro_batch_tokens": budgets, "torch": torch.__version__,
            "transformers": transformers.__version__,
            "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None}


# ----------------------------------------------------------------------------------------------- timing
def no_clock(name: str):
    return nullcontext()


class PhaseClock:
    """Wall seconds per named phase of a step (benchmarks); synchronises CUDA at each boundary so a phase's
    queued kernels are charged to it, not to the next one."""

    def __init__(self, device: torch.device):
        self.device = device
        self.seconds: dict[str, float] = defaultdict(float)

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    @contextmanager
    def __call__(self, name: str):
        self._sync()
        start = time.perf_counter()
        try:
            yield
        finally:
            self._sync()
            self.seconds[name] += time.perf_counter() - start

    def take(self) -> dict[str, float]:
        out, self.seconds = dict(self.seconds), defaultdict(float)
        return out
