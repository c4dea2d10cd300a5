"""Per-step cost of aspo's logging inside TRL: the same GRPO run with TRL's GRPOTrainer, with AspoGRPOTrainer without
logging (aspo's loss only) and with logging, timed in one process, interleaved and repeated; medians printed.

    .venv/bin/python benchmarks/bench_trl_logging.py [--shape tiny|qwen2.5-0.5b] [--layers N] [--model-dir DIR]
        [--B 16] [--G 4] [--max-new-tokens 32] [--iterations 2] [--minibatches 2] [--steps 4] [--repeats 3]
        [--token-sample default|all|N|0.x] [--new-logp kept|all] [--variants trl,nolog,log]

Shapes: `tiny` (the default: a char-level Qwen2, hidden 128, 4 layers, ~0.6M parameters) or `qwen2.5-0.5b`:
Qwen2.5-0.5B's config (vocabulary 151,936, hidden 896, 24 layers, 14 heads, 2 KV heads, intermediate 4864, tied
embeddings, RoPE theta 1e6, RMSNorm eps 1e-6), random init, saved with save_pretrained and loaded by TRL from
that directory as a user's model would be, with a 151,936-entry tokenizer built here (no hub). `--layers` keeps
that vocabulary and width and changes the depth only (say so when you quote the figures). A random-init model
never samples EOS, so every completion has max_new_tokens tokens; the reward is a hash of the text (varies within
groups, so advantages are not all zero).

End-to-end step times on a shared, loaded machine vary by more than the logging costs, so the logging run is also
instrumented: the training thread's time in aspo's logging code (the pass hook, the step's flush: token rows,
the new_logp forward, metrics, handing the step to the writer) is summed over the timed steps (the first step is
not timed) and set against those steps' wall time: "share" = logging / (step - logging), the cost over the same
run without it. The background writer's time (Parquet encoding and writes, on its own thread, overlapping
training) is printed beside it; the end-to-end line compares whole runs.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import zlib
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_trl_step import exact_sum_reward, save_random_qwen2, save_tiny_model, sum_prompts, trl_step_stats  # noqa: E402

TIMERS: dict[str, float] = {"record": 0.0, "new_logp": 0.0, "flush": 0.0, "writer": 0.0}
QWEN25_05B = dict(vocab_size=151936, hidden_size=896, num_hidden_layers=24, num_attention_heads=14,
                  num_key_value_heads=2, intermediate_size=4864, tie_word_embeddings=True, rms_norm_eps=1e-6,
                  max_position_embeddings=32768, rope_parameters={"rope_type": "default", "rope_theta": 1e6})


def big_vocab_tokenizer(size: int):
    """A tokenizer of `size` single-character tokens: <pad> <bos> <eos> <unk>, digits and '+-*= ', then other
    code points (surrogates skipped); <bos> prepended. Every id decodes to one character."""
    from tokenizers import Tokenizer, decoders, models, processors
    from transformers import PreTrainedTokenizerFast

    special = ("<pad>", "<bos>", "<eos>", "<unk>")
    vocab = {s: i for i, s in enumerate(special)}
    for ch in "0123456789+-*= ":
        vocab.setdefault(ch, len(vocab))
    cp = 0x100
    while len(vocab) < size:
        if not 0xD800 <= cp <= 0xDFFF:
            vocab.setdefault(chr(cp), len(vocab))
        cp += 1
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    tok.decoder = decoders.Fuse()
    tok.post_processor = processors.TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", 1)])
    tok.add_special_tokens(list(special))
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", bos_token="<bos>", eos_token="<eos>",
                                   unk_token="<unk>", padding_side="left")


def save_qwen_shaped_model(path, layers: int | None = None, seed: int = 0) -> str:
    """Qwen2.5-0.5B's shape (optionally `layers` deep), random init, and its tokenizer, saved into `path`."""
    from transformers import Qwen2Config

    tok = big_vocab_tokenizer(QWEN25_05B["vocab_size"])
    shape = {**QWEN25_05B, **({"num_hidden_layers": layers} if layers else {})}
    cfg = Qwen2Config(**shape, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                      pad_token_id=tok.pad_token_id)
    return save_random_qwen2(path, cfg, tok, seed)


def hash_reward(prompts, completions, **_):
    """A reward in {0, .25, .5, .75, 1} from the completion's text: varies within a group of random texts."""
    return [zlib.crc32(c.encode("utf-8", "replace")) % 5 / 4 for c in completions]


def timed_trainer():
    """AspoGRPOTrainer whose logging code paths add their wall time to TIMERS (the writer's on its thread)."""
    from aspo.integrations.trl import AspoGRPOTrainer
    from logs_schema import RunWriter

    def timed(name, fn):
        def wrapper(self, *a, **k):
            t = time.perf_counter()
            try:
                return fn(self, *a, **k)
            finally:
                TIMERS[name] += time.perf_counter() - t
        return wrapper

    if hasattr(RunWriter, "_publish"):  # the step's Parquet parts (this process only: the benchmark's writers)
        RunWriter._publish = timed("writer", RunWriter._publish)

    class Timed(AspoGRPOTrainer):
        _record_pass = timed("record", AspoGRPOTrainer._record_pass)
        _new_logp = timed("new_logp", AspoGRPOTrainer._new_logp)
        _aspo_flush = timed("flush", AspoGRPOTrainer._aspo_flush)

    return Timed


