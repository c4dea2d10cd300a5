"""aspo.integrations.verl against verl's real interface on CPU: the policy-loss registry and ActorConfig
(verl.trainer.ppo.core_algos, verl.workers.config), verl's own vanilla loss and agg_loss, and verl's actor-side
`ppo_loss` (verl.workers.utils.losses). Only the engine's mini-batch loop (FSDP/Megatron, Ray) is a stand-in."""
from __future__ import annotations

import os
import re

import numpy as np
import pandas as pd
import pytest

try:
    import verl.trainer.ppo.core_algos  # noqa: F401
except ImportError:
    if os.environ.get("CI", "").lower() not in ("", "0", "false"):
        raise  # CI runs this file in .venv-verl (`make test` -> scripts/setup_verl.sh): no verl there is a failure
    pytest.skip("verl is not installed here; `make test` runs this file in .venv-verl (scripts/setup_verl.sh)",
                allow_module_level=True)

import torch  # noqa: E402
from tensordict import TensorDict  # noqa: E402
from verl.trainer.ppo import core_algos  # noqa: E402
from verl.utils import tensordict_utils as tu  # noqa: E402
from verl.workers.config import ActorConfig  # noqa: E402
from verl.workers.utils.losses import ppo_loss  # noqa: E402

from aspo.integrations import verl as av  # noqa: E402
from aspo.losses import LOSSES  # noqa: E402
from logs_schema import queries  # noqa: E402


def actor_config(**kw) -> ActorConfig:
    base = dict(strategy="fsdp", rollout_n=1, ppo_micro_batch_size_per_gpu=2, ppo_mini_batch_size=4, clip_ratio=0.2)
    return ActorConfig(**{**base, **kw})


def batch(B=6, T=7, seed=0, spread=0.5):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(2, T + 1, (B,), generator=g)
    mask = (torch.arange(T)[None] < lengths[:, None])
    old = -torch.rand(B, T, generator=g) * 3
    logp = (old + spread * torch.randn(B, T, generator=g)).requires_grad_(True)  # ratios ~ e^{±1}: clips hit
    adv = torch.randn(B, 1, generator=g).expand(B, T).clone()
    return old, logp, adv, mask


@pytest.fixture(autouse=True)
def no_logging():
    av.configure(log_dir=None)
    yield
    av.configure(log_dir=None)


def call(name, old, logp, adv, mask, config, mode="token-mean"):
    fn = core_algos.get_policy_loss_fn(name)
    logp.grad = None
    loss, metrics = fn(old_log_prob=old, log_prob=logp, advantages=adv, response_mask=mask, loss_agg_mode=mode,
                       config=config, rollout_is_weights=None)
    loss.backward()
    return loss.detach(), logp.grad.clone(), metrics


def test_everything_is_registered():
    names = set(core_algos.POLICY_LOSS_REGISTRY)
    assert {"aspo"} | {f"aspo_{n}" for n in LOSSES if n != "aspo"} <= names
    assert {"aspo_logged_vanilla", "aspo_logged_gspo", "aspo_logged_cispo"} <= names
    assert av.register() and set(core_algos.POLICY_LOSS_REGISTRY) == names  # idempotent


@pytest.mark.parametrize("mode", ["token-mean", "seq-mean-token-mean", "token-sum", "seq-mean-token-sum"])
@pytest.mark.parametrize("dp", [1, 2])
def test_aspo_grpo_has_verl_vanillas_loss_and_gradient(mode, dp):
    """aspo's grpo (PPO clip + hard dual clip c) is verl's vanilla loss, for every aggregation mode and with the
    global-batch normalisers verl injects for data parallelism."""
    config = actor_config(clip_ratio_low=0.2, clip_ratio_high=0.28, clip_ratio_c=2.0)
    old, logp, adv, mask = batch()
    config.global_batch_info.update(dp_size=dp, batch_num_tokens=int(mask.sum()) * dp, global_batch_size=6 * dp)
    ours = call("aspo_grpo", old, logp, adv, mask, config, mode)
    theirs = call("vanilla", old, logp, adv, mask, config, mode)
    torch.testing.assert_close(ours[0], theirs[0])
    torch.testing.assert_close(ours[1], theirs[1])
    assert ours[2]["actor/pg_clipfrac"] > 0  # the batch does exercise the clip


