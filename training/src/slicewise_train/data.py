"""The shared 2D dataset layout: ``images/<stem>.png``, ``masks/<stem>.png``, ``split.json``."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from slicewise.errors import SlicewiseError, TrainingDataError
from slicewise.io.images import read_image, read_label_map
from slicewise.io.samples import split_stems as read_split
from slicewise_train.config import TrainConfig


@dataclass(frozen=True)
class Sample:
    stem: str
    image: np.ndarray  # (H, W) or (H, W, 3), as stored
    mask: np.ndarray  # (H, W) uint8 label map


def load_split(root: str | Path, split: str) -> list[Sample]:
    """Every image and mask of one split, in memory (the shared sets are a few MB each)."""
    return load_stems(root, read_split(Path(root), split))


def load_stems(root: str | Path, stems: list[str]) -> list[Sample]:
    """The images and masks with these stems, checked: both present, readable, 2D, of one size."""
    root = Path(root)
    samples = []
    for stem in stems:
        image_file, mask_file = root / "images" / f"{stem}.png", root / "masks" / f"{stem}.png"
        for file in (image_file, mask_file):
            if not file.is_file():
                raise TrainingDataError(
                    f"{file.relative_to(root)} is missing in {root.name}; every stem in split.json needs an image "
                    "and a mask PNG."
                )
        image, mask = read_image(image_file), read_label_map(mask_file)
        if image.ndim not in (2, 3) or mask.ndim != 2 and not (mask.ndim == 3 and mask.shape[2] == 1):
            raise TrainingDataError(
                f"{stem} in {root.name} has an image of shape {image.shape} and a mask of shape {mask.shape}; "
                "expected a 2D image and a single-channel 2D mask."
            )
        mask = mask.reshape(mask.shape[:2])
        if image.shape[:2] != mask.shape:
            raise TrainingDataError(
                f"The image and mask of {stem} in {root.name} differ in size ({image.shape[1]}×{image.shape[0]} and "
                f"{mask.shape[1]}×{mask.shape[0]} px); a mask must cover its image pixel for pixel."
            )
        if not np.issubdtype(mask.dtype, np.integer) and mask.dtype != bool:
            raise TrainingDataError(f"The mask of {stem} in {root.name} is {mask.dtype}; masks hold integer labels.")
        samples.append(Sample(stem=stem, image=image, mask=mask.astype(np.uint8, copy=False)))
    return samples


def fold_stems(stems: list[str], folds: int, fold: int, seed: int) -> tuple[list[str], list[str]]:
    """(train, val) stems for one fold of a seeded k-fold split of ``stems``."""
    order = sorted(stems)
    np.random.default_rng(seed).shuffle(order)
    held_out = set(order[fold::folds])
    return [s for s in stems if s not in held_out], [s for s in stems if s in held_out]


def load_training_split(config: TrainConfig) -> tuple[list[Sample], list[Sample]]:
    """The (train, val) samples of every dataset of ``config``: the fixed split or one fold.

    Datasets must exist and agree on channels; one sentence says which does not.
    """
    train: list[Sample] = []
    val: list[Sample] = []
    for root in config.data:
        if not Path(root).is_dir():
            raise SlicewiseError(f"The dataset folder {root} does not exist.")
        if config.folds:
            stems = read_split(Path(root), "train") + read_split(Path(root), "val")
            train_stems, val_stems = fold_stems(stems, config.folds, config.fold, config.seed)
            train += load_stems(root, train_stems)
            val += load_stems(root, val_stems)
        else:
            train += load_split(root, "train")
            val += load_split(root, "val")
    channel_counts = {1 if s.image.ndim == 2 else s.image.shape[2] for s in train + val}
    if len(channel_counts) > 1:
        raise SlicewiseError(
            f"The datasets {', '.join(Path(d).name for d in config.data)} mix grayscale and RGB images; "
            "train on datasets of one kind."
        )
    if not val:
        raise SlicewiseError("The validation split is empty; early stopping and the learning-rate grid need it.")
    return train, val


def manifest_entry(root: str | Path) -> dict:
    """The dataset's entry in the shared ``manifest.json`` beside it (task, classes, …), or ``{}``."""
    root = Path(root)
    manifest = root.parent / "manifest.json"
    if manifest.is_file():
        try:
            entries = json.loads(manifest.read_text()).get("datasets_2d", [])
        except (ValueError, AttributeError, RecursionError):
            raise TrainingDataError(f"{manifest} is not a valid dataset manifest; fix or remove it.") from None
        for entry in entries if isinstance(entries, list) else []:
            if isinstance(entry, dict) and entry.get("id") == root.name:
                return entry
    return {}


def class_names(root: str | Path, num_classes: int) -> tuple[str, ...]:
    """Class names from the shared ``manifest.json`` beside the dataset, else ``class_k``."""
    classes = manifest_entry(root).get("classes", {})
    if len(classes) == num_classes:
        return tuple(classes[str(k)] for k in range(num_classes))
    return ("background",) + tuple(f"class_{k}" for k in range(1, num_classes))
