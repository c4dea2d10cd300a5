"""The GPU path, checked on CPU: --dtype (validation, bf16 autocast vs fp32 on the same batch), the decode loop's
late host check, the device sampler's checkpoint state, and benchmarks/bench_gpu.py at its tiny shape.
The tests marked cuda run where a GPU is (docs/gpu.md's device recipe)."""
from __future__ import annotations

import dataclasses
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from aspo import checkpoint, trainer
from aspo.advantages import group_advantages
from aspo.config import ConfigError, make_config, validate
from aspo.logbook import StepLog
from aspo.losses import LOSSES
from aspo.model import build_small_model, build_tokenizer
from aspo.rollout import generate, token_logp_entropy
from aspo.tasks import get_task

ROOT = Path(__file__).resolve().parents[1]
PROMPTS = ["1+2=", "34+5=", "7=", "12+34+5=", "9+9=", "0+0="] * 4
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """A random-init tiny Qwen2 with the math task's tokenizer, as a local model directory (no warm-up)."""
    path = tmp_path_factory.mktemp("model") / "tiny"
    tok = build_tokenizer(get_task("math").alphabet)
    build_small_model(tok, "tiny", seed=0).save_pretrained(path)
    tok.save_pretrained(path)
    return path


def make_run(tmp_path, model_dir, name, **kw):
    cfg = make_config("tiny", out=str(tmp_path / name), model=str(model_dir), progress=False, eval_every=0,
                      task_args="digits=1,n_train=80,n_heldout=20", max_new_tokens=10, **kw)
    return trainer.setup(cfg, log=lambda m: None)


# ----------------------------------------------------------------------------------------------- the option
@pytest.mark.parametrize("kw, needle", [
    (dict(dtype="fp64"), "unknown --dtype 'fp64': choose one of fp32, bf16, fp16"),
    (dict(micro_batch_seqs=-1), "--micro-batch-seqs must be >= 0"),
])
def test_bad_dtype_and_micro_batch_are_config_errors(kw, needle):
    with pytest.raises(ConfigError, match=needle.replace("(", r"\(")):
        validate(make_config("tiny", **kw), LOSSES)


@pytest.mark.parametrize("args, needle", [
    (["--dtype", "fp64"], "unknown --dtype 'fp64'"),
    (["--dtype", "fp16", "--device", "cpu"], "--dtype fp16 needs a CUDA device"),
    (["--micro-batch-seqs", "-2"], "--micro-batch-seqs must be >= 0"),
])
def test_cli_dtype_errors_are_one_line_exit_2(args, needle, tmp_path, capsys):
    from aspo.cli import main
    code = main(["train", "--preset", "tiny", "--out", str(tmp_path / "r"), "--no-progress"] + args)
    err = capsys.readouterr().err.strip()
    assert code == 2 and needle in err and len(err.splitlines()) == 1 and "Traceback" not in err
    assert not (tmp_path / "r").exists()  # refused before the run directory is made


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only refusal")
def test_fp16_with_device_auto_and_no_cuda_is_refused(tmp_path, model_dir):
    with pytest.raises(ConfigError, match="needs a CUDA device"):
        make_run(tmp_path, model_dir, "r", dtype="fp16")


# ----------------------------------------------------------------------------------------------- bf16 vs fp32
def _updates(run, batch):
    """The step's updates and the new_logp forward on `batch`, mini-batch order seeded alike for every run."""
    run.generator.manual_seed(1234)
    log = StepLog(run.tokenizer)
    trainer.update_policy(run, batch, log)
    new_logp, _ = trainer.forward_all(run, run.model, batch.input_ids, batch.attention_mask,
                                      batch.completion_ids.shape[1])
    return log.token_columns(batch, new_logp)


TWO_TRAININGS = pytest.mark.slow  # fp32_bf16 trains one batch twice (~15 s): in make test, not make check


@pytest.fixture(scope="module")
def fp32_bf16(tmp_path_factory, model_dir):
    """One rollout batch (fp32 sampler) trained from the same start weights in fp32 and in bf16 autocast."""
    tmp = tmp_path_factory.mktemp("dtype")
    run32 = make_run(tmp, model_dir, "fp32", algo="aspo")
    batch = trainer.collect_rollouts(run32, 0)
    rewards = torch.tensor([float(i % 3 == 0) for i in range(len(batch.texts))])  # both signs in every group
    batch = dataclasses.replace(batch, rewards=rewards, advantages=group_advantages(rewards, run32.cfg.group_size))
    run16 = make_run(tmp, model_dir, "bf16", algo="aspo", dtype="bf16")
    T = batch.completion_ids.shape[1]
    old16, ent16 = trainer.forward_all(run16, run16.model, batch.input_ids, batch.attention_mask, T)
    ref16 = trainer.forward_all(run16, run16.ref_model, batch.input_ids, batch.attention_mask, T)[0]
    batch16 = dataclasses.replace(batch, old_logp=old16, old_entropy=ent16, ref_logp=ref16)
    return run32, _updates(run32, batch), run16, _updates(run16, batch16), batch


