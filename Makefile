# The two commands a new user needs:
#   make demo   set up .venv, then train GRPO and ASPO side by side and serve the live dashboard
#   make test   set up .venv with the test dependencies (and Debian's chromium), then run the test suite
.PHONY: setup setup-dev demo test
setup:
	bash scripts/setup.sh
setup-dev:
	bash scripts/setup.sh dev
	bash scripts/setup_browser.sh
demo: setup
	.venv/bin/aspo demo
test: setup-dev
	.venv/bin/python -m pytest -q
