import os
import shutil
import tempfile

# One warm-up cache per test session, never the user's ~/.cache; tests never touch a model hub.
_OWN_CACHE = None
if "ASPO_CACHE_DIR" not in os.environ:
    _OWN_CACHE = os.environ["ASPO_CACHE_DIR"] = tempfile.mkdtemp(prefix="aspo-test-cache-")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def pytest_sessionfinish(session, exitstatus):
    if _OWN_CACHE:  # each session made its own: do not leave one behind in /tmp per run
        shutil.rmtree(_OWN_CACHE, ignore_errors=True)
