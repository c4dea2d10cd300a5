"""`deferred_stop`: a stop signal inside the block waits for the block's end, then acts as it would have."""
from __future__ import annotations

import os
import signal

import pytest
import torch

from aspo.signals import deferred_stop, stop_on_termination


@pytest.fixture
def restore_handlers():
    saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    yield
    for s, h in saved.items():
        signal.signal(s, h)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_stop_inside_the_block_lands_after_the_file_is_whole(tmp_path, restore_handlers, sig):
    stop_on_termination()
    signal.signal(signal.SIGINT, signal.default_int_handler)
    path, finished = tmp_path / "state.pt", []
    with pytest.raises(KeyboardInterrupt):
        with deferred_stop():
            os.kill(os.getpid(), sig)
            torch.save({"w": torch.arange(100_000)}, path)  # would be torn by an immediate stop
            finished.append(True)
    assert finished == [True]
    assert torch.equal(torch.load(path)["w"], torch.arange(100_000))
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handlers are put back


def test_no_signal_no_effect(restore_handlers):
    before = signal.getsignal(signal.SIGTERM)
    with deferred_stop():
        pass
    assert signal.getsignal(signal.SIGTERM) is before


def test_an_error_inside_the_block_still_propagates(restore_handlers):
    with pytest.raises(ZeroDivisionError):
        with deferred_stop():
            1 / 0  # noqa: B018
