"""AspoGRPOTrainer (aspo.integrations.trl) end to end on CPU: a tiny Qwen2 + char tokenizer saved locally, a tiny
in-memory dataset, a trivial reward; logs read back through logs_schema.queries."""
from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
trl = pytest.importorskip("trl")
datasets = pytest.importorskip("datasets")

import torch  # noqa: E402
from trl import GRPOConfig, GRPOTrainer  # noqa: E402

from aspo.integrations.trl import DEFAULT_TOKEN_SAMPLE, AspoGRPOTrainer, trl_aggregation  # noqa: E402
from logs_schema import queries  # noqa: E402
from model_helpers import save_tiny_model  # noqa: E402
from params import in_turn  # noqa: E402

PROMPTS = ["1+1=", "2+3=", "4+4=", "5+1=", "7+2=", "3+3="]


def reward_ones(completions, **_):
    """Share of '1' characters: varies within groups from the first step on."""
    return [c.count("1") / max(len(c), 1) for c in completions]


def make_args(tmp_path, **over):
    base = dict(output_dir=str(tmp_path / "out"), per_device_train_batch_size=4, num_generations=4,
                max_completion_length=8, num_iterations=2, steps_per_generation=2, max_steps=8,
                learning_rate=3e-2, report_to="none", logging_steps=100, save_strategy="no", use_cpu=True,
                bf16=False, seed=0, gradient_checkpointing=False, disable_tqdm=True, temperature=1.0)
    return GRPOConfig(**{**base, **over})


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return save_tiny_model(tmp_path_factory.mktemp("tiny_qwen2"))


@pytest.fixture(scope="module")
def dataset():
    return datasets.Dataset.from_dict({"prompt": PROMPTS})


def run(tmp_path, model_dir, dataset, loss, aspo_kwargs=None, **args_over):
    """A run that keeps every response's token rows (the checks below compare them with TRL's own values);
    the default token budget has its own test."""
    log_dir = tmp_path / f"logs-{loss}"
    trainer = AspoGRPOTrainer(model=model_dir, reward_funcs=reward_ones, args=make_args(tmp_path, **args_over),
                              train_dataset=dataset, aspo_loss=loss, aspo_log_dir=log_dir,
                              **{"aspo_token_sample": None, **(aspo_kwargs or {})})
    trainer.train()
    return log_dir, trainer


@pytest.fixture(scope="module")
def aspo_run(tmp_path_factory, model_dir, dataset):
    return run(tmp_path_factory.mktemp("aspo"), model_dir, dataset, "aspo")


def all_tokens(log_dir, run_id, step):
    seqs = queries.samples(log_dir, run_id, step, limit=1000)
    return seqs, [queries.sample_tokens(log_dir, run_id, step, int(s), epoch=None) for s in seqs["sample"]]


def step_tokens(log_dir, step):
    """Every token row of one step (all passes), through the dashboard's query API."""
    return pd.concat(all_tokens(log_dir, log_dir.name, step)[1], ignore_index=True)


def test_logs_are_readable_through_queries(aspo_run):
    log_dir, trainer = aspo_run
    runs = queries.list_runs(log_dir)
    assert list(runs["run_id"]) == [log_dir.name] and runs["status"][0] == "finished"
    assert runs["algo"][0] == "aspo"
    # one generation batch = steps_per_generation 2 x num_iterations 2 = 4 optimizer steps: max_steps=8 -> 2 RL steps
    steps = queries.step_metrics(log_dir)
    assert list(steps["step"]) == [0, 1]
    for col in ("reward_mean", "entropy_mean", "loss", "lr", "response_length_mean", "seconds", "grad_norm"):
        assert steps[col].notna().all(), col
    seqs, toks = all_tokens(log_dir, log_dir.name, 1)
    assert len(seqs) == 8  # generation batch: per_device 4 x steps_per_generation 2
    t = toks[0]
    assert sorted(set(zip(t["epoch"], t["minibatch"]))) in ([(0, 0), (1, 0)], [(0, 1), (1, 1)])
    assert t["new_logp"].notna().all() and t["token"].notna().all()
    assert (t.groupby("epoch").size().nunique() == 1)  # the same tokens in every epoch
    assert not queries.rich_get_richer(log_dir).empty


