# Two commands matter: `make run` and `make test`. Both install into .venv when needed.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint types unit bench install clean browser lock

# requirements.lock pins every package's exact version (pip constraints): the same install everywhere.
$(STAMP): pyproject.toml requirements.lock
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c requirements.lock -e '.[dev]'
	@touch $(STAMP)

# After a dependency change in pyproject.toml: resolve afresh in a scratch venv and pin the result.
lock:
	rm -rf .venv-lock && $(PYTHON) -m venv .venv-lock
	.venv-lock/bin/python -m pip install --quiet -e '.[dev]'
	{ echo "# Exact versions for reproducible installs (pip constraints): make and docker/Dockerfile install with"; \
	  echo "#   pip install -c requirements.lock -e '.[dev]'"; \
	  echo "# Regenerate after changing dependencies in pyproject.toml: make lock"; \
	  .venv-lock/bin/python -m pip freeze --exclude-editable | grep -v '^lethe'; } > requirements.lock
	rm -rf .venv-lock

install: $(STAMP)

run: $(STAMP)
	$(BIN)/lethe serve

lint: $(STAMP)
	$(BIN)/ruff check app jobs tests bench alembic

types: $(STAMP)
	$(BIN)/mypy

test: lint types browser
	$(BIN)/pytest

# The console's browser tests drive Debian's chromium (Playwright's own download is not used).
browser:
	@test -x /usr/bin/chromium || { \
	  if [ "$$(id -u)" = 0 ]; then \
	    apt-get install -y -q chromium chromium-driver >/dev/null 2>&1 || \
	    { apt-get update -q >/dev/null && apt-get install -y -q chromium chromium-driver >/dev/null; }; \
	  else echo "the browser tests need Debian's chromium: sudo apt-get install chromium chromium-driver" >&2; exit 1; fi; }
	@test -x /usr/bin/chromium || { echo "chromium could not be installed: apt-get install chromium chromium-driver" >&2; exit 1; }

bench: $(STAMP)
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