def variants(log_root: Path, token_sample, new_logp) -> dict:
    from aspo.integrations.trl import AspoGRPOTrainer

    counter = iter(range(10 ** 6))
    timed_cls = timed_trainer()
    return {
        "trl": ("trl GRPOTrainer", lambda: {}),
        "nolog": ("aspo loss, no logging", lambda: {"trainer_cls": AspoGRPOTrainer,
                                                    "trainer_kwargs": {"aspo_loss": "grpo"}}),
        "log": ("aspo loss + logging", lambda: {"trainer_cls": timed_cls, "trainer_kwargs": {
            "aspo_loss": "grpo", "aspo_log_dir": log_root / f"run{next(counter)}", "aspo_token_sample": token_sample,
            "aspo_new_logp": new_logp}}),
    }


def token_sample_arg(text: str):
    if text == "default":
        from aspo.integrations.trl import DEFAULT_TOKEN_SAMPLE
        return DEFAULT_TOKEN_SAMPLE
    if text == "all":
        return None
    return float(text) if "." in text else int(text)


def snapshot(marks: list):
    """on_step hook: (time, TIMERS) at the end of every RL step."""
    return lambda: marks.append((time.perf_counter(), dict(TIMERS)))


def load() -> str:
    return Path("/proc/loadavg").read_text().split(" ")[0]


def one_run(name, kw, model_dir, prompts, reward, a) -> dict:
    marks: list = []
    l0 = load()
    s = trl_step_stats(model_dir, prompts, reward, a.B, a.G, a.max_new_tokens, a.iterations, a.steps,
                       minibatches=a.minibatches, on_step=snapshot(marks), **kw())
    out = {"s": s["seconds_per_step"], "load": f"{l0} -> {load()}"}
    if name == "log" and len(marks) >= 2:  # the timed window: from the end of step 1 to the end of the last
        (t0, a0), (t1, a1) = marks[0], marks[-1]
        d = {k: a1[k] - a0[k] for k in TIMERS}
        n = len(marks) - 1
        log = d["record"] + d["flush"]
        out.update(log=log / n, record=d["record"] / n, new_logp=d["new_logp"] / n, writer=d["writer"] / n,
                   rest=(d["flush"] - d["new_logp"]) / n, step=(t1 - t0) / n, share=log / (t1 - t0 - log))
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--shape", choices=("tiny", "qwen2.5-0.5b"), default="tiny")
    ap.add_argument("--layers", type=int, default=None, help="qwen2.5-0.5b: depth (default its 24)")
    ap.add_argument("--model-dir")
    ap.add_argument("--B", type=int, default=16)
    ap.add_argument("--G", type=int, default=4)
    ap.add_argument("--max-new-tokens", type=int, default=32)
    ap.add_argument("--iterations", type=int, default=2)
    ap.add_argument("--minibatches", type=int, default=2)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--token-sample", type=token_sample_arg, default="default",
                    help="responses per step (N) or share (0.x) whose token rows are kept; all; default: the "
                         "plug-in's default (aspo.integrations.trl.DEFAULT_TOKEN_SAMPLE)")
    ap.add_argument("--new-logp", choices=("kept", "all"), default="kept", help="the new_logp forward's responses")
    ap.add_argument("--variants", default="trl,nolog,log")
    a = ap.parse_args(argv)
    if a.model_dir:
        model_dir = a.model_dir
    elif a.shape == "tiny":
        model_dir = save_tiny_model(tempfile.mkdtemp(prefix="tiny_qwen2_"))
    else:
        model_dir = save_qwen_shaped_model(tempfile.mkdtemp(prefix="qwen25_05b_shape_"), a.layers)
    prompts, reward = sum_prompts(a.B * a.steps), (exact_sum_reward if a.shape == "tiny" else hash_reward)
    runs = variants(Path(tempfile.mkdtemp(prefix="aspo_trl_logs_")), a.token_sample, a.new_logp)
    chosen = [v for v in a.variants.split(",") if v]
    results = {v: [] for v in chosen}
    print(f"shape {a.shape}{f' ({a.layers} layers)' if a.layers else ''} B={a.B} G={a.G} "
          f"max_new_tokens={a.max_new_tokens} iterations={a.iterations} minibatches={a.minibatches} steps={a.steps} "
          f"(first untimed) repeats={a.repeats} token_sample={'all' if a.token_sample is None else a.token_sample} "
          f"new_logp={a.new_logp}",
          flush=True)
    for _ in range(a.repeats):
        for v in chosen:  # interleaved: drift of the machine hits every variant alike
            r = one_run(v, runs[v][1], model_dir, prompts, reward, a)
            results[v].append(r)
            extra = ""
            if "share" in r:
                extra = (f"; in-run: logging {r['log'] * 1000:.0f} ms/step = pass hook {r['record'] * 1000:.0f} + "
                         f"new_logp forward {r['new_logp'] * 1000:.0f} + rows/metrics/hand-over "
                         f"{r['rest'] * 1000:.0f} of a {r['step']:.2f} s step -> {r['share']:+.1%}; background "
                         f"writer {r['writer'] * 1000:.0f} ms/step (overlapped)")
            print(f"  {runs[v][0]:24s} {r['s']:.3f} s/step (load {r['load']}){extra}", flush=True)
    for v in chosen:
        ts = [r["s"] for r in results[v]]
        runs_txt = ", ".join(f"{t:.3f}" for t in ts)
        print(f"  median {runs[v][0]:24s} {statistics.median(ts):.3f} s/step (runs {runs_txt})")
    if "log" in results and results["log"] and "share" in results["log"][0]:
        shares = [r["share"] for r in results["log"]]
        print(f"  logging share (in-run): median {statistics.median(shares):+.1%} "
              f"(runs {', '.join(f'{s:+.1%}' for s in shares)})")
    if "log" in results and "nolog" in results:
        base = statistics.median(r["s"] for r in results["nolog"])
        over = statistics.median(r["s"] for r in results["log"]) - base
        print(f"  end to end: logging run - no-logging run = {over * 1000:+.0f} ms/step ({over / base:+.1%}; "
              "noise on a loaded machine can exceed this)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