def test_ratios_move_and_aspo_weights_follow_the_rule(aspo_run):
    log_dir, _ = aspo_run
    t = step_tokens(log_dir, 1)
    second = t[t["epoch"] == 1]
    assert (second["ratio"] - 1).abs().max() > 1e-3, "num_iterations=2: the second pass must be off-policy"
    first = t[(t["epoch"] == 0) & (t["minibatch"] == 0)]
    np.testing.assert_allclose(first["ratio"], 1.0, atol=1e-5)  # first update of the batch: on-policy
    pos = t[(t["advantage"] > 0) & ~t["clipped"] & ~t["dual_clipped"]]
    assert len(pos)
    np.testing.assert_allclose(pos["weight"], 1 / pos["ratio"], rtol=1e-5)
    neg = t[(t["advantage"] < 0) & ~t["clipped"] & ~t["dual_clipped"]]
    np.testing.assert_allclose(neg["weight"], neg["ratio"], rtol=1e-5)
    assert (t.loc[t["clipped"], "weight"] == 0).all()


def test_grpo_weights_are_the_ratio(tmp_path, model_dir, dataset):
    log_dir, _ = run(tmp_path, model_dir, dataset, "grpo", {"aspo_new_logp": False, "aspo_token_sample": 3},
                     max_steps=4)
    t = step_tokens(log_dir, 0)
    assert t["new_logp"].isna().all() and t["new_entropy"].isna().all()  # no extra forward asked for
    assert t["old_entropy"].notna().all()
    m = queries.step_metrics(log_dir)
    assert m["entropy_after"].isna().all() and m["entropy_change_same"].isna().all() and m["entropy_mean"].notna().all()
    assert t["sample"].nunique() == 3  # token budget: 3 responses' rows kept ...
    hist = queries.rich_get_richer(log_dir)  # ... while the histograms count every token
    assert hist["count"].sum() > len(t)
    live = t[(t["advantage"] != 0) & ~t["clipped"] & ~t["dual_clipped"]]
    assert len(live) and (live["ratio"] - 1).abs().max() > 1e-3
    np.testing.assert_allclose(live["weight"], live["ratio"], rtol=1e-5)


SAME_STATE = ["entropy_before", "entropy_after", "entropy_change_same", "entropy_ratio_same"]


def test_same_state_entropy_and_predictors_are_logged(aspo_run):
    """TRL makes an old-logp forward here (gradient_accumulation_steps 1 is not a multiple of steps_per_generation
    x num_iterations): old_entropy is that forward's entropy, new_entropy the extra forward's after the updates."""
    log_dir, _ = aspo_run
    t = step_tokens(log_dir, 1)
    assert t["old_entropy"].notna().all() and t["new_entropy"].notna().all() and t["entropy_slope"].notna().all()
    per_token = t.groupby(["sample", "position"])
    assert (per_token["old_entropy"].nunique() == 1).all() and (per_token["new_entropy"].nunique() == 1).all()
    t0 = step_tokens(log_dir, 0)
    first = t0[(t0["epoch"] == 0) & (t0["minibatch"] == 0)]  # before any update of the step: the old policy
    assert len(first)
    np.testing.assert_allclose(first["entropy"], first["old_entropy"], atol=1e-4)
    later = t0[t0["epoch"] == 1]
    assert (later["entropy"] - later["old_entropy"]).abs().max() > 1e-5  # what old_entropy is not
    m = queries.step_metrics(log_dir).set_index("step")
    for name in SAME_STATE + ["logp_wadv_cov", "entropy_first_order"]:
        assert m[name].notna().all(), name
    once = [step_tokens(log_dir, s).drop_duplicates(["sample", "position"]) for s in (0, 1)]
    for step, o in enumerate(once):  # every response's rows kept: the step values are the token rows' means
        assert m.loc[step, "entropy_mean"] == pytest.approx(o["old_entropy"].mean(), rel=1e-5)
        assert m.loc[step, "entropy_change_same"] == pytest.approx((o["new_entropy"] - o["old_entropy"]).mean(),
                                                                   rel=1e-4, abs=1e-7)


