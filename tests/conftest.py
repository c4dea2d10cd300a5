import os
import shutil
import tempfile

import pytest

# One warm-up cache per test session, never the user's ~/.cache; tests never touch a model hub.
_OWN_CACHE = None
if "ASPO_CACHE_DIR" not in os.environ:
    _OWN_CACHE = os.environ["ASPO_CACHE_DIR"] = tempfile.mkdtemp(prefix="aspo-test-cache-")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def pytest_sessionfinish(session, exitstatus):
    if _OWN_CACHE:  # each session made its own: do not leave one behind in /tmp per run
        shutil.rmtree(_OWN_CACHE, ignore_errors=True)


@pytest.fixture(scope="session")
def real_grpo_aspo(tmp_path_factory):
    """GRPO and ASPO trained by the real trainer, 5 small steps each (tests/real_runs.py says why that size); shared
    by every test that needs the mechanism on real runs."""
    from real_runs import train_grpo_and_aspo
    return train_grpo_and_aspo(tmp_path_factory.mktemp("real"))