@TWO_TRAININGS
def test_bf16_logs_the_same_rows_within_bf16_tolerance(fp32_bf16):
    _, a, run16, b, batch = fp32_bf16
    for key in ("epoch", "minibatch", "sample", "position", "token_id", "advantage"):
        np.testing.assert_array_equal(a[key], b[key])
    for key in ("logp", "old_logp", "new_logp", "ratio", "weight", "entropy"):
        assert b[key].dtype == np.float32, key
    assert np.abs(a["logp"] - b["logp"]).max() > 0  # the bf16 forwards really ran in bf16
    # bf16 keeps 8 bits of mantissa: logits off by ~0.4% of their size (measured here: log-probs within 0.006,
    # ratios and weights within 0.7%, after 4 updates that move ratios by up to 2x)
    for key in ("old_logp", "logp", "new_logp"):
        np.testing.assert_allclose(b[key], a[key], atol=0.02, err_msg=key)
    np.testing.assert_allclose(b["ratio"], a["ratio"], rtol=0.02)
    same_branch = (a["clipped"] == b["clipped"]) & (a["dual_clipped"] == b["dual_clipped"])
    assert same_branch.mean() > 0.97  # only tokens within bf16 noise of a clip edge may switch branch
    np.testing.assert_allclose(b["weight"][same_branch], a["weight"][same_branch], rtol=0.02, atol=1e-6)
    first = (b["epoch"] == 0) & (b["minibatch"] == 0)
    np.testing.assert_allclose(b["ratio"][first], 1.0, atol=0.02)  # on-policy up to bf16 rounding


@TWO_TRAININGS
def test_bf16_ratio_and_weight_are_float32_maths_of_the_logged_logps(fp32_bf16):
    """The loss runs outside autocast: the logged weight is the loss's float32 value for the logged logp/old_logp."""
    *_, b, _ = fp32_bf16
    logp, old = torch.from_numpy(b["logp"]), torch.from_numpy(b["old_logp"])
    adv = torch.from_numpy(b["advantage"])
    np.testing.assert_allclose(b["ratio"], torch.exp(logp - old).numpy(), rtol=1e-6)
    out = LOSSES["aspo"](logp, old, adv, torch.ones_like(logp), **trainer.loss_kwargs(fp32_bf16[2].cfg))
    np.testing.assert_array_equal(b["weight"], out.weight.numpy())
    free = (b["advantage"] > 0) & ~b["clipped"] & ~b["dual_clipped"]
    assert free.any()
    np.testing.assert_allclose(b["weight"][free], 1 / b["ratio"][free], rtol=1e-5)  # ASPO's 1/r, as on fp32


@TWO_TRAININGS
def test_runtime_choices_are_recorded_with_the_config(fp32_bf16):
    run32, _, run16, _, _ = fp32_bf16
    for run, dtype in ((run32, "fp32"), (run16, "bf16")):
        record = json.loads((run.run_dir / "config.json").read_text())
        assert record["dtype"] == dtype and record["micro_batch_seqs"] == 0
        assert record["runtime"]["device"] == "cpu" and record["runtime"]["tf32"] is False  # never on CPU
        assert record["runtime"]["micro_batch_tokens"] is None  # CPU: 64 sequences per forward
    assert run16.amp is torch.bfloat16 and run32.amp is None


def test_bf16_rollout_logp_matches_its_scoring_forward(model_dir):
    tok = build_tokenizer(get_task("math").alphabet)
    model = build_small_model(tok, "tiny", seed=0)
    ro = generate(model, tok, PROMPTS, 10, 1.0, torch.Generator().manual_seed(0), autocast=torch.bfloat16)
    logp, entropy = token_logp_entropy(model, ro.input_ids, ro.attention_mask, ro.completion_ids.shape[1],
                                       autocast=torch.bfloat16)
    m = ro.completion_mask.bool()
    assert ro.logp.dtype == logp.dtype == entropy.dtype == torch.float32
    assert (logp[m] - ro.logp[m]).abs().max() < 0.05  # cached decode vs one full forward, both in bf16


