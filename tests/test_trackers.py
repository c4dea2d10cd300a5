"""--report-to: what the bundled trainer sends, read back from the files each real backend wrote with that
backend's own reader (TensorBoard's EventAccumulator, MLflow's client, Trackio's SQLite storage, W&B's own
record protobufs), compared with the run's raw Parquet steps. No mocked tracker."""
from __future__ import annotations

import glob
import importlib.util
import json
import os
import struct
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from aspo import trackers, trainer
from aspo.config import ConfigError, make_config
from logs_schema.schema import STEP_METRICS
from tracker_helpers import fake_run_dir, feed

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")  # the readers below open the same file store


def raw_steps(run_dir: Path) -> pd.DataFrame:
    """The steps table straight from its Parquet files (every row, no query engine)."""
    return pd.concat([pq.read_table(f).to_pandas() for f in sorted((run_dir / "steps").glob("*.parquet"))])


def tb_scalars(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    ea = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"scalars": 0, "tensors": 0})
    ea.Reload()
    return {t: [(e.step, e.value) for e in ea.Scalars(t)] for t in ea.Tags()["scalars"]}


def tb_texts(run_dir: Path) -> dict[str, list[tuple[int, str]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    ea = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"tensors": 0})
    ea.Reload()
    return {t: [(e.step, e.tensor_proto.string_val[0].decode()) for e in ea.Tensors(t)] for t in ea.Tags()["tensors"]}


def mlflow_run(run_dir: Path):
    from mlflow.tracking import MlflowClient
    ids = json.loads((run_dir / "trackers.json").read_text())
    client = MlflowClient(tracking_uri=ids["mlflow_uri"])
    return client, client.get_run(ids["mlflow_run_id"])


def expected(steps: pd.DataFrame) -> dict[str, list[tuple[int, float]]]:
    """aspo/<column> -> [(step, value)] for every metric the run logged (non-null)."""
    out = {}
    for m in STEP_METRICS:
        s = steps[["step", m]].dropna().sort_values("step")
        if len(s):
            out[f"aspo/{m}"] = [(int(a), float(b)) for a, b in zip(s["step"], s[m])]
    return out


@pytest.fixture(scope="module")
def tracked_run(tmp_path_factory):
    """A real tiny run with --report-to tensorboard,mlflow: 3 steps, then resumed to 5."""
    out = tmp_path_factory.mktemp("trk") / "run"
    kw = dict(out=str(out), progress=False, task_args="digits=1,n_train=80,n_heldout=20", report_to="tensorboard,mlflow")
    trainer.train(make_config("tiny", steps=3, **kw), log=lambda m: None)
    ids = json.loads((out / "trackers.json").read_text())
    trainer.train(make_config("tiny", steps=5, resume=True, **kw), log=lambda m: None)
    return out, ids


@pytest.mark.slow
def test_tensorboard_has_every_steps_metric_at_its_step(tracked_run):
    run_dir, _ = tracked_run
    got, want = tb_scalars(run_dir), expected(raw_steps(run_dir))
    assert "aspo/logp_adv_cov" in want and "aspo/entropy_mean" in want and "aspo/near_deterministic_frac" in want
    assert set(got) == set(want)
    for key, points in want.items():  # each step once, resumed steps not doubled (purge_step)
        assert [s for s, _ in got[key]] == [s for s, _ in points], key
        assert [v for _, v in got[key]] == pytest.approx([v for _, v in points], rel=1e-6, abs=1e-9), key
    assert [s for s, _ in got["aspo/entropy_mean"]] == [0, 1, 2, 3, 4]
    texts = tb_texts(run_dir)
    assert texts["aspo/run_dir/text_summary"][0][1] == str(run_dir.resolve())
    assert json.loads(texts["aspo/config/text_summary"][0][1].strip("`json\n"))["report_to"] == "tensorboard,mlflow"


@pytest.mark.slow
def test_mlflow_file_store_has_the_metrics_config_and_run_dir(tracked_run):
    run_dir, first_ids = tracked_run
    client, run = mlflow_run(run_dir)
    assert run.info.run_id == first_ids["mlflow_run_id"]  # the resume continued the same MLflow run
    assert run.info.status == "FINISHED" and run.data.tags["aspo.run_dir"] == str(run_dir.resolve())
    assert run.data.params["algo"] == "aspo" and run.data.params["dual_clip"] == "3.0"
    assert run.data.params["runtime/device"] == "cpu"  # nested config keys flattened
    for key, points in expected(raw_steps(run_dir)).items():
        hist = sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, key))
        assert [s for s, _ in hist] == [s for s, _ in points], key
        assert [v for _, v in hist] == pytest.approx([v for _, v in points], rel=1e-6, abs=1e-9), key


def test_alerts_reach_tensorboard_and_mlflow_once(tmp_path):
    run_dir = fake_run_dir(tmp_path)
    feed(run_dir, "tensorboard,mlflow")
    alerts = tb_texts(run_dir)["aspo/alerts/text_summary"]
    assert [s for s, _ in alerts] == [4] and "entropy_collapse fired at step 4" in alerts[0][1]
    assert [s for s, _ in tb_scalars(run_dir)["aspo/reward_mean"]] == list(range(8))
    assert "aspo/rollout_kl" not in tb_scalars(run_dir)  # not measured: not sent, never a fake 0
    _, run = mlflow_run(run_dir)
    assert "entropy_collapse fired at step 4" in run.data.tags["aspo.alert.entropy_collapse"]