class CountingTrainer(AspoGRPOTrainer):
    """Records how many responses each new_logp forward scored."""
    scored: list = []

    def _new_logp(self, batch, rows):
        type(self).scored.append(len(rows))
        return super()._new_logp(batch, rows)


def test_a_token_budget_limits_the_new_logp_forward_to_the_kept_responses(tmp_path, model_dir, dataset):
    """aspo_token_sample=3 of 8 responses: the new_logp forward scores those 3 only; their rows carry new_logp and
    new_entropy, the same-state metrics are their (trained) tokens' means, and the histograms' sums of values
    measured after the updates are over those rows, with their own count (after_count; schema v4), while count
    still covers every token: Δlogp by probability and where the entropy falls are the kept responses', and
    their cells add up to the step's entropy_change_same. aspo_new_logp="all" scores all 8."""
    CountingTrainer.scored = []
    log_dir = tmp_path / "kept"
    CountingTrainer(model=model_dir, reward_funcs=reward_ones, args=make_args(tmp_path, max_steps=4),
                    train_dataset=dataset, aspo_loss="grpo", aspo_log_dir=log_dir, aspo_token_sample=3).train()
    assert CountingTrainer.scored == [3]
    t = step_tokens(log_dir, 0)
    assert t["sample"].nunique() == 3 and t["new_logp"].notna().all() and t["new_entropy"].notna().all()
    once = t.drop_duplicates(["sample", "position"])
    m = queries.step_metrics(log_dir).set_index("step")
    assert m.loc[0, "entropy_change_same"] == pytest.approx((once["new_entropy"] - once["old_entropy"]).mean(),
                                                            rel=1e-4, abs=1e-7)
    assert m.loc[0, "entropy_before"] == pytest.approx(once["old_entropy"].mean(), rel=1e-5)
    hist = raw_hist(log_dir)
    h0 = hist[hist["step"] == 0]
    assert h0["count"].sum() > len(t) and hist["weight_sum"].notna().all()
    assert h0["after_count"].sum() == len(t)  # raw rows: every kept token row once per pass, nothing else
    assert h0["delta_logp_sum"].sum() == pytest.approx((t["new_logp"] - t["old_logp"]).sum(), rel=1e-6, abs=1e-6)
    assert h0["entropy_change_sum"].sum() == pytest.approx((t["new_entropy"] - t["old_entropy"]).sum(),
                                                          rel=1e-5, abs=1e-6)
    bins = queries.entropy_change_by_bin(log_dir)
    assert (bins["n_steps"] == len(m)).all()
    assert bins["entropy_change"].sum() == pytest.approx(m["entropy_change_same"].mean(), rel=1e-4, abs=1e-7)
    rgr = queries.rich_get_richer(log_dir, step_min=0, step_max=0)
    t = t.assign(pbin=np.clip(np.floor(np.exp(t["old_logp"]) * 20), 0, 19).astype(int),
                 delta=t["new_logp"] - t["old_logp"], sign=np.where(t["advantage"] > 0, "pos", np.where(
                     t["advantage"] < 0, "neg", "zero")))
    want = t.groupby(["sign", "pbin"])["delta"].mean()
    got = rgr.set_index(["adv_sign", "prob_bin"])["delta_logp_mean"]
    np.testing.assert_allclose(got.reindex(want.index).to_numpy(), want.to_numpy(), rtol=1e-5, atol=1e-6)

    CountingTrainer.scored = []
    log_all = tmp_path / "all"
    CountingTrainer(model=model_dir, reward_funcs=reward_ones, args=make_args(tmp_path, max_steps=4),
                    train_dataset=dataset, aspo_loss="grpo", aspo_log_dir=log_all, aspo_token_sample=3,
                    aspo_new_logp="all").train()
    assert CountingTrainer.scored == [8]
    hist = raw_hist(log_all)
    assert hist["delta_logp_sum"].notna().all() and hist["new_entropy_sum"].notna().all()
    with pytest.raises(ValueError, match="aspo_new_logp"):
        AspoGRPOTrainer(model=model_dir, reward_funcs=reward_ones, args=make_args(tmp_path), train_dataset=dataset,
                        aspo_new_logp="some")
    with pytest.raises(ValueError, match="token_sample share must be in"):  # before the model loads
        AspoGRPOTrainer(model=model_dir, reward_funcs=reward_ones, args=make_args(tmp_path), train_dataset=dataset,
                        aspo_token_sample=1.5)


