# The two commands a new user needs:
#   make demo   set up .venv, then train GRPO and ASPO side by side and serve the live dashboard
#   make test   set up .venv with the test dependencies (and Debian's chromium) and .venv-verl (verl 0.9.1),
#               then run the test suite in .venv and the verl plug-in's tests in .venv-verl
# and for the edit-test loop:
#   make check  the suite without its slow and browser tests, on both cores (pytest-xdist, one test file per
#               worker so a file's fixtures are built once), keeping the tests' warm-ups in .cache/check-warmups
#               between runs (keyed like a user's cache, WARMUP_VERSION included); `make test` stays the whole
#               suite, from a fresh cache. One torch thread per worker (and per process a test starts): two
#               workers with torch's default two threads each oversubscribe the 2 cores, and the tiny models'
#               small matmuls then spend more time waiting on each other than computing (a 2-step tiny run
#               took 5.6 s instead of 2.0 s beside another)
.PHONY: setup setup-dev setup-verl demo test check
setup:
	bash scripts/setup.sh
setup-dev:
	bash scripts/setup.sh dev
	bash scripts/setup_browser.sh
setup-verl:
	bash scripts/setup_verl.sh
demo: setup
	.venv/bin/aspo demo
# verl pins transformers<5.11 and brings ray/tensordict: its test runs in its own venv. Both runs always run;
# make fails if either does.
test: setup-dev setup-verl
	s=0; .venv/bin/python -m pytest -q --ignore=tests/test_integration_verl.py || s=1; \
	 .venv-verl/bin/python -m pytest -q tests/test_integration_verl.py || s=1; exit $$s
check:
	bash scripts/setup.sh dev
	ASPO_CACHE_DIR="$${ASPO_CACHE_DIR:-$(CURDIR)/.cache/check-warmups}" OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 \
	 .venv/bin/python -m pytest -q -m "not slow and not browser" -n 2 --dist loadfile --ignore=tests/test_integration_verl.py
