# digital-worker: `make demo` and `make test` work on a fresh machine (Debian/Ubuntu, Python >= 3.11).
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PYTHON ?= python3
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: all setup system demo test test-fast lint checkpoint clean

all: test

# System packages the runtime and its tests use, installed only where missing.
system:
	@need=""; \
	command -v Xvfb >/dev/null     || need="$$need xvfb"; \
	command -v ffprobe >/dev/null  || need="$$need ffmpeg"; \
	command -v xdotool >/dev/null  || need="$$need xdotool"; \
	command -v xdpyinfo >/dev/null || need="$$need x11-utils"; \
	command -v chromium >/dev/null || need="$$need chromium"; \
	command -v chromedriver >/dev/null || need="$$need chromium-driver"; \
	[ -f /usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf ] || need="$$need fonts-liberation"; \
	[ -f /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ] || need="$$need fonts-dejavu-core"; \
	$(PYTHON) -c 'import tkinter' 2>/dev/null || need="$$need python3-tk"; \
	$(PYTHON) -c 'import ensurepip' 2>/dev/null || need="$$need python3-venv"; \
	command -v gtk3-widget-factory >/dev/null || need="$$need gtk-3-examples"; \
	command -v dbus-daemon >/dev/null || need="$$need dbus"; \
	[ -x /usr/libexec/at-spi-bus-launcher ] || need="$$need at-spi2-core"; \
	/usr/bin/python3 -c 'import gi; gi.require_version("Gtk", "3.0"); gi.require_version("Atspi", "2.0")' 2>/dev/null \
	  || need="$$need python3-gi gir1.2-gtk-3.0 gir1.2-atspi-2.0 python3-pyatspi"; \
	if [ -n "$$need" ]; then \
	  echo "installing system packages:$$need"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$need >/dev/null; \
	fi

# torch is pinned and installed first: it takes the CPU build the machine already has.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[test,ray,miniwob,mcp,export,openai,vlm]"
	touch $@

setup: system $(VENV)/.installed

demo: setup
	$(VENV)/bin/dw demo --policy pixel-small --tasks classic --theme classic --font default

test: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/pytest -q -rs --durations=15

test-fast: setup
	$(VENV)/bin/pytest -q -m "not slow"

lint: setup
	$(VENV)/bin/ruff check .

# Regenerate a bundled checkpoint from its recipe (recipes/NAME.toml: its [data] commands make the
# sessions first), e.g. make checkpoint NAME=pixel-tiny OUT=runs/pixel-tiny
checkpoint: setup
	$(VENV)/bin/dw train --recipe recipes/$(NAME).toml --out $(OUT)

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache runs