def test_the_default_token_budget_keeps_a_quarter_of_the_responses(tmp_path, model_dir, dataset):
    """No aspo_token_sample: DEFAULT_TOKEN_SAMPLE (0.25) of the 8 responses, i.e. 2, keep token rows and are
    scored after the updates; the step metrics known before the updates still cover every token."""
    CountingTrainer.scored = []
    log_dir = tmp_path / "default"
    CountingTrainer(model=model_dir, reward_funcs=reward_ones, args=make_args(tmp_path, max_steps=2),
                    train_dataset=dataset, aspo_loss="grpo", aspo_log_dir=log_dir).train()
    assert DEFAULT_TOKEN_SAMPLE == 0.25 and CountingTrainer.scored == [2]
    t = step_tokens(log_dir, 0)
    assert t["sample"].nunique() == 2
    seqs = raw_rows_of(log_dir, "sequences")
    seqs = seqs[seqs["step"] == 0]
    assert len(seqs) == 8 and seqs["tokens_logged"].sum() == 2
    hist = raw_hist(log_dir)
    hist = hist[hist["step"] == 0]  # raw rows: every token of the 8 responses, as many passes each
    passes = hist["count"].sum() / seqs["length"].sum()
    assert passes >= 1 and len(t) == passes * seqs.loc[seqs["tokens_logged"], "length"].sum()
    assert hist["after_count"].sum() == len(t)
    m = queries.step_metrics(log_dir).set_index("step")
    assert m.loc[0, "entropy_mean"] == pytest.approx(
        hist["old_entropy_sum"].sum() / hist["count"].sum(), rel=1e-5)  # every token, not the kept 2


def test_rich_get_richer_says_what_its_delta_logp_reads_under_the_default_budget(tmp_path, model_dir, dataset,
                                                                                monkeypatch, aspo_run):
    """The page (AppTest) on a default-budget run names the share of token rows its Δlogp chart reads (the raw
    token_hist after_count over count, unclipped rows as the page shows by default); on a run that keeps every response it says nothing of the kind."""
    from apptest_helpers import open_page

    log_dir = tmp_path / "budget"
    AspoGRPOTrainer(model=model_dir, reward_funcs=reward_ones, args=make_args(tmp_path, max_steps=4),
                    train_dataset=dataset, aspo_loss="aspo", aspo_log_dir=log_dir).train()
    hist = raw_hist(log_dir)
    hist = hist[hist["clip_state"] == "none"]  # the page's default rows: the unclipped ones
    share = hist["after_count"].sum() / hist["count"].sum()
    assert 0 < share < 1
    at = open_page(log_dir, "rich_get_richer", monkeypatch, {"selected_runs": [log_dir.name]})
    notes = [c.value for c in at.caption if "delta_logp reads" in str(c.value)]
    assert notes == [next(n for n in notes)] and f"the {share:.0%} of these token rows" in notes[0]
    full, _ = aspo_run
    at = open_page(full, "rich_get_richer", monkeypatch, {"selected_runs": [full.name]})
    assert not [c for c in at.caption if "delta_logp reads" in str(c.value)]


def raw_rows_of(log_dir, table) -> pd.DataFrame:
    """Every row of one table of a run, from its raw files (no query, no de-duplication)."""
    import pyarrow.parquet as pq
    return pd.concat([pq.read_table(f).to_pandas() for f in sorted((log_dir / table).glob("*.parquet"))])


def raw_hist(log_dir) -> pd.DataFrame:
    """Every token_hist row of a run, from its raw files."""
    return raw_rows_of(log_dir, "token_hist")


