"""The pixel-transformer policy family: ``pixel-tiny`` (~1M parameters), ``pixel-small`` (~5M),
``pixel-base`` (~20M), ``pixel-large`` (~80M).

A checkpoint is an ordinary Hugging Face model folder (``config.json`` + ``model.safetensors``).
Importing this package registers the config and model with the ``transformers`` Auto classes, so
``AutoModel.from_pretrained(folder)`` works without ``trust_remote_code``.
"""

from __future__ import annotations

from pathlib import Path

from transformers import AutoConfig, AutoModel

from policies.base import PolicyError
from policies.checkpoints import BUNDLED, checkpoint_dir
from policies.pixel.configuration import SIZES, TARGET_PARAMS, PixelConfig
from policies.pixel.grounding import TextCache
from policies.pixel.hardware import inference_dtype
from policies.pixel.modeling import PixelModel, PixelOutput
from policies.pixel.policy import PixelPolicy
from policies.pixel.processing import Preprocessor, VisualInputs, encode_text

try:
    AutoConfig.register(PixelConfig.model_type, PixelConfig)
    AutoModel.register(PixelConfig, PixelModel)
except ValueError:  # already registered (module reloaded)
    pass


def load_model(spec: str, device: str = "cpu") -> PixelModel:
    folder = checkpoint_dir(spec)
    if not (folder / "config.json").is_file():
        if spec in BUNDLED:
            raise PolicyError(
                f"no bundled checkpoint for {spec} (looked in {folder}); train one with "
                f"`dw train SESSIONS --model-size {spec} --out DIR` and pass DIR as the policy"
            )
        raise PolicyError(f"{folder}: not a checkpoint folder (no config.json inside)")
    try:
        model = PixelModel.from_pretrained(str(folder)).float()  # bundled small is stored in fp16
    except (OSError, ValueError) as e:
        raise PolicyError(f"{folder}: cannot load the checkpoint: {e}") from None
    return model.to(device).eval()


def load_pixel_policy(spec: str, device: str = "cpu", dtype: str = "auto", runtime: str = "auto") -> PixelPolicy:
    """A bundled checkpoint (by name) or a checkpoint folder.

    ``dtype``: see :func:`policies.pixel.hardware.inference_dtype`; ``runtime``:
    :func:`policies.pixel.runtime.choose_runtime`."""
    model = load_model(spec, device=device)
    name = spec if spec in BUNDLED else (model.config.size_name or "pixel") + f"@{Path(spec).name}"
    try:
        return PixelPolicy(model, name=name, device=device, dtype=dtype, runtime=runtime)
    except (ValueError, RuntimeError) as e:
        raise PolicyError(f"{spec}: {e}") from None


__all__ = [
    "SIZES", "TARGET_PARAMS", "PixelConfig", "PixelModel", "PixelOutput", "PixelPolicy",
    "Preprocessor", "TextCache", "VisualInputs", "checkpoint_dir", "encode_text", "inference_dtype", "load_model",
    "load_pixel_policy",
]
