"""aspo.warmup: supervised warm-up on noisy demos lifts accuracy from chance; the cache is atomic and reused."""
from __future__ import annotations

import json
import random
import time
from dataclasses import dataclass

import pytest
import torch

from aspo.model import build_small_model, build_tokenizer
from aspo.tasks import Problem
from aspo.warmup import accuracy, make_batch, warmup, warmup_cache_key


@dataclass
class ToyAddition:
    """1-digit a+b: the same interface as aspo.tasks, without importing it."""

    noise: float = 0.0
    name = "toy-add"
    alphabet = "0123456789+="
    max_new_tokens = 3

    def options(self) -> dict:
        return {"noise": self.noise}

    def splits(self, seed: int):
        problems = [Problem(f"{a}+{b}", f"{a}+{b}=", str(a + b)) for a in range(10) for b in range(10)]
        random.Random(seed).shuffle(problems)
        return problems[20:], problems[:20]

    def rewards(self, problems, completions):
        return [float(c.strip() == p.answer) for p, c in zip(problems, completions)]

    def demo_solution(self, problem, rng: random.Random) -> str:
        if rng.random() < self.noise:
            return str(int(problem.answer) + rng.choice((-1, 1)))
        return problem.answer


# A step budget, not a time budget: the outcome must not depend on how busy the machine is.
SETTINGS = dict(seconds=None, max_steps=400, batch_size=32, lr=3e-3, seed=0, target_accuracy=0.5, eval_every=25,
                eval_problems=20, eval_temperature=0.0)


@pytest.fixture(scope="module")
def tok():
    return build_tokenizer(ToyAddition.alphabet)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """These models are too small to gain from intra-op threads, and 2 OpenMP threads on a busy 2-core machine
    can run 10x slower than one; restore the caller's setting afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def fresh(tok, seed=0):
    return build_small_model(tok, "tiny", seed=seed)


def test_batch_masks_the_prompt_and_keeps_eos(tok):
    ids, mask, labels = make_batch(tok, [("1+2=", "3"), ("9+9=", "18")], "cpu")
    assert ids.shape == (2, 8)  # bos + 4 prompt chars + up to 2 answer chars + eos
    assert labels[0].tolist() == [-100] * 5 + [tok.convert_tokens_to_ids("3"), tok.eos_token_id, -100]
    assert mask[0].tolist() == [1] * 7 + [0]
    assert labels[1, 5:].tolist() == tok.convert_tokens_to_ids(["1", "8"]) + [tok.eos_token_id]


@pytest.mark.slow  # a warm-up of its own (~8 s)
def test_warmup_learns_and_the_cache_is_reused(tok, tmp_path):
    task = ToyAddition()
    _, heldout = task.splits(0)
    model = fresh(tok)
    before = accuracy(model, tok, task, heldout, 0.0, 0)
    rng_state = torch.get_rng_state()
    logs: list[str] = []
    seen: list[dict] = []  # the progress the demo's dashboard shows while this runs
    started = time.perf_counter()
    model = warmup(model, tok, task, cache_dir=tmp_path, log=logs.append, progress=lambda **f: seen.append(f),
                   **SETTINGS)
    trained_s = time.perf_counter() - started
    after = accuracy(model, tok, task, heldout, 0.0, 0)
    assert before <= 0.15 and after >= 0.5, (before, after, logs)
    assert torch.equal(torch.get_rng_state(), rng_state)  # warm-up draws from its own RNG stream

    entries = [p for p in tmp_path.iterdir()]
    assert len(entries) == 1 and not entries[0].name.startswith(".")  # no temp dir left behind
    info = json.loads((entries[0] / "warmup.json").read_text())
    assert info["accuracy"] >= 0.5 and info["steps"] <= SETTINGS["max_steps"] and info["seconds"] > 0
    assert info["settings"]["lr"] == SETTINGS["lr"] and info["task"] == "toy-add"
    assert entries[0].name == warmup_cache_key(fresh(tok), tok, task, **{k: v for k, v in SETTINGS.items()})

    running, done = seen[:-1], seen[-1]
    assert [f["step"] for f in running] == list(range(1, info["steps"] + 1))  # every training step
    assert all(f["state"] == "running" and f["loss"] > 0 and f["max_steps"] == SETTINGS["max_steps"] for f in running)
    assert running[0]["accuracy"] is None and running[-1]["accuracy"] == info["accuracy"]  # held-out checks
    assert done == {**done, "state": "done", "step": info["steps"], "accuracy": info["accuracy"], "cached": False}

    logs.clear()
    seen.clear()
    started = time.perf_counter()
    again = warmup(fresh(tok), tok, task, cache_dir=tmp_path, log=logs.append, progress=lambda **f: seen.append(f),
                   **SETTINGS)
    cached_s = time.perf_counter() - started
    assert any("from cache" in line for line in logs)
    assert seen == [{**seen[0], "state": "done", "step": info["steps"], "accuracy": info["accuracy"], "cached": True}]
    assert cached_s < max(2.0, trained_s / 3)
    for (name, a), (_, b) in zip(model.state_dict().items(), again.state_dict().items()):
        assert torch.equal(a, b), name


def test_cache_key_depends_on_every_input(tok):
    task = ToyAddition()
    model = fresh(tok)
    base = warmup_cache_key(model, tok, task, **SETTINGS)
    assert base == warmup_cache_key(fresh(tok), tok, task, **SETTINGS)
    assert base != warmup_cache_key(model, tok, ToyAddition(noise=0.3), **SETTINGS)
    assert base != warmup_cache_key(model, tok, task, **{**SETTINGS, "lr": 1e-3})
    assert base != warmup_cache_key(model, tok, task, **{**SETTINGS, "seconds": 30.0})
    assert base != warmup_cache_key(fresh(tok, seed=1), tok, task, **SETTINGS)
    assert base != warmup_cache_key(build_small_model(tok, "small", seed=0), tok, task, **SETTINGS)
    assert base != warmup_cache_key(model, build_tokenizer(ToyAddition.alphabet + "-"), task, **SETTINGS)


def test_a_failed_store_leaves_no_cache_entry(tok, tmp_path, monkeypatch):
    """A warm-up killed while writing its result leaves nothing a later call could mistake for a cache hit."""
    task = ToyAddition()

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(type(tok), "save_pretrained", boom)
    with pytest.raises(OSError, match="disk full"):
        warmup(fresh(tok), tok, task, cache_dir=tmp_path, log=lambda _: None,
               **{**SETTINGS, "max_steps": 2, "target_accuracy": None})
    assert list(tmp_path.iterdir()) == []


def test_stops_at_max_steps_without_cache(tok, tmp_path):
    logs: list[str] = []
    warmup(fresh(tok), tok, ToyAddition(noise=0.3), cache_dir=tmp_path, use_cache=False, log=logs.append,
           **{**SETTINGS, "max_steps": 3, "target_accuracy": None})
    assert "3 steps" in logs[-1] and list(tmp_path.iterdir()) == []


def test_a_concurrent_store_keeps_the_first_entry(tok, tmp_path):
    from aspo.warmup import _store

    entry = tmp_path / "key"
    first, second = fresh(tok, seed=0), fresh(tok, seed=1)
    assert _store(first, tok, entry, {"accuracy": 0.5})
    assert not _store(second, tok, entry, {"accuracy": 0.9})
    assert json.loads((entry / "warmup.json").read_text())["accuracy"] == 0.5
    assert [p.name for p in tmp_path.iterdir()] == ["key"]
