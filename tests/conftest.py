import os
import tempfile

# One warm-up cache per test session, never the user's ~/.cache; tests never touch a model hub.
os.environ.setdefault("ASPO_CACHE_DIR", tempfile.mkdtemp(prefix="aspo-test-cache-"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
