"""Segmentation metrics: overlap pooled over a split (the study's convention) and per image.

Dice, IoU, precision and recall are computed from pixel counts with background excluded:
pooled ("micro") sums the counts of every image and foreground class before dividing, as
Borst & Kounev report them; per image they are averaged over the foreground classes present
in the reference or the prediction. HD95 and NSD come from MONAI's metrics (Euclidean, in
pixels, since the 2D sets carry no spacing); NSD counts boundary within ``NSD_TOLERANCE_PX``.
Empty cases follow the usual conventions: nothing predicted and nothing there scores 1
(HD95 0); one side empty scores 0 (HD95 = the image diagonal).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
import torch

from slicewise.core.metrics import dice_from_counts

NSD_TOLERANCE_PX = 2.0
OVERLAP = ("dice", "iou", "precision", "recall")
DISTANCE = ("hd95", "nsd")


@dataclass(frozen=True)
class Counts:
    """Foreground pixel counts of one image, summed over foreground classes."""

    true_positive: int
    false_positive: int
    false_negative: int

    def __add__(self, other: Counts) -> Counts:
        return Counts(
            self.true_positive + other.true_positive,
            self.false_positive + other.false_positive,
            self.false_negative + other.false_negative,
        )

    def scores(self) -> dict[str, float]:
        tp, fp, fn = self.true_positive, self.false_positive, self.false_negative
        return {
            "dice": dice_from_counts(tp, 2 * tp + fp + fn),
            "iou": _ratio(tp, tp + fp + fn),
            "precision": _ratio(tp, tp + fp),
            "recall": _ratio(tp, tp + fn),
        }


def _ratio(numerator: int, denominator: int) -> float:
    return numerator / denominator if denominator else 1.0


def class_counts(predicted: np.ndarray, reference: np.ndarray, cls: int) -> Counts:
    p, r = predicted == cls, reference == cls
    tp = int(np.count_nonzero(p & r))
    return Counts(tp, int(np.count_nonzero(p)) - tp, int(np.count_nonzero(r)) - tp)


def image_scores(predicted: np.ndarray, reference: np.ndarray, num_classes: int) -> tuple[dict[str, float], Counts]:
    """Every metric of one (H, W) label map against its reference, and its pooled counts."""
    if predicted.shape != reference.shape:
        raise ValueError(f"prediction {predicted.shape} and reference {reference.shape} differ in shape")
    per_class, total = [], Counts(0, 0, 0)
    for cls in range(1, num_classes):
        counts = class_counts(predicted, reference, cls)
        total = total + counts
        if counts.true_positive + counts.false_positive + counts.false_negative:
            per_class.append({**counts.scores(), **_distances(predicted == cls, reference == cls)})
    if not per_class:  # nothing to find and nothing found: a perfect image
        return {"dice": 1.0, "iou": 1.0, "precision": 1.0, "recall": 1.0, "hd95": 0.0, "nsd": 1.0}, total
    return {key: float(np.mean([c[key] for c in per_class])) for key in OVERLAP + DISTANCE}, total


def _distances(predicted: np.ndarray, reference: np.ndarray) -> dict[str, float]:
    """HD95 (pixels) and NSD at the tolerance, from MONAI, for one binary class map."""
    if not predicted.any() or not reference.any():
        return {"hd95": math.hypot(*predicted.shape), "nsd": 0.0}
    from monai.metrics import compute_hausdorff_distance, compute_surface_dice

    y_pred = torch.from_numpy(np.stack([~predicted, predicted])[np.newaxis])
    y = torch.from_numpy(np.stack([~reference, reference])[np.newaxis])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        hd95 = compute_hausdorff_distance(y_pred, y, percentile=95)
        nsd = compute_surface_dice(y_pred, y, class_thresholds=[NSD_TOLERANCE_PX])
    return {"hd95": float(hd95.item()), "nsd": float(nsd.item())}


@dataclass(frozen=True)
class SplitScores:
    """The metrics of one split: pooled overlap, per-image means, and every image's scores."""

    pooled: dict[str, float]
    per_image_mean: dict[str, float]
    per_image: dict[str, dict[str, float]]


def split_scores(per_image: dict[str, dict[str, float]], counts: Counts) -> SplitScores:
    """Pool the counts and average every metric over the images."""
    means = {key: float(np.mean([s[key] for s in per_image.values()])) for key in OVERLAP + DISTANCE}
    return SplitScores(pooled=counts.scores(), per_image_mean=means, per_image=per_image)
