# The only entry point: every target sets up the venv it needs.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test test-editors test-claude lint bench stress federation-demo clean install uninstall

$(BIN)/python:
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "need Python 3.11+ on PATH (or set PYTHON=...)"; exit 2; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@# Bytecode up front: some environments set PYTHONDONTWRITEBYTECODE.
	$(BIN)/python -m compileall -q src >/dev/null
	@touch $(STAMP)

run: $(STAMP)
	$(BIN)/gastownd run

# Runs the editor tests too (tests/editors/), or reports them skipped when nvim or emacs is
# not on PATH.
test: $(STAMP)
	$(BIN)/python -m pytest -q

# The Neovim plugin and the Emacs package, headless, against a real daemon.
test-editors: $(STAMP)
	$(BIN)/python -m pytest -q tests/editors

# The real Claude Code (pinned, installed once per machine with npm under ~/.cache) driven
# end to end through the installed hooks against a scripted model; skipped without npm.
test-claude: $(STAMP)
	$(BIN)/python -m pytest -q tests/claude

lint: $(STAMP)
	$(BIN)/ruff check src tests
	$(BIN)/ruff format --check src tests
	$(BIN)/mypy

bench: $(STAMP)
	@# Sources changed since the install would otherwise be compiled at every start.
	$(BIN)/python -m compileall -q src >/dev/null
	$(BIN)/python -m bench

# A local nats-server and two daemons (laptop, tower) of one town, until Ctrl-C.
federation-demo: $(STAMP)
	$(BIN)/python scripts/federation_demo.py

stress: $(STAMP)
	$(BIN)/python -m pytest -q tests/reliability --stress

# Installed copy: its own venv under the user's data directory, commands on PATH.
UNAME      := $(shell uname -s)
ifeq ($(UNAME),Darwin)
DATA_DIR   ?= $(HOME)/Library/Application Support/gastownd
else
DATA_DIR   ?= $(or $(XDG_DATA_HOME),$(HOME)/.local/share)/gastownd
endif
BIN_DIR    ?= $(HOME)/.local/bin
COMMANDS   := gastownd gastownctl gastown-hook

install:
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "need Python 3.11+ on PATH"; exit 2; }
	$(PYTHON) -m venv "$(DATA_DIR)/venv"
	"$(DATA_DIR)/venv/bin/python" -m pip install --quiet --upgrade pip
	@# With uvloop (the "fast" extra) when the platform has it.
	"$(DATA_DIR)/venv/bin/python" -m pip install --quiet '.[fast]' || "$(DATA_DIR)/venv/bin/python" -m pip install --quiet .
	mkdir -p "$(BIN_DIR)"
	for c in $(COMMANDS); do ln -sf "$(DATA_DIR)/venv/bin/$$c" "$(BIN_DIR)/$$c"; done
	"$(DATA_DIR)/venv/bin/gastownd" install-service $(if $(TOWN),--town-root "$(TOWN)")
	@echo "installed; make sure $(BIN_DIR) is on PATH"

uninstall:
ifeq ($(UNAME),Darwin)
	-for p in "$(HOME)"/Library/LaunchAgents/com.gastown.gastownd.*.plist; do \
		[ -e "$$p" ] && launchctl bootout "gui/$$(id -u)" "$$p"; rm -f "$$p"; done
else
	-systemctl --user disable --now gastownd.socket gastownd.service 2>/dev/null
	-for u in "$(or $(XDG_CONFIG_HOME),$(HOME)/.config)"/systemd/user/gastownd@*.socket; do \
		[ -e "$$u" ] && systemctl --user disable --now "$$(basename "$$u")"; done
	rm -f "$(or $(XDG_CONFIG_HOME),$(HOME)/.config)"/systemd/user/gastownd.socket \
	      "$(or $(XDG_CONFIG_HOME),$(HOME)/.config)"/systemd/user/gastownd.service \
	      "$(or $(XDG_CONFIG_HOME),$(HOME)/.config)"/systemd/user/gastownd@.socket \
	      "$(or $(XDG_CONFIG_HOME),$(HOME)/.config)"/systemd/user/gastownd@.service
	-systemctl --user daemon-reload 2>/dev/null
endif
	for c in $(COMMANDS); do rm -f "$(BIN_DIR)/$$c"; done
	rm -rf "$(DATA_DIR)/venv"
	@echo "uninstalled (towns and their .gastownd state are left as they were)"

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
