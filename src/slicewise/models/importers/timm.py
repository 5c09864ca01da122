"""timm folders (``config.json`` with ``architecture`` + ``model.safetensors``, as timm's ``save_for_hf`` writes).

A timm model is an image classifier: it has no segmentation head, so it neither loads as a
segmenter nor converts. What slicewise supports is using it as the pretrained encoder of the
``timm_unet`` architecture, which ``read`` says in its refusal and ``slicewise inspect`` shows.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from slicewise.errors import CheckpointError
from slicewise.models.importers import Imported, ImportOptions, read_config_json


def _config(path: Path) -> dict[str, Any] | None:
    config = read_config_json(path)
    return config if config is not None and "architecture" in config and "model_type" not in config else None


def detect(path: Path) -> bool:
    return _config(path) is not None and any((path / f).is_file() for f in ("model.safetensors", "pytorch_model.bin"))


def describe(path: Path) -> dict[str, Any]:
    """What the folder holds, for ``slicewise inspect``."""
    config = _config(path)
    return {
        "format": "timm",
        "architecture": config["architecture"],
        "num_classes": config.get("num_classes"),
        "input": (config.get("pretrained_cfg") or {}).get("input_size"),
    }


def read(path: Path, options: ImportOptions) -> Imported:
    name = _config(path)["architecture"]
    weights = next(path / f for f in ("model.safetensors", "pytorch_model.bin") if (path / f).is_file())
    raise CheckpointError(
        f"{path.name} is timm's image classifier {name}, which has no segmentation head; use it as the pretrained "
        f"encoder of a timm_unet (make_spec('timm_unet', encoder={name!r}), build_model(spec, pretrained="
        f"'{weights}')) and train the decoder."
    )
