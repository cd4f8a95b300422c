"""Where bundled checkpoints live (``fixtures/checkpoints/<name>``), and which names mean one."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent / "fixtures" / "checkpoints"
PIXEL_SIZES = ("pixel-tiny", "pixel-small", "pixel-base", "pixel-large")


def bundled_checkpoint(name: str) -> Path:
    """The folder of the bundled checkpoint ``name``."""
    return ROOT / name


def bundled_names() -> tuple[str, ...]:
    """Names that mean a bundled checkpoint: the model sizes (bundled or not) and every folder
    under ``fixtures/checkpoints`` holding a ``config.json``."""
    found = sorted(p.name for p in ROOT.glob("*") if (p / "config.json").is_file()) if ROOT.is_dir() else []
    return PIXEL_SIZES + tuple(n for n in found if n not in PIXEL_SIZES)


BUNDLED = bundled_names()


def checkpoint_dir(spec: str) -> Path:
    """The folder of a bundled checkpoint (by name) or of a checkpoint path."""
    return bundled_checkpoint(spec) if spec in BUNDLED else Path(spec)


def has_checkpoint(spec: str) -> bool:
    """Weights are there: a bundled name whose checkpoint is bundled, or a checkpoint folder."""
    return (checkpoint_dir(spec) / "config.json").is_file()