def test_on_policy_steps_take_old_entropy_from_the_pass(tmp_path, model_dir, dataset):
    """num_iterations 1, steps_per_generation 1: TRL makes no old-logp forward (every pass precedes the step's one
    update), so the pass's own entropy is the old one."""
    log_dir, _ = run(tmp_path, model_dir, dataset, "grpo", num_iterations=1, steps_per_generation=1, max_steps=2)
    t = step_tokens(log_dir, 1)
    assert len(t) and (t["old_entropy"] == t["entropy"]).all() and t["new_entropy"].notna().all()
    assert queries.step_metrics(log_dir)["entropy_change_same"].notna().all()


def trl_batch(trainer, seed=1):
    """A generated batch whose old logps are perturbed so ratios sit in ~[0.5, 2] (some tokens clipped)."""
    trainer.model.train()
    trainer.current_gradient_accumulation_steps = 2
    torch.manual_seed(seed)
    inputs = trainer._generate_and_score_completions([{"prompt": p} for p in PROMPTS[:2] for _ in range(4)])
    logp, _, _ = trainer._get_per_token_logps_and_entropies(
        trainer.model, torch.cat([inputs["prompt_ids"], inputs["completion_ids"]], 1),
        torch.cat([inputs["prompt_mask"], inputs["completion_mask"]], 1), inputs["completion_ids"].size(1))
    inputs["old_per_token_logps"] = logp.detach() + 0.3 * torch.randn_like(logp)
    inputs["advantages"] = torch.randn(logp.size(0))
    return inputs


def loss_and_grads(trainer, fn, inputs):
    trainer.model.zero_grad()
    loss = fn(trainer.model, inputs)
    loss.backward()
    return loss.detach(), [p.grad.clone() for p in trainer.model.parameters() if p.grad is not None]


@pytest.mark.parametrize("loss_type,extra", [
    ("grpo", {}), ("dapo", {}), ("bnpo", {}), ("dr_grpo", {}),
    ("grpo", {"importance_sampling_level": "sequence"}),  # GSPO as TRL configures it
    ("dapo", {"beta": 0.1}),  # k3 KL to the reference model
])
def test_grpo_gradient_equals_trls_own_loss(tmp_path, model_dir, dataset, loss_type, extra):
    """On one batch with moved ratios (some clipped), aspo's grpo with TRL's normaliser has exactly the loss and
    gradient of TRL's own loss. dual_clip is set out of reach: TRL's grpo has no dual clip."""
    trainer = AspoGRPOTrainer(model=model_dir, reward_funcs=reward_ones,
                              args=make_args(tmp_path, loss_type=loss_type, **extra),
                              train_dataset=dataset, aspo_loss="grpo", aspo_loss_kwargs={"dual_clip": 1e9})
    inputs = trl_batch(trainer)
    ours, g_ours = loss_and_grads(trainer, trainer._compute_loss, inputs)
    theirs, g_trl = loss_and_grads(trainer, lambda m, x: GRPOTrainer._compute_loss(trainer, m, x), inputs)
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-7)
    assert len(g_ours) == len(g_trl)
    for a, b in zip(g_ours, g_trl):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-7)


def test_aspo_gradient_differs_from_trls_grpo(tmp_path, model_dir, dataset):
    """The equality above is not vacuous: on the same batch, aspo's rule moves the gradient."""
    trainer = AspoGRPOTrainer(model=model_dir, reward_funcs=reward_ones, args=make_args(tmp_path, loss_type="dapo"),
                              train_dataset=dataset, aspo_loss="aspo")
    inputs = trl_batch(trainer)
    _, g_ours = loss_and_grads(trainer, trainer._compute_loss, inputs)
    _, g_trl = loss_and_grads(trainer, lambda m, x: GRPOTrainer._compute_loss(trainer, m, x), inputs)
    assert max((a - b).abs().max().item() for a, b in zip(g_ours, g_trl)) > 1e-4


def test_trl_aggregation_modes():
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
    assert trl_aggregation("grpo", mask, batch_size=2, grad_accum=3) == ("seq-mean-token-mean", 6)
    mode, norm = trl_aggregation("dapo", mask, batch_size=2, grad_accum=2, num_items=torch.tensor(12.0),
                                 num_processes=2, steps_per_generation=4)
    assert mode == "token-mean" and float(norm) == 3.0
    with pytest.raises(ValueError, match="loss_type"):
        trl_aggregation("nope", mask, batch_size=2, grad_accum=1)


