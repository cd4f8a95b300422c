"""Checkpoints of config version 1 (flat ``match_*`` fields, every part's weights at the top level)
into version 2 (``grounding`` and ``refiners`` nested, their weights inside their modules). The
network is the same: a converted checkpoint gives the same outputs (tests/test_checkpoint_conversion.py).

Version-1 features no bundled checkpoint used are not carried (tile reads with shifted copies,
``match_per_phase``, ``match_at``, reader stems as the policy's glimpse stem): such a checkpoint is
refused with the reason, and stays loadable by the code of its time (git history).
"""

from __future__ import annotations

import json
from pathlib import Path

from policies.pixel.configuration import CONFIG_VERSION, LEGACY_KEYS

# version-1 weight prefixes -> version 2 (first match wins), per part
_GROUNDING = {"reader.": "grounding.reader.", "match_tq.": "grounding.tq.", "match_tk.": "grounding.tk.",
              "match_gate.": "grounding.gate.", "match_temp.": "grounding.temp.",
              "match_slot_q": "grounding.slot_q", "match_slot_k.": "grounding.slot_k.",
              "match_in.": "grounding.inp.", "match_kernel": "grounding.kernel", "match_mix.": "grounding.mix.",
              "match_order_in.": "grounding.order_in."}
_REFINERS = {"where": {"match_where_in.": "inp.", "match_where_off.": "off."},
             "snap": {"snap_in.": "inp.", "snap_state.": "state.", "snap_out.": "out.", "snap_conf.": "conf.",
                      "snap_gate.": "gate.", "snap_shift.": "shift."},
             "cells": {"cell_conv.": "conv.", "cell_k.": "k.", "cell_q.": "q.", "cell_pos": "pos",
                       "cell_fine.": "fine.", "cell_trust.": "trust."}}


class ConvertError(ValueError):
    """A checkpoint this converter cannot carry over."""


def upgrade_config(old: dict) -> dict:
    """A version-1 ``config.json`` dict -> version 2's."""
    if old.get("config_version", 1) >= CONFIG_VERSION:
        raise ConvertError(f"config_version {old['config_version']}: already current")
    new = {k: v for k, v in old.items() if not (k.startswith("match") or k in LEGACY_KEYS)}
    if old.get("stem", "patch") != "patch":
        raise ConvertError(f"glimpse stem {old['stem']!r}: version 2 keeps the patch stem only")
    new["actions"] = {"types": old.get("action_types"), "buttons": old.get("buttons"), "keys": old.get("keys"),
                      "scroll_max": old.get("scroll_max"), "wait_bins": old.get("wait_bins")}
    new["actions"] = {k: v for k, v in new["actions"].items() if v is not None}
    refiners = []
    if old.get("match"):
        for flag in ("match_per_phase", "match_at"):
            if old.get(flag):
                raise ConvertError(f"{flag}: an experiment no bundled checkpoint kept, not carried into version 2")
        if not old.get("match_window"):
            raise ConvertError("tile reads (no match_window): not carried into version 2; read windows only")
        g = {"window": old["match_window"], "window_px": old.get("match_window_px") or old["match_window"],
             "slots": old.get("match_slots", 4), "reach": old.get("match_reach", 0),
             "kernels": old.get("match_kernels", 4)}
        if old.get("match_drawn"):
            g |= {"kind": "template", "styles": old["match_drawn"]}
        else:
            g |= {"kind": "reader", "order": bool(old.get("match_order")),
                  "reader": {"stem": old.get("match_stem", "reader"), "channels": old.get("match_channels", 32),
                             "head": old.get("match_head", 512)}}
        new["grounding"] = g
        if old.get("match_where"):
            refiners.append({"kind": "where", "near": bool(old.get("match_where_near"))})
        if old.get("match_snap"):
            refiners.append({"kind": "snap"})
    if old.get("cell_offsets"):
        refiners.append({"kind": "cells"})
    new["refiners"] = refiners
    new["config_version"] = CONFIG_VERSION
    return new


def rename_weights(state: dict, config: dict) -> dict:
    """A version-1 state dict -> version 2's, for the upgraded ``config``."""
    table = dict(_GROUNDING)
    for i, r in enumerate(config.get("refiners", [])):
        table |= {old: f"refiners.{i}.{new}" for old, new in _REFINERS[r["kind"]].items()}
    out = {}
    for name, tensor in state.items():
        new = next((v + name[len(k):] for k, v in table.items() if name.startswith(k)), name)
        out[new] = tensor
    return out


def convert(src: str | Path, dst: str | Path) -> Path:
    """Convert the checkpoint folder ``src`` into ``dst`` (created; the other files are copied)."""
    import shutil

    from safetensors.torch import load_file, save_file

    src, dst = Path(src), Path(dst)
    try:
        old = json.loads((src / "config.json").read_text())
    except (OSError, ValueError) as e:
        raise ConvertError(f"{src}: no readable config.json ({e})") from None
    new = upgrade_config(old)
    state = rename_weights(load_file(str(src / "model.safetensors")), new)
    dst.mkdir(parents=True, exist_ok=True)
    for f in src.iterdir():
        if f.is_file() and f.name not in ("config.json", "model.safetensors"):
            shutil.copy2(f, dst / f.name)
    from policies.pixel.configuration import PixelConfig
    from policies.pixel.modeling import PixelModel

    config = PixelConfig(**{k: v for k, v in new.items() if k not in ("model_type", "transformers_version")})
    model = PixelModel(config)  # every weight must find its module
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ConvertError(f"{src}: weights left over after conversion: missing {missing[:5]}, "
                           f"unexpected {unexpected[:5]}")
    save_file(state, str(dst / "model.safetensors"), metadata={"format": "pt"})
    config.save_pretrained(dst)
    return dst
