"""The token files' page checksums, verified on a background thread so that a large cold log directory
does not hold up the dashboard's first page: nothing unverified is ever served, each file is read
once however many threads ask, and the problems list catches up when the check ends."""
from __future__ import annotations

import threading

import pytest

from aspo_dashboard import data
from logs_helpers import flip, make_synthetic_run
from logs_schema import catalog, queries
from apptest_helpers import messages, open_page


@pytest.fixture
def damaged(tmp_path):
    """Two runs; one token file of `grpo` has flipped bytes (its footer intact: only the CRCs tell)."""
    make_synthetic_run(tmp_path / "grpo", "grpo", steps=4, seqs_per_step=32, mean_len=30, compact_every=None)
    make_synthetic_run(tmp_path / "aspo", "aspo", steps=4, seqs_per_step=32, mean_len=30, compact_every=None)
    bad = tmp_path / "grpo" / "tokens" / "step-00000002-rank0.parquet"
    flip(bad, "ratio")
    return tmp_path, bad


def token_files(root):
    return sorted(root.glob("*/tokens/*.parquet"))


def started(root) -> bool:
    return (str(root), "tokens") in catalog._LATER


def wait_for_checks():
    for worker in list(catalog._LATER.values()):
        worker.join(timeout=60)


def test_check_later_counts_every_unverified_token_file_then_verifies_them_in_the_background(damaged):
    root, bad = damaged
    files = token_files(root)
    assert queries.unchecked_token_files(root) == (len(files), sum(f.stat().st_size for f in files))
    assert not started(root)  # asked without a threshold: counted, nothing started
    # deferred: the damaged token file is not known yet, so it is not listed (nor verified here)
    assert not queries.problems(root, defer_tokens=True)["path"].eq(str(bad)).any()
    assert queries.unchecked_token_files(root) == (len(files), sum(f.stat().st_size for f in files))
    queries.unchecked_token_files(root, check_above_bytes=1)  # starts the thread
    wait_for_checks()
    assert queries.unchecked_token_files(root) == (0, 0)
    probs = queries.problems(root, defer_tokens=True)
    assert probs["path"].tolist() == [str(bad)] and "checksum" in probs["reason"].iloc[0]
    assert probs.equals(queries.problems(root))  # the same list as checking everything in the foreground


def test_below_the_threshold_nothing_starts_and_a_rewritten_file_counts_again(damaged):
    root, _ = damaged
    files, size = queries.unchecked_token_files(root, check_above_bytes=1 << 40)
    assert files == len(token_files(root)) and not started(root)
    queries.problems(root)  # verifies everything in the foreground
    assert queries.unchecked_token_files(root) == (0, 0)
    token_files(root)[0].write_bytes(token_files(root)[0].read_bytes())  # same bytes, a new mtime
    assert queries.unchecked_token_files(root)[0] == 1


def test_each_file_is_verified_once_however_many_threads_ask(damaged, monkeypatch):
    """The background check and four token queries, all cold at once: one _inspect per file, and
    every query gets the same answer as a sequential one (the damaged file left out)."""
    root, bad = damaged
    calls, lock = [], threading.Lock()
    real = catalog._inspect

    def counted(path, *args):
        with lock:
            calls.append(path)
        return real(path, *args)

    monkeypatch.setattr(catalog, "_inspect", counted)
    results, start = [], threading.Barrier(5)

    def query():
        start.wait()
        results.append(len(queries.step_tokens(root, "grpo", 2)) + len(queries.step_tokens(root, "grpo", 1)))

    threads = [threading.Thread(target=query) for _ in range(4)]
    for t in threads:
        t.start()
    start.wait()
    queries.unchecked_token_files(root, check_above_bytes=0)
    for t in threads:
        t.join(timeout=60)
    wait_for_checks()
    tokens = [p for p in calls if "/tokens/" in p]
    assert sorted(tokens) == sorted(map(str, token_files(root)))  # each exactly once
    sequential = len(queries.step_tokens(root, "grpo", 1))  # step 2's file is damaged: never served
    assert results == [sequential] * 4 and sequential > 0


def test_dashboard_says_it_is_checking_then_lists_the_damaged_file(damaged, monkeypatch):
    """A slow disk, modelled by a gate on the token files' checks: the Runs page draws without waiting
    for them, says they are being verified, and lists the damaged one once they are."""
    root, bad = damaged
    monkeypatch.setattr(data, "CHECK_LATER_BYTES", 1)  # these small logs count as large
    gate, real = threading.Event(), catalog._inspect

    def slow(path, table, *args):
        if table == "tokens":
            assert gate.wait(timeout=60)
        return real(path, table, *args)

    monkeypatch.setattr(catalog, "_inspect", slow)
    at = open_page(root, "runs", monkeypatch)  # would time out if the page waited for a token file
    captions = " ".join(c.value for c in at.caption)
    assert f"Verifying the page checksums of {len(token_files(root))} token file(s)" in captions
    assert "log file(s) were skipped" not in messages(at)
    assert data.watch_signature(str(root)).endswith("|checking")
    gate.set()
    wait_for_checks()
    data.watch_state.clear()  # its 1 s cache: the live watcher sees the change on its next tick
    assert data.watch_signature(str(root)).endswith("|")  # so the watcher reruns the page, once
    checked = open_page(root, "runs", monkeypatch)
    assert "1 log file(s) were skipped" in messages(checked)
    assert "Verifying the page checksums" not in " ".join(c.value for c in checked.caption)
