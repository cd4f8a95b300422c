"""docs/api.md: its three examples run as they stand, and the names it lists are the packages' exports."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOC = (ROOT / "docs" / "api.md").read_text()
EXAMPLES = re.findall(r"```python\n(.*?)```", DOC, re.S)


def test_three_examples():
    assert len(EXAMPLES) == 3


@pytest.mark.parametrize("code", EXAMPLES, ids=["run-agent", "iterate-session", "evaluate"])
def test_example_runs(code):
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.strip()


def test_public_names_are_exported():
    import agent
    import capture
    import policies

    table = DOC[DOC.index("## Public names"):]
    for pkg in (agent, policies, capture):
        row = next(line for line in table.splitlines() if line.startswith(f"| `{pkg.__name__}` |"))
        names = re.findall(r"`(\w+)`", row.split("|")[2])
        assert set(names) == set(pkg.__all__), pkg.__name__
        for name in names:
            assert getattr(pkg, name) is not None


def test_dw_version():
    from importlib.metadata import version

    r = subprocess.run([sys.executable, "-m", "agent.cli", "--version"], cwd=ROOT, capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0 and r.stdout.strip() == f"dw (digital-worker) {version('digital-worker')}"