def test_aspo_gradient_is_minus_a_weight_over_n(tmp_path):
    av.configure(log_dir=tmp_path / "run")
    config = actor_config()
    old, logp, adv, mask = batch(seed=3)
    _, grad, _ = call("aspo", old, logp, adv, mask, config)
    out = LOSSES["aspo"](logp.detach(), old, adv, mask)
    n = mask.sum()
    torch.testing.assert_close(grad, -adv * out.weight / n * mask)
    av.flush()
    t = tokens(tmp_path / "run", 0)
    assert len(t) == int(n)
    pos = t[(t["advantage"] > 0) & ~t["clipped"] & ~t["dual_clipped"]]
    assert len(pos)
    np.testing.assert_allclose(pos["weight"], 1 / pos["ratio"], rtol=1e-5)


def published_steps(run_dir):
    """The run's steps once every queued write is on disk: the plug-in writes Parquet off the actor's thread,
    so a reader right after a step can see it still in the queue; av.flush() drains it, as exit does."""
    av.flush()
    return queries.step_metrics(run_dir)


def tokens(run_dir, step):
    av.flush()  # the step's files published (see published_steps)
    seqs = queries.samples(run_dir, run_dir.name, step, limit=1000)
    return pd.concat([queries.sample_tokens(run_dir, run_dir.name, step, int(s), epoch=None, rank=int(r))
                      for s, r in zip(seqs["sample"], seqs["rank"])], ignore_index=True)


def test_logged_vanilla_keeps_verls_loss_and_logs_the_ppo_weight(tmp_path):
    av.configure(log_dir=tmp_path / "run")
    config = actor_config(clip_ratio_c=2.0)
    old, logp, adv, mask = batch(seed=5, spread=0.8)
    logged = call("aspo_logged_vanilla", old, logp, adv, mask, config)
    plain = call("vanilla", old, logp, adv, mask, config)
    torch.testing.assert_close(logged[0], plain[0])
    torch.testing.assert_close(logged[1], plain[1])
    assert logged[2] == plain[2]
    assert av.flush() == 0
    t = tokens(tmp_path / "run", 0)
    ref = LOSSES["grpo"](logp.detach(), old, adv, mask, dual_clip=2.0)  # the same rule, from aspo's table
    m = mask.numpy()
    key = lambda df: df.sort_values(["sample", "position"])  # noqa: E731
    t = key(t)
    for col in ("weight", "ratio"):
        np.testing.assert_allclose(t[col], getattr(ref, col).numpy()[m], rtol=1e-5, atol=1e-6)
    for col in ("clipped", "dual_clipped"):
        assert (t[col].to_numpy() == getattr(ref, col).numpy()[m]).all()
    assert t["dual_clipped"].any() and t["clipped"].any()
    assert t["new_logp"].isna().all()  # flush() without new_logp: not measured


def actor_data(B=4, P=3, T=5, seed=0):
    """A micro-batch as verl's actor sees it in `ppo_loss`: padded prompts/responses, attention and response
    masks, old log-probs, advantages and token-level scores, plus the global-batch entries the engine adds."""
    g = torch.Generator().manual_seed(seed)
    resp_len = torch.randint(2, T + 1, (B,), generator=g)
    response_mask = (torch.arange(T)[None] < resp_len[:, None]).long()
    attention = torch.cat([torch.ones(B, P, dtype=torch.long), response_mask], 1)
    scores = torch.zeros(B, T)
    scores[torch.arange(B), resp_len - 1] = torch.randint(0, 2, (B,), generator=g).float()
    data = TensorDict({"prompts": torch.randint(5, 50, (B, P), generator=g),
                       "responses": torch.randint(5, 50, (B, T), generator=g) * response_mask,
                       "attention_mask": attention, "response_mask": response_mask,
                       "old_log_probs": -torch.rand(B, T, generator=g) * 2,
                       "advantages": torch.randn(B, 1, generator=g).expand(B, T).clone(),
                       "token_level_scores": scores}, batch_size=[B])
    return data


def flat(per_token: torch.Tensor, data) -> torch.Tensor:
    """The engine's no-padding layout (total_nnz,) whose left-shifted response slice is `per_token`."""
    parts = []
    P = data["prompts"].shape[1]
    for i in range(per_token.size(0)):
        r = int(data["response_mask"][i].sum())
        parts += [torch.zeros(P - 1), per_token[i, :r], torch.zeros(1)]
    return torch.cat(parts)


