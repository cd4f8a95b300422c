"""Bundled checkpoints converted to config version 2 act as they did before (version 1), and the
converter refuses what version 2 does not carry.

The reference (tests/data/reference_actions.json) was recorded by tests/make_reference_actions.py
with the version-1 code and checkpoints (commit c932cc8), PyTorch in float32: every frame of both
fixture sessions, with the actions so far as history. Tolerance: the same action types, keys and
buttons, and every coordinate within 1e-4 of the screen (a 5K screen's half pixel); measured: at
most 2.4e-8. pixel-small's entry was recorded again on 2026-12-05 from the weights bundled that day
(made with the version-2 code), so it now guards that later code keeps their actions.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from policies.pixel.convert import ConvertError, rename_weights, upgrade_config

REFERENCE = json.loads((Path(__file__).parent / "data" / "reference_actions.json").read_text())
TOLERANCE = 1e-4


@pytest.mark.parametrize("checkpoint", sorted(REFERENCE))
def test_converted_checkpoint_acts_as_before(checkpoint):
    from tests.make_reference_actions import record

    got = record(checkpoint)
    for session, rows in REFERENCE[checkpoint].items():
        assert len(got[session]) == len(rows)
        for i, (want, have) in enumerate(zip(rows, got[session], strict=True)):
            assert [a["type"] for a in have] == [a["type"] for a in want], (session, i)
            for a, b in zip(want, have, strict=True):
                for k, v in a.items():
                    if isinstance(v, float):
                        assert abs(b[k] - v) <= TOLERANCE, (session, i, k, v, b[k])
                    else:
                        assert b[k] == v, (session, i, k)


V1 = {"hidden_size": 128, "num_layers": 3, "num_heads": 4, "max_glimpses": 24, "stem_channels": 16,
      "action_types": ["move", "click"], "match": True, "match_window": [80, 48], "match_reach": 3,
      "match_drawn": [["LiberationSans-Regular.ttf", 10, False]], "match_snap": True, "cell_offsets": True,
      "match_where": False, "match_at": False, "stem": "patch"}


def test_upgrade_nests_grounding_and_refiners():
    new = upgrade_config(V1)
    assert new["config_version"] == 2
    assert new["grounding"]["kind"] == "template" and new["grounding"]["reach"] == 3
    assert new["grounding"]["styles"] == V1["match_drawn"]
    assert [r["kind"] for r in new["refiners"]] == ["snap", "cells"]
    assert new["actions"] == {"types": ["move", "click"]}
    assert not any(k.startswith("match") for k in new)
    state = rename_weights({"match_tq.weight": 1, "snap_gate.bias": 2, "cell_pos": 3, "reader.stem.0.weight": 4,
                            "ptr_q.weight": 5}, new)
    assert state == {"grounding.tq.weight": 1, "refiners.0.gate.bias": 2, "refiners.1.pos": 3,
                     "grounding.reader.stem.0.weight": 4, "ptr_q.weight": 5}


@pytest.mark.parametrize("change, reason", [({"match_at": True}, "match_at"), ({"match_per_phase": True}, "match_per_phase"),
                                            ({"match_window": None}, "tile reads"), ({"stem": "reader"}, "stem")])
def test_upgrade_refuses_what_version_2_does_not_carry(change, reason):
    with pytest.raises(ConvertError, match=reason):
        upgrade_config({**V1, **change})


def test_a_version_1_config_is_refused_with_the_converter_named():
    from policies.pixel import PixelConfig

    with pytest.raises(ValueError, match="convert_checkpoint"):
        PixelConfig(**V1)
