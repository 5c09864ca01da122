"""Find the shared sample data (``../shared/data``) and build the demo's stack from it."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from slicewise.errors import SlicewiseError
from slicewise.io.images import read_image

DATA_ENV = "SLICEWISE_DATA"


def shared_data_dir() -> Path:
    """``$SLICEWISE_DATA``, else the first ``shared/data`` beside the working tree or a parent."""
    if os.environ.get(DATA_ENV):
        candidate = Path(os.environ[DATA_ENV])
        if candidate.is_dir():
            return candidate
        raise SlicewiseError(f"${DATA_ENV} points to {candidate}, which is not a folder.")
    for start in (Path.cwd(), Path(__file__).resolve()):
        for parent in (start, *start.parents):
            candidate = parent / "shared" / "data"
            if (candidate / "kvasir_seg").is_dir():
                return candidate
    raise SlicewiseError(
        f"The sample data was not found; put the shared/ folder beside the repository or set ${DATA_ENV}."
    )


def split_stems(dataset: Path, split: str = "test") -> list[str]:
    """The stems of one split of a shared 2D dataset."""
    return list(json.loads((dataset / "split.json").read_text())[split])


def sample_stack(
    dataset: str = "kvasir_seg", split: str = "test", size: int = 256
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """A split's images and masks padded into stacks: (N, S, S[, 3]) images and (N, S, S) masks.

    The shared 2D sets have varied sizes (long side 256); zero-padding bottom/right puts them
    in one stack so the demo can scroll through slices.
    """
    root = shared_data_dir() / dataset
    stems = split_stems(root, split)
    first = read_image(root / "images" / f"{stems[0]}.png")
    images = np.zeros((len(stems), size, size, *first.shape[2:]), dtype=first.dtype)
    masks = np.zeros((len(stems), size, size), dtype=np.uint8)
    for i, stem in enumerate(stems):
        image = read_image(root / "images" / f"{stem}.png")
        mask = read_image(root / "masks" / f"{stem}.png")
        images[i, : image.shape[0], : image.shape[1]] = image
        masks[i, : mask.shape[0], : mask.shape[1]] = mask
    return images, masks, stems