class StandInActor:
    """Stands in for verl's engine TrainingWorker: mini-batches x epochs, each through verl's real ppo_loss."""

    def __init__(self, config, params):
        self.config, self.params = config, params

    def train_mini_batch(self, data):
        B = data.shape[0]
        for epoch in range(2):
            for idx in (torch.arange(B)[: B // 2], torch.arange(B)[B // 2:]):
                mb = data[idx]
                tu.assign_non_tensor(mb, dp_size=1, batch_num_tokens=int(mb["response_mask"].sum()),
                                     global_batch_size=len(idx))
                logp = mb["old_log_probs"] + self.params[idx]
                out = {"log_probs": flat(logp, mb), "entropy": flat(torch.full_like(logp, 0.5 + epoch), mb)}
                loss, _ = av.aspo_ppo_loss(self.config, out, mb, _inner=ppo_loss)
                loss.backward()
                with torch.no_grad():
                    self.params -= 0.5 * self.params.grad
                    self.params.grad = None
        return "done"

    def infer_batch(self, data):
        """verl's compute_log_prob output: the current policy's log-probs and entropies in the no-padding layout
        (the stand-in's entropy moves with its parameters, from 1 + 0.1 x position)."""
        with torch.no_grad():
            ent = 1.0 + 0.1 * torch.arange(self.params.size(1)) + self.params
            logp = flat(data["old_log_probs"] + self.params, data)
            return TensorDict({"log_probs": logp, "entropy": flat(ent, data)}, batch_size=[])


class StandInEngine:
    """What the hook reads of verl's engine on a data-parallel rank: rank, size, group, and whether this rank
    holds the outputs (one of the tensor/sequence-parallel ranks of a shard)."""

    def __init__(self, rank: int, size: int, src: bool = True):
        self.rank, self.size, self.src = rank, size, src

    def get_data_parallel_rank(self):
        return self.rank

    def get_data_parallel_size(self):
        return self.size

    def get_data_parallel_group(self):
        return None  # the default group

    def is_mp_src_rank_with_outputs(self):
        return self.src


def test_actor_hook_writes_one_step_per_train_mini_batch(tmp_path):
    run = tmp_path / "verl-run"
    av.configure(log_dir=run, token_sample=None, new_logp=True)
    config = actor_config(policy_loss={"loss_mode": "aspo"})
    data = actor_data()
    actor = StandInActor(config, torch.zeros(4, 5, requires_grad=True))
    step = av.wrap_train_mini_batch(StandInActor.train_mini_batch)
    assert step(actor, data) == "done"
    after_step0 = (data["old_log_probs"] + actor.params).detach().numpy()
    assert step(actor, actor_data(seed=1)) == "done"
    assert list(published_steps(run)["step"]) == [0, 1]
    t = tokens(run, 0)
    assert sorted(t["epoch"].unique()) == [0, 1] and sorted(t["minibatch"].unique()) == [0, 1]
    assert t.groupby(["sample", "position"]).size().eq(2).all()  # each token once per epoch
    resp = data["responses"].numpy()
    np.testing.assert_array_equal(t["token_id"], resp[t["sample"], t["position"]])
    np.testing.assert_allclose(t["entropy"], 0.5 + t["epoch"])
    np.testing.assert_allclose(t["new_logp"], after_step0[t["sample"], t["position"]], rtol=1e-6)  # after the updates
    e1 = t[t["epoch"] == 1]
    assert (e1["ratio"] - 1).abs().max() > 1e-3  # the second epoch is off-policy
    seqs = queries.samples(run, run.name, 0, limit=100)
    np.testing.assert_allclose(seqs.sort_values("sample")["reward"], data["token_level_scores"].sum(-1).numpy())


def test_actor_hook_logs_the_samplers_log_probs_and_their_mismatch(tmp_path):
    """With rollout.calculate_log_probs, verl's batch carries rollout_log_probs: they are logged per token and
    the step's rollout_kl / rollout_logp_diff_max are computed from them (k3 KL, max |old - rollout|)."""
    run = tmp_path / "verl-run"
    av.configure(log_dir=run, token_sample=None)
    data = actor_data()
    noise = torch.randn(data["old_log_probs"].shape, generator=torch.Generator().manual_seed(3)) * 0.05
    data["rollout_log_probs"] = data["old_log_probs"] + noise
    actor = StandInActor(actor_config(policy_loss={"loss_mode": "aspo"}), torch.zeros(4, 5, requires_grad=True))
    av.wrap_train_mini_batch(StandInActor.train_mini_batch)(actor, data)
    t = tokens(run, 0)
    rollout = data["rollout_log_probs"].numpy()[t["sample"], t["position"]]
    np.testing.assert_allclose(t["rollout_logp"], rollout, rtol=1e-6)
    m = data["response_mask"].bool()
    old, r = data["old_log_probs"][m].double(), data["rollout_log_probs"][m].double()
    steps = published_steps(run).iloc[0]
    np.testing.assert_allclose(steps["rollout_logp_diff_max"], (old - r).abs().max().item(), rtol=1e-5)
    np.testing.assert_allclose(steps["rollout_kl"], (torch.exp(old - r) - (old - r) - 1).mean().item(), rtol=1e-4)
    without = tmp_path / "plain"  # no rollout log-probs in the batch: nothing invented
    av.configure(log_dir=without, token_sample=None)
    av.wrap_train_mini_batch(StandInActor.train_mini_batch)(actor, actor_data())
    assert tokens(without, 0)["rollout_logp"].isna().all()
    assert pd.isna(published_steps(without).iloc[0]["rollout_kl"])


def test_without_log_dir_nothing_is_recorded(tmp_path):
    config = actor_config()
    old, logp, adv, mask = batch()
    call("aspo", old, logp, adv, mask, config)
    assert av.flush() is None and not list(tmp_path.iterdir())


def one_step(actor, data):
    """verl's order on the actor: compute_log_prob (the old-log-prob forward, through the hooked infer_batch), then
    update_actor (the hooked train_mini_batch)."""
    av.wrap_infer_batch(StandInActor.infer_batch)(actor, data)
    return av.wrap_train_mini_batch(StandInActor.train_mini_batch)(actor, data)


def test_actor_hook_logs_same_state_entropy(tmp_path):
    """old_entropy: the old-log-prob forward's entropies (kept by the infer_batch hook, checked against the batch's
    old_log_probs); new_entropy: the opt-in forward after the updates; the step's same-state metrics from them."""
    run = tmp_path / "verl-run"
    av.configure(log_dir=run, token_sample=None, new_logp=True)
    data = actor_data()
    actor = StandInActor(actor_config(policy_loss={"loss_mode": "aspo"}), torch.zeros(4, 5, requires_grad=True))
    base = 1.0 + 0.1 * torch.arange(5)
    one_step(actor, data)
    after = (base + actor.params).detach().numpy()
    t = tokens(run, 0)
    np.testing.assert_allclose(t["old_entropy"], base.numpy()[t["position"]], rtol=1e-6)
    np.testing.assert_allclose(t["new_entropy"], after[t["sample"], t["position"]], rtol=1e-6)
    once = t.drop_duplicates(["sample", "position"])
    m = published_steps(run).iloc[0]
    assert m["entropy_mean"] == pytest.approx(once["old_entropy"].mean(), rel=1e-6)
    assert m["entropy_change_same"] == pytest.approx((once["new_entropy"] - once["old_entropy"]).mean(), rel=1e-5)
    assert m["entropy_change_same"] != 0 and pd.notna(m["entropy_first_order"]) and pd.notna(m["logp_wadv_cov"])
    bypass = actor_data(seed=1)  # old_log_probs that are not the kept forward's (bypass mode: the rollout's)
    av.wrap_infer_batch(StandInActor.infer_batch)(actor, actor_data(seed=2))
    av.wrap_train_mini_batch(StandInActor.train_mini_batch)(actor, bypass)
    t1 = tokens(run, 1)
    assert len(t1) and t1["old_entropy"].isna().all() and pd.isna(published_steps(run).iloc[1]["entropy_mean"])


def _verl_rank(rank: int, port: int, run_dir: str) -> None:
    """One data-parallel rank of a 2-rank verl actor step (gloo), every rank writing one run directory."""
    torch.distributed.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        av.configure(log_dir=run_dir, token_sample=None, new_logp=True)
        actor = StandInActor(actor_config(policy_loss={"loss_mode": "aspo"}), torch.zeros(4, 5, requires_grad=True))
        actor.engine = StandInEngine(rank, 2)
        one_step(actor, actor_data(seed=10 + rank))
        av.configure(log_dir=None)
    finally:
        torch.distributed.destroy_process_group()


@pytest.mark.slow  # two spawned processes, each importing verl
def test_two_data_parallel_ranks_log_the_whole_batchs_metrics(tmp_path):
    """The step metrics are reduced over the data-parallel group (sums over global counts): both ranks' rows hold
    the values recomputed from both ranks' raw token and sequence rows."""
    import socket

    import pyarrow.parquet as pq
    import torch.multiprocessing as mp
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    run = tmp_path / "dp"
    mp.start_processes(_verl_rank, args=(port, str(run)), nprocs=2, start_method="spawn")
    def raw(table):  # every row of every file, straight from Parquet
        return pd.concat([pq.read_table(f).to_pandas() for f in sorted((run / table).glob("*.parquet"))])

    steps, tok, seq = raw("steps").set_index("rank"), raw("tokens"), raw("sequences")
    assert sorted(steps.index) == [0, 1] and set(tok["rank"]) == {0, 1}
    once = tok.drop_duplicates(["rank", "sample", "position"])
    x, a = once["old_logp"].to_numpy(float), once["advantage"].to_numpy(float)
    old, new = once["old_entropy"].to_numpy(float), once["new_entropy"].to_numpy(float)
    want = {"reward_mean": seq["reward"].mean(), "entropy_mean": old.mean(),
            "entropy_change_same": (new - old).mean(),
            "logp_adv_cov": np.mean((x - x.mean()) * (a - a.mean())),
            "weight_mean_pos": tok.loc[tok["advantage"] > 0, "weight"].astype(float).mean(),
            "entropy_first_order": np.mean((tok["weight"] * tok["advantage"] * tok["entropy_slope"]).astype(float))}
    for name, value in want.items():
        for rank in (0, 1):
            assert steps.loc[rank, name] == pytest.approx(value, rel=1e-5), (rank, name)
    mine = once[once["rank"] == 0]
    assert abs(mine["old_entropy"].mean() - want["entropy_mean"]) > 1e-6  # rank 0 alone differs


class ReportingActor(StandInActor):
    """Returns what verl's engine TrainingWorker.train_mini_batch returns: a TensorDict whose non-tensor `metrics`
    holds lists of values, which verl's trainer averages and hands to its Tracking (wandb, tensorboard, ...)."""

    def train_mini_batch(self, data):
        super().train_mini_batch(data)
        return tu.get_tensordict(tensor_dict={}, non_tensor_dict={"metrics": {"actor/pg_loss": [0.1, 0.2]}})


def test_train_mini_batch_returns_aspo_metrics_for_verls_tracking(tmp_path):
    """Every measured steps metric of the step as actor/aspo_<column> beside verl's own actor/* metrics, equal to
    what the step wrote to its Parquet row; nothing else under actor/aspo_."""
    run = tmp_path / "verl-tracking"
    av.configure(log_dir=run, token_sample=None, new_logp=True)
    actor = ReportingActor(actor_config(policy_loss={"loss_mode": "aspo"}), torch.zeros(4, 5, requires_grad=True))
    out = av.wrap_train_mini_batch(ReportingActor.train_mini_batch)(actor, actor_data())
    av.configure(log_dir=None)
    metrics = tu.get(out, "metrics")
    assert metrics["actor/pg_loss"] == [0.1, 0.2]  # verl's own, untouched
    row = published_steps(run).iloc[0]
    measured = {c for c in row.index if c not in ("run_id", "step") and pd.notna(row[c])}
    assert {k for k in metrics if k.startswith("actor/aspo_")} == {f"actor/aspo_{c}" for c in measured}
    for column in ("logp_adv_cov", "fork_share_pos", "ratio_inactive_frac", "clip_frac_pos", "reward_mean"):
        assert metrics[f"actor/aspo_{column}"] == pytest.approx([row[column]]), column



@pytest.mark.parametrize("value, says", [("a quarter", "ASPO_TOKEN_SAMPLE='a quarter'"), ("1.5", "share must be in"),
                                         ("-3", "count must be >= 0")])
def test_a_bad_token_budget_is_one_line_and_leaves_logging_off(tmp_path, monkeypatch, value, says):
    monkeypatch.setenv("ASPO_TOKEN_SAMPLE", value)
    with pytest.raises(ValueError, match=re.escape(says)) as err:
        av.configure(log_dir=tmp_path / "run")
    assert "\n" not in str(err.value)
    assert av.RECORDER.log_dir is None and not (tmp_path / "run").exists()
