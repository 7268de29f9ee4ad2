# The only entry point: every target sets up the venv it needs.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test test-editors test-claude lint docs bench stress federation-demo clean install uninstall

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
	$(BIN)/ruff check src tests bench scripts
	$(BIN)/ruff format --check src tests bench scripts
	$(BIN)/mypy

# The ops section of docs/protocol.md, from the op table (tests/unit/test_op_table.py
# fails when it is out of date).
docs: $(STAMP)
	$(BIN)/python scripts/gen_protocol_docs.py

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
# SERVICE=no skips the service step (also skipped, with a message, when there is no
# systemd user manager: containers, WSL, ssh without lingering). TOWN=DIR: another town.
UNAME      := $(shell uname -s)
ifeq ($(UNAME),Darwin)
DATA_DIR   ?= $(HOME)/Library/Application Support/gastownd
else
DATA_DIR   ?= $(or $(XDG_DATA_HOME),$(HOME)/.local/share)/gastownd
endif
BIN_DIR    ?= $(HOME)/.local/bin
UNIT_DIR   := $(or $(XDG_CONFIG_HOME),$(HOME)/.config)/systemd/user
COMMANDS   := gastownd gastownctl gastown-hook
SERVICE    ?= yes

install:
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "need Python 3.11+ on PATH"; exit 2; }
	$(PYTHON) -m venv "$(DATA_DIR)/venv"
	"$(DATA_DIR)/venv/bin/python" -m pip install --quiet --upgrade pip
	@# With uvloop (the "fast" extra) when the platform has it.
	"$(DATA_DIR)/venv/bin/python" -m pip install --quiet '.[fast,federation]' || "$(DATA_DIR)/venv/bin/python" -m pip install --quiet '.[federation]'
	mkdir -p "$(BIN_DIR)"
	for c in $(COMMANDS); do ln -sf "$(DATA_DIR)/venv/bin/$$c" "$(BIN_DIR)/$$c"; done
ifeq ($(SERVICE),no)
	@echo "service step skipped (SERVICE=no): start the daemon yourself (gastownd run$(if $(TOWN), --town-root $(TOWN)))"
else
	@if [ "$(UNAME)" != Darwin ] && ! systemctl --user show-environment >/dev/null 2>&1; then \
		echo "no systemd user manager here (a container, WSL, or ssh without lingering): service step skipped."; \
		echo "  start the daemon yourself (gastownd run), or enable lingering (loginctl enable-linger) and run: gastownd install-service"; \
	else \
		echo '"$(DATA_DIR)/venv/bin/gastownd" install-service $(if $(TOWN),--town-root "$(TOWN)")'; \
		"$(DATA_DIR)/venv/bin/gastownd" install-service $(if $(TOWN),--town-root "$(TOWN)"); \
	fi
endif
	@echo "installed; make sure $(BIN_DIR) is on PATH; then: gastownctl install-hooks"

uninstall:
	@# First the Claude Code hooks that run files of the venv about to go (only those).
	-[ ! -x "$(DATA_DIR)/venv/bin/gastownctl" ] || \
		"$(DATA_DIR)/venv/bin/gastownctl" install-hooks --uninstall --only-under "$(DATA_DIR)/venv"
ifeq ($(UNAME),Darwin)
	-for p in "$(HOME)"/Library/LaunchAgents/com.gastown.gastownd.*.plist; do \
		[ -e "$$p" ] && launchctl bootout "gui/$$(id -u)" "$$p"; rm -f "$$p"; done
else
	@systemctl --user disable --now gastownd.socket gastownd.service 2>/dev/null || true
	@# The template's instances (gastownd@<escaped town>.socket), running or enabled: never
	@# the template itself, which has nothing to disable.
	-for u in $$( { systemctl --user list-units --all --plain --no-legend 'gastownd@*' 2>/dev/null \
			| awk '{print $$1}'; ls "$(UNIT_DIR)"/*.wants 2>/dev/null; } \
			| grep -E '^gastownd@.+\.(socket|service)$$' | sort -u); do \
		systemctl --user disable --now "$$u"; done
	rm -f "$(UNIT_DIR)"/gastownd.socket "$(UNIT_DIR)"/gastownd.service \
	      "$(UNIT_DIR)"/gastownd@.socket "$(UNIT_DIR)"/gastownd@.service
	rm -rf "$(UNIT_DIR)"/gastownd@?*.service.d
	@systemctl --user daemon-reload 2>/dev/null || true
endif
	for c in $(COMMANDS); do rm -f "$(BIN_DIR)/$$c"; done
	rm -rf "$(DATA_DIR)/venv"
	@echo "uninstalled (towns and their .gastownd state are left as they were)"

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