@pytest.mark.skipif(importlib.util.find_spec("trackio") is None, reason="trackio not installed (aspo[trackio])")
def test_trackio_local_store(tmp_path, monkeypatch):
    monkeypatch.setenv("TRACKIO_DIR", str(tmp_path / "trackio"))
    code = ("import sys; sys.path.insert(0, 'tests'); from pathlib import Path; from tracker_helpers import feed; "
            f"feed(Path({str(fake_run_dir(tmp_path))!r}), 'trackio')")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT, env=os.environ, capture_output=True)
    reader = ("from trackio.sqlite_storage import SQLiteStorage as S; import json; "
              "print(json.dumps([S.get_logs('aspo', 'r'), S.get_alerts('aspo'), S.get_run_config('aspo', 'r')]))")
    logs, alerts, config = json.loads(subprocess.run([sys.executable, "-c", reader], check=True, cwd=ROOT,
                                                     env=os.environ, capture_output=True, text=True).stdout)
    assert [(r["step"], r["aspo/entropy_mean"]) for r in logs] == [(s, 1.0 if s < 4 else 0.3) for s in range(8)]
    assert [a["step"] for a in alerts] == [4] and "entropy_collapse" in alerts[0]["title"]
    assert config["aspo_run_dir"] == str((tmp_path / "r").resolve()) and config["algo"] == "grpo"


def wandb_records(path: str) -> list:
    """The records of an offline .wandb file: W&B's own Record protobufs inside its LevelDB-log framing
    (7-byte header ':W&B' + magic + version, then 32 KiB blocks of crc32(4) length(2) type(1) chunks)."""
    from wandb.proto import wandb_internal_pb2 as pb
    data, out, buf, pos = Path(path).read_bytes(), [], b"", 7
    while pos + 7 <= len(data):
        if 32768 - pos % 32768 < 7:  # block trailer
            pos += 32768 - pos % 32768
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        buf, pos = buf + data[pos + 7:pos + 7 + length], pos + 7 + length
        if kind in (1, 4):  # FULL or LAST chunk
            rec = pb.Record()
            rec.ParseFromString(buf)
            out.append(rec)
            buf = b""
    return out


@pytest.mark.skipif(importlib.util.find_spec("wandb") is None, reason="wandb not installed (aspo[wandb])")
def test_wandb_offline_run(tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))  # no login: offline, no network
    run_dir = fake_run_dir(tmp_path)
    feed(run_dir, "wandb")
    (path,) = glob.glob(str(run_dir / "wandb" / "offline-run-*" / "run-*.wandb"))
    deadline = time.time() + 60  # wandb-core may still be flushing the file after finish() returned
    records = wandb_records(path)
    while not any(r.WhichOneof("record_type") == "exit" for r in records):
        assert time.time() < deadline, "the offline run never got its exit record"
        time.sleep(0.2)
        records = wandb_records(path)
    history = [{i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in r.history.item}
               for r in records if r.WhichOneof("record_type") == "history"]
    assert [(h["_step"], h["aspo/entropy_mean"]) for h in history] == [(s, 1.0 if s < 4 else 0.3) for s in range(8)]
    summary = {i.key or "/".join(i.nested_key): json.loads(i.value_json)
               for r in records if r.WhichOneof("record_type") == "summary" for i in r.summary.update}
    assert "entropy_collapse fired at step 4" in summary["aspo/alerts/entropy_collapse"]
    config = {i.key: json.loads(i.value_json) for r in records if r.WhichOneof("record_type") == "run"
              for i in r.run.config.update}
    assert config["algo"] == "grpo"


def test_unknown_or_missing_tracker_is_one_line_before_anything_is_written(tmp_path):
    with pytest.raises(ConfigError, match="unknown --report-to tensorbored"):
        trackers.check_report_to("tensorbored")
    absent = [n for n, mod in trackers.BACKENDS.items() if importlib.util.find_spec(mod) is None]
    if not absent:
        pytest.skip("every tracker package is installed")
    out = subprocess.run([sys.executable, "-m", "aspo.cli", "train", "--preset", "tiny", "--out", str(tmp_path / "x"),
                          "--report-to", f"tensorboard,{absent[0]}"], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 2 and not (tmp_path / "x").exists()
    assert out.stderr.strip() == (f"aspo: error: --report-to {absent[0]} needs the {trackers.BACKENDS[absent[0]]} "
                                  f"package: pip install 'aspo[{trackers.EXTRAS[absent[0]]}]'")


def test_report_to_parsing():
    assert trackers.parse_report_to("none") == () and trackers.parse_report_to("") == ()
    assert trackers.parse_report_to(" TensorBoard , mlflow,mlflow") == ("tensorboard", "mlflow")
    assert trackers.parse_report_to("all") == tuple(trackers.BACKENDS)
    with pytest.raises(ConfigError):
        trackers.parse_report_to("none,wandb")
