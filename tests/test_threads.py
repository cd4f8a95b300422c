"""torch's CPU threads wait briefly between operations (agent/__init__.py): the setting is in the
environment before torch loads, whichever package is imported first, and a user's own stays."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

PROBE = "import sys, os; import {mod}; print(os.environ.get('GOMP_SPINCOUNT'), 'torch' in sys.modules)"


@pytest.mark.parametrize("mod", ["agent", "policies", "agent.cli.main"])
def test_the_spin_count_is_set_before_torch_loads(mod):
    env = {k: v for k, v in os.environ.items() if k != "GOMP_SPINCOUNT"}
    out = subprocess.run([sys.executable, "-c", PROBE.format(mod=mod)], env=env, capture_output=True, text=True,
                         check=True).stdout.split()
    assert out == ["30000", "False"]


def test_a_users_spin_count_stays():
    env = {**os.environ, "GOMP_SPINCOUNT": "7"}
    out = subprocess.run([sys.executable, "-c", PROBE.format(mod="policies")], env=env, capture_output=True,
                         text=True, check=True).stdout.split()
    assert out == ["7", "False"]
