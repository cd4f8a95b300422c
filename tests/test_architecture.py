"""The pixel family's shape: a small core config, a forward with no feature flags, a short
`dw train`, no benchmark knowledge inside policies/, user docs of bounded length."""

from __future__ import annotations

import ast
import inspect
import subprocess
import sys
import textwrap
from pathlib import Path

from policies.pixel.configuration import PixelConfig
from policies.pixel.modeling import PixelModel

ROOT = Path(__file__).resolve().parent.parent


def test_config_takes_at_most_25_parameters():
    params = [p for p in inspect.signature(PixelConfig.__init__).parameters.values()
              if p.name != "self" and p.kind is not p.VAR_KEYWORD]
    assert len(params) <= 25, [p.name for p in params]


def test_forward_reads_no_optional_part_of_the_config():
    """Every config attribute forward reads is a core field: the optional parts are modules."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(PixelModel.forward)))
    read = {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name)
            and n.value.id in ("c", "config")}
    core = set(inspect.signature(PixelConfig.__init__).parameters) - {"self", "kwargs", "grounding", "refiners"}
    assert read <= core, read - core
    assert not [n for n in ast.walk(tree) if isinstance(n, ast.If) and "grounding" in ast.unparse(n.test)]


def test_dw_train_lists_at_most_12_options():
    out = subprocess.run([sys.executable, "-m", "agent.cli", "train", "--help"], capture_output=True, text=True,
                         check=True, cwd=ROOT).stdout
    options = [line for line in out.splitlines() if line.startswith("  -")]
    assert 0 < len(options) <= 12, options


def test_policies_hold_no_benchmark_knowledge():
    for f in (ROOT / "policies").rglob("*.py"):
        assert "miniwob" not in f.read_text().lower(), f


def test_user_docs_are_short():
    for name in ("policies.md", "miniwob.md"):
        assert len((ROOT / "docs" / name).read_text().splitlines()) <= 300, name
