"""Choose a policy by name or by checkpoint directory. Nothing is ever downloaded."""

from __future__ import annotations

from pathlib import Path

from policies.base import Policy, PolicyError
from policies.builtin import RandomPolicy, ScriptedPolicy

BUILTIN = ("scripted", "random")
PIXEL_SIZES = ("pixel-tiny", "pixel-small", "pixel-base", "pixel-large")


def bundled_checkpoint(name: str) -> Path:
    """Where a bundled checkpoint lives: ``fixtures/checkpoints/<name>`` beside the package."""
    return Path(__file__).resolve().parent.parent / "fixtures" / "checkpoints" / name


def best_bundled_policy() -> str:
    """The best bundled policy: the largest trained checkpoint present, else the scripted expert."""
    for name in ("pixel-small", "pixel-tiny"):
        if (bundled_checkpoint(name) / "config.json").is_file():
            return name
    return "scripted"


def available_policies() -> list[str]:
    return list(BUILTIN) + list(PIXEL_SIZES)


def load_policy(spec: str, *, seed: int = 0, device: str = "cpu") -> Policy:
    """``scripted``, ``random``, ``pixel-<size>`` (the bundled checkpoint) or a checkpoint folder."""
    if spec == "scripted":
        return ScriptedPolicy()
    if spec == "random":
        return RandomPolicy(seed=seed)
    path = Path(spec)
    if spec in PIXEL_SIZES or (path.is_dir() and (path / "config.json").is_file()):
        try:
            from policies.pixel import load_pixel_policy
        except ImportError as e:  # pragma: no cover - the model family is part of the package
            raise PolicyError(f"the pixel policy family is unavailable: {e}") from None
        return load_pixel_policy(spec, device=device)
    if path.exists():
        raise PolicyError(f"{spec}: not a checkpoint folder (no config.json inside)")
    raise PolicyError(f"unknown policy {spec!r}; choose one of {', '.join(available_policies())} or a checkpoint folder")
