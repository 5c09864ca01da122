"""Evaluate a checkpoint on a split through slicewise's own prediction path."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

import slicewise
from slicewise.core.metrics import dice_score, overlap_counts
from slicewise_train.data import load_split


@dataclass(frozen=True)
class Evaluation:
    """Dice pooled over all pixels of the split (the study's convention) and per image."""

    dataset: str
    split: str
    pooled_dice: float
    mean_dice: float
    per_image: dict[str, float]

    def as_dict(self) -> dict[str, object]:
        return {
            "dataset": self.dataset,
            "split": self.split,
            "images": len(self.per_image),
            "dice": round(self.pooled_dice, 4),
            "mean_dice": round(self.mean_dice, 4),
        }


def evaluate(model: slicewise.LoadedModel | str | Path, data: str | Path, split: str = "test") -> Evaluation:
    """Predict every image of ``split`` with ``slicewise.predict`` and score it against its mask."""
    model = slicewise.load_model(model)
    num_classes = model.spec.output.num_classes
    intersection = total = 0
    per_image = {}
    for sample in load_split(data, split):
        labels = slicewise.predict(model, sample.image).labels
        i, t = overlap_counts(labels, sample.mask, num_classes)
        intersection, total = intersection + i, total + t
        per_image[sample.stem] = dice_score(labels, sample.mask, num_classes)
    return Evaluation(
        dataset=Path(data).name,
        split=split,
        pooled_dice=2 * intersection / total if total else 1.0,
        mean_dice=float(np.mean(list(per_image.values()))),
        per_image=per_image,
    )