def test_unknown_loss_and_unsupported_options_are_refused(tmp_path, model_dir, dataset):
    with pytest.raises(ValueError, match="unknown aspo_loss"):
        AspoGRPOTrainer(model=model_dir, reward_funcs=reward_ones, args=make_args(tmp_path), train_dataset=dataset,
                        aspo_loss="ppo")
    with pytest.raises(ValueError, match="top_entropy_quantile"):
        AspoGRPOTrainer(model=model_dir, reward_funcs=reward_ones, args=make_args(tmp_path, top_entropy_quantile=0.5),
                        train_dataset=dataset)


@pytest.mark.parametrize("page", in_turn(["runs", "overview", "rich_get_richer", "entropy", "repetition", "samples"], 0, 3))
def test_trl_logs_open_in_the_dashboard(aspo_run, page, monkeypatch):
    """Every dashboard page renders the TRL run's logs (streamlit AppTest): no exception, at least one chart."""
    testing = pytest.importorskip("streamlit.testing.v1")
    from pathlib import Path
    log_dir, _ = aspo_run
    monkeypatch.setenv("ASPO_LOGS", str(log_dir.parent))
    at = testing.AppTest.from_file(str(Path(__file__).resolve().parents[1] / "app" / "streamlit_app.py"),
                                   default_timeout=60)
    at.run()
    if page != "runs":
        at.switch_page(f"app_pages/{page}.py")
        at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.get("plotly_chart") or page == "samples", page


# ---------------------------------------------------------------- sampler log-probs (schema v2: rollout_logp)
def test_without_sampler_logps_rollout_logp_stays_null(aspo_run):
    log_dir, _ = aspo_run
    t = step_tokens(log_dir, 1)
    assert len(t) and t["rollout_logp"].isna().all()  # TRL generated with transformers: no sampler logps
    m = queries.entropy_drivers(log_dir)
    assert m["rollout_kl"].isna().all() and m["rollout_logp_diff_max"].isna().all()
    assert m["logp_adv_cov"].notna().all()  # one process: the other diagnostics are logged
    np.testing.assert_allclose(m["logp_adv_cov"], m["logp_adv_cov_hist"], rtol=1e-6, atol=1e-9)


def test_sampler_logps_in_the_batch_fill_rollout_logp(tmp_path, model_dir, dataset):
    """A `rollout_func` (TRL's custom sampler hook) returns per-token sampling logps, as vLLM does: TRL carries
    them in the batch as `sampling_per_token_logps`, and the plug-in logs exactly those values."""
    from aspo.rollout import generate
    sent = {}

    def rollout_func(prompts, trainer):
        tok = trainer.processing_class
        ro = generate(trainer.model, tok, list(prompts), 8, 1.0, torch.Generator().manual_seed(len(sent)))
        out = {"prompt_ids": [], "completion_ids": [], "logprobs": []}
        for i, p in enumerate(prompts):
            n = int(ro.completion_mask[i].sum())
            out["prompt_ids"].append(tok(p, add_special_tokens=True)["input_ids"])
            out["completion_ids"].append(ro.completion_ids[i, :n].tolist())
            out["logprobs"].append(ro.logp[i, :n].tolist())
            sent[(tuple(out["completion_ids"][-1]), len(sent))] = out["logprobs"][-1]
        return out

    log_dir, _ = run(tmp_path, model_dir, dataset, "grpo", {"rollout_func": rollout_func}, max_steps=4)
    t = step_tokens(log_dir, 0)
    assert len(t) and t["rollout_logp"].notna().all()
    sent_values = np.concatenate([np.asarray(v, np.float32) for v in sent.values()])
    assert np.isin(t["rollout_logp"].to_numpy(np.float32), sent_values).all()  # the sampler's own numbers
    assert (t["rollout_logp"] - t["old_logp"]).abs().max() < 1e-4  # same fp32 model: sampler == trainer
    m = queries.entropy_drivers(log_dir)
    assert m["rollout_kl"].notna().all() and (m["rollout_logp_diff_max"] < 1e-4).all()
