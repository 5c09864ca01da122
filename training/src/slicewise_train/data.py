"""The shared 2D dataset layout: ``images/<stem>.png``, ``masks/<stem>.png``, ``split.json``."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from slicewise.errors import SlicewiseError


@dataclass(frozen=True)
class Sample:
    stem: str
    image: np.ndarray  # (H, W) or (H, W, 3), as stored
    mask: np.ndarray  # (H, W) uint8 label map


def read_split(root: Path, split: str) -> list[str]:
    """The stems of one split (``train``, ``val`` or ``test``) from ``split.json``."""
    split_file = root / "split.json"
    if not split_file.exists():
        raise SlicewiseError(f"{root} has no split.json; expected images/, masks/ and split.json.")
    splits = json.loads(split_file.read_text())
    if split not in splits:
        raise SlicewiseError(
            f"{split_file} has no {split!r} split; it has {', '.join(k for k in splits if k != 'seed')}."
        )
    return list(splits[split])


def load_split(root: str | Path, split: str) -> list[Sample]:
    """Every image and mask of one split, in memory (the shared sets are a few MB each)."""
    root = Path(root)
    samples = []
    for stem in read_split(root, split):
        image = np.asarray(Image.open(root / "images" / f"{stem}.png"))
        mask = np.asarray(Image.open(root / "masks" / f"{stem}.png"))
        samples.append(Sample(stem=stem, image=image, mask=mask))
    return samples


def class_names(root: str | Path, num_classes: int) -> tuple[str, ...]:
    """Class names from the shared ``manifest.json`` beside the dataset, else ``class_k``."""
    root = Path(root)
    manifest = root.parent / "manifest.json"
    if manifest.exists():
        for entry in json.loads(manifest.read_text()).get("datasets_2d", []):
            if entry.get("id") == root.name and len(entry.get("classes", {})) == num_classes:
                return tuple(entry["classes"][str(k)] for k in range(num_classes))
    return ("background",) + tuple(f"class_{k}" for k in range(1, num_classes))
