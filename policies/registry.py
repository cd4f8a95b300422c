"""Choose a policy by name or by checkpoint directory. Nothing is ever downloaded."""

from __future__ import annotations

from pathlib import Path

from policies.base import Policy, PolicyError
from policies.builtin import RandomPolicy, ScriptedPolicy
from policies.checkpoints import BUNDLED, PIXEL_SIZES, bundled_checkpoint, has_checkpoint

BUILTIN = ("scripted", "random")
__all__ = ["BUILTIN", "BUNDLED", "PIXEL_SIZES", "available_policies", "best_bundled_policy", "bundled_checkpoint",
           "bundled_success", "has_checkpoint", "load_policy"]

SUCCESS_BAR = 0.9


def bundled_success(name: str) -> float | None:
    """The closed-loop success measured for a bundled checkpoint (its ``eval.json``), if any: the
    worst size's mean over tasks, since the bar holds at every size."""
    import json

    f = bundled_checkpoint(name) / "eval.json"
    try:
        return float(json.loads(f.read_text())["min_over_sizes"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def best_bundled_policy(trained_only: bool = False) -> str:
    """The best bundled policy by measured success.

    A trained checkpoint is chosen only when its recorded evaluation reaches the success bar;
    otherwise the scripted expert (which needs a task with ground truth). ``trained_only``
    (live desktops, where there is no ground truth) returns the best trained checkpoint present.
    """
    present = [n for n in ("pixel-small", "pixel-tiny") if has_checkpoint(n)]
    scored = sorted(((bundled_success(n) or 0.0, n) for n in present), reverse=True)
    if trained_only:
        if not scored:
            raise PolicyError("no trained checkpoint is bundled; name one with --policy")
        return scored[0][1]
    if scored and scored[0][0] >= SUCCESS_BAR:
        return scored[0][1]
    return "scripted"


def available_policies() -> list[str]:
    return list(BUILTIN) + list(BUNDLED)


def load_policy(spec: str, *, seed: int = 0, device: str = "cpu") -> Policy:
    """``scripted``, ``random``, a bundled checkpoint by name (``pixel-<size>``, or any other folder
    in ``fixtures/checkpoints``), a checkpoint folder, or ``hf-vlm:<folder or shape>``."""
    if spec == "scripted":
        return ScriptedPolicy()
    if spec == "random":
        return RandomPolicy(seed=seed)
    if spec.startswith("hf-vlm:"):  # a local vision-language checkpoint or a random-weight shape
        from policies.hf_vlm import load_hf_vlm_policy

        return load_hf_vlm_policy(spec, device=device)
    path = Path(spec)
    if spec in BUNDLED or (path.is_dir() and (path / "config.json").is_file()):
        try:
            from transformers.utils import logging as hf_logging

            hf_logging.disable_progress_bar()  # a CLI's stderr is for its own one-line messages
            from policies.pixel import load_pixel_policy
        except ImportError as e:  # pragma: no cover - the model family is part of the package
            raise PolicyError(f"the pixel policy family is unavailable: {e}") from None
        return load_pixel_policy(spec, device=device)
    if path.exists():
        raise PolicyError(f"{spec}: not a checkpoint folder (no config.json inside)")
    raise PolicyError(f"unknown policy {spec!r}; choose one of {', '.join(available_policies())}, "
                      "a checkpoint folder or hf-vlm:<folder or shape>")
