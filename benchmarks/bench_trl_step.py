"""One GRPO RL step with TRL's GRPOTrainer on CPU: generation of G completions for each of B prompts, then the
optimizer updates that reuse them (mini-batches x num_iterations). Needs `trl` (the optional extra).

    .venv/bin/python benchmarks/bench_trl_step.py [--model-dir DIR] [--B 16] [--G 4] [--max-new-tokens 32]
                                                  [--iterations 2] [--minibatches 1] [--steps 4]

Without --model-dir a tiny char-level Qwen2 (hidden 128, 4 layers, ~0.6M parameters: aspo's "tiny" shape) is
built and saved into a temporary directory. Other benchmarks import `trl_step_seconds` to time TRL on their own
model directory and batch shape and print their ratio to it.

Timing: seconds per RL step = wall time between the end of the first RL step (warm-up: allocations, first
generation) and the end of the last, divided by steps - 1. tokens/s = generated completion tokens per second of
step time. Gradient checkpointing is off (TRL's default turns it on; aspo's trainer does not checkpoint).
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

ALPHABET = "0123456789+-*= "


def save_tiny_model(path, hidden: int = 128, layers: int = 4, seed: int = 0) -> str:
    """A char-level tokenizer and a random Qwen2, save_pretrained'ed into `path` (no hub access)."""
    from transformers import Qwen2Config

    from aspo.model import build_tokenizer

    tok = build_tokenizer(ALPHABET)  # aspo's char-level tokenizer: the same one the trainer builds
    tok.padding_side = "left"
    cfg = Qwen2Config(vocab_size=len(tok), hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=4,
                      num_key_value_heads=2, intermediate_size=2 * hidden, max_position_embeddings=1024,
                      tie_word_embeddings=True, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                      pad_token_id=tok.pad_token_id)
    return save_random_qwen2(path, cfg, tok, seed)


def save_random_qwen2(path, cfg, tok, seed: int = 0) -> str:
    """A random-init Qwen2 of config `cfg` and its tokenizer, save_pretrained'ed into `path` as a user's model is."""
    import torch
    from transformers import Qwen2ForCausalLM

    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(cfg)
    model.generation_config.pad_token_id, model.generation_config.eos_token_id = tok.pad_token_id, tok.eos_token_id
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return str(path)


def sum_prompts(n: int) -> list[str]:
    return [f"{10 + i % 90}+{(7 * i) % 90 + 10}=" for i in range(n)]


def exact_sum_reward(prompts, completions, **_):
    """1 when the completion starts with the sum of the prompt's a+b, else 0."""
    out = []
    for p, c in zip(prompts, completions):
        a, b = p.rstrip("=").split("+")
        out.append(1.0 if c.strip().startswith(str(int(a) + int(b))) else 0.0)
    return out


class _Counter:
    """Wraps a reward function: counts generated completion tokens (TRL passes completion_ids)."""

    def __init__(self, fn):
        self.fn, self.tokens, self.__name__ = fn, 0, getattr(fn, "__name__", "reward")

    def __call__(self, prompts, completions, completion_ids=None, **kw):
        self.tokens += sum(len(c) for c in completion_ids or [])
        return self.fn(prompts=prompts, completions=completions, completion_ids=completion_ids, **kw)


def _clock(boundary: int, on_step=None):
    from transformers import TrainerCallback

    class Clock(TrainerCallback):
        """Time stamp at the end of every RL step (every `boundary` optimizer steps)."""

        def __init__(self):
            self.marks = []

        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step % boundary == 0:
                self.marks.append(time.perf_counter())
                if on_step:
                    on_step()

    return Clock()