# ----------------------------------------------------------------------------------------------- decode loop
@pytest.fixture(scope="module")
def tiny():
    tok = build_tokenizer("0123456789+=")
    return build_small_model(tok, "tiny", seed=0), tok


# n=60: all stop at step 37 (the long one, 60 tokens x 3 checks: make test only); n=12: 4 of 8 truncated
@pytest.mark.parametrize("n, seed", [pytest.param(60, 2, marks=pytest.mark.slow), (12, 1)])
def test_late_host_check_changes_nothing(tiny, n, seed):
    """Checking 'all stopped' every k tokens gives the same rollout and leaves the generator where k=1 does."""
    model, tok = tiny
    results = []
    for k in (1, 3, 8):  # with n=60: k=3 and k=8 run 2 and 3 steps past the last EOS, which are cut
        gen = torch.Generator().manual_seed(seed)
        ro = generate(model, tok, PROMPTS[:6] + ["5+5=", "3="], n, 1.0, gen, sync_every=k)
        results.append((ro, gen.get_state(), torch.rand(3, generator=gen)))
    ref, ref_state, ref_next = results[0]
    for ro, state, nxt in results[1:]:
        for field in ("input_ids", "attention_mask", "completion_ids", "completion_mask", "truncated", "logp"):
            assert torch.equal(getattr(ro, field), getattr(ref, field)), field
        assert ro.texts == ref.texts and torch.equal(state, ref_state) and torch.equal(nxt, ref_next)
    if n == 60:
        assert ref.completion_ids.shape[1] == 37 and ref.completion_mask[:, -1].any()  # cut at the last EOS
        assert not ref.truncated.any()
    else:
        assert ref.truncated.any() and ref.completion_ids.shape[1] == 12


def test_device_sampler_state_is_checkpointed_apart():
    """A CUDA run's rollout generator is not the CPU one: both states go in the checkpoint and come back."""
    gen, sampler = torch.Generator().manual_seed(1), torch.Generator().manual_seed(2)
    state = checkpoint.rng_state(gen, sampler)
    want = (torch.rand(4, generator=gen), torch.rand(4, generator=sampler))
    checkpoint.restore_rng(state, gen, sampler)
    assert torch.equal(torch.rand(4, generator=gen), want[0]) and torch.equal(torch.rand(4, generator=sampler), want[1])
    assert "device_sampler" not in checkpoint.rng_state(gen, gen)  # CPU runs: one generator, as before


# ----------------------------------------------------------------------------------------------- the benchmark
def test_bench_gpu_runs_one_small_step(capsys):
    spec = importlib.util.spec_from_file_location("bench_gpu", ROOT / "benchmarks" / "bench_gpu.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    assert bench.main(["--small", "--steps", "1", "--device", "cpu", "--dtype", "bf16"]) == 0
    out = capsys.readouterr().out
    assert "dtype bf16 | tf32 off" in out and "generate" in out and "parquet" in out
    row = next(line for line in out.splitlines() if line.split()[:1] == ["0"]).split()
    phases = [float(x) for x in row[1:10]]
    assert all(x >= 0 for x in phases) and phases[-1] > 0  # total
    assert row[-1] == f"{4 * 2 * 8 * 2:,d}"  # 4 prompts x 2 samples x 8 tokens (no EOS) x 2 epochs: every row


# ----------------------------------------------------------------------------------------------- on a GPU
@pytest.fixture
def keep_tf32():
    """setup() turns TF32 on process-wide; later CUDA tests compare against CPU at fp32 tolerances."""
    before = torch.backends.cuda.matmul.fp32_precision, torch.backends.cudnn.conv.fp32_precision
    yield
    torch.backends.cuda.matmul.fp32_precision, torch.backends.cudnn.conv.fp32_precision = before


@cuda
@pytest.mark.parametrize("dtype", ["fp32", "bf16", "fp16"])
def test_cuda_trains_a_step_in_each_dtype(tmp_path, model_dir, dtype, keep_tf32):
    run = make_run(tmp_path, model_dir, dtype, device="cuda", dtype=dtype)
    assert run.sampler.device.type == "cuda"
    m = trainer.train_step(run, 0)
    assert np.isfinite(m["loss"]) and m["seconds"] > 0
    record = json.loads((run.run_dir / "config.json").read_text())["runtime"]
    assert record["tf32"] is True and record["micro_batch_tokens"]["train"] >= 1