def trl_step_stats(model_dir, prompts, reward_fn, B: int, G: int, max_new_tokens: int, iterations: int,
                   steps: int, *, minibatches: int = 1, lr: float = 1e-3, seed: int = 0, trainer_cls=None,
                   trainer_kwargs: dict | None = None, out_dir=None, beta: float = 0.0, temperature: float = 1.0,
                   on_step=None) -> dict:
    """Run `steps` RL steps of B prompts x G completions and return seconds_per_step, tokens_per_s, steps and
    the warm-up step's seconds. trainer_cls/trainer_kwargs: a GRPOTrainer subclass and its extra arguments;
    beta: TRL's KL coefficient (> 0 loads a reference model); on_step(): called at the end of every RL step."""
    import datasets
    from trl import GRPOConfig, GRPOTrainer

    if (B * G) % minibatches:
        raise ValueError(f"B*G={B * G} must be divisible by minibatches={minibatches}")
    per_update = minibatches * iterations  # optimizer steps per RL step
    out_dir = out_dir or tempfile.mkdtemp(prefix="bench_trl_")
    args = GRPOConfig(output_dir=str(out_dir), per_device_train_batch_size=B * G // minibatches,
                      steps_per_generation=minibatches, num_generations=G, num_iterations=iterations,
                      max_completion_length=max_new_tokens, max_steps=steps * per_update, learning_rate=lr,
                      temperature=temperature, beta=beta, report_to="none", logging_steps=10 ** 6,
                      save_strategy="no", use_cpu=True, bf16=False, seed=seed, gradient_checkpointing=False,
                      disable_tqdm=True, shuffle_dataset=False)
    counter, clock = _Counter(reward_fn), _clock(per_update, on_step)
    data = datasets.Dataset.from_dict({"prompt": list(prompts)})
    trainer = (trainer_cls or GRPOTrainer)(model=str(model_dir), reward_funcs=counter, args=args,
                                           train_dataset=data, callbacks=[clock], **(trainer_kwargs or {}))
    start = time.perf_counter()
    trainer.train()
    marks = [start] + clock.marks
    timed = marks[-1] - marks[1] if len(marks) > 2 else marks[-1] - marks[0]
    n = max(len(marks) - 2, 1)
    return {"seconds_per_step": timed / n, "tokens_per_s": counter.tokens / (marks[-1] - marks[0]),
            "warmup_step_s": marks[1] - marks[0], "steps": len(marks) - 1, "generated_tokens": counter.tokens}


def trl_step_seconds(model_dir, prompts, reward_fn, B: int, G: int, max_new_tokens: int, iterations: int,
                     steps: int, **kwargs) -> float:
    """Seconds per RL step of TRL's GRPOTrainer on this model and batch shape (see `trl_step_stats`).

    model_dir: a local Hugging Face model directory with its tokenizer (save_pretrained of both); prompts: at
    least B * steps prompt strings (taken in order, B per step); reward_fn(prompts, completions, **kwargs) ->
    list[float], TRL's reward-function signature (completions are decoded texts); iterations: PPO epochs over
    each rollout batch (TRL num_iterations); steps: RL steps run, the first one untimed (warm-up);
    minibatches=k (keyword): optimizer steps per epoch, as aspo's trainer's mini-batches."""
    return trl_step_stats(model_dir, prompts, reward_fn, B, G, max_new_tokens, iterations, steps,
                          **kwargs)["seconds_per_step"]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model-dir", help="local Hugging Face model directory (default: a tiny Qwen2, built)")
    ap.add_argument("--B", type=int, default=16, help="prompts per RL step")
    ap.add_argument("--G", type=int, default=4, help="completions per prompt")
    ap.add_argument("--max-new-tokens", type=int, default=32)
    ap.add_argument("--iterations", type=int, default=2, help="TRL num_iterations (PPO epochs)")
    ap.add_argument("--minibatches", type=int, default=1, help="optimizer steps per epoch (steps_per_generation)")
    ap.add_argument("--steps", type=int, default=4, help="RL steps; the first is warm-up and not timed")
    a = ap.parse_args(argv)
    import torch
    model_dir = a.model_dir or save_tiny_model(tempfile.mkdtemp(prefix="tiny_qwen2_"))
    s = trl_step_stats(model_dir, sum_prompts(max(a.B * a.steps, a.B)), exact_sum_reward, a.B, a.G,
                       a.max_new_tokens, a.iterations, a.steps, minibatches=a.minibatches)
    print(f"TRL GRPOTrainer (trl {__import__('trl').__version__}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads): B={a.B} G={a.G} max_new_tokens={a.max_new_tokens} "
          f"iterations={a.iterations} minibatches={a.minibatches}")
    print(f"  {s['seconds_per_step']:.3f} s/step  {s['tokens_per_s']:.0f} generated tokens/s  "
          f"(warm-up step {s['warmup_step_s']:.2f} s, {s['steps']} steps)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
