"""Segmentation metrics for label maps, background excluded (the study's convention): the one copy
that the widget, the CLI and slicewise-train (``slicewise_train.metrics`` re-exports it) all use.

Dice, IoU, precision and recall come from pixel counts. Pooled ("micro") figures sum the counts
of every image (slice) and foreground class before dividing, as Borst & Kounev report them; per
image they are averaged over the foreground classes present in the reference or the prediction.
HD95 and NSD come from MONAI's metrics (Euclidean), in the units of ``spacing`` — the (row,
column) size of a pixel — or in pixels when there is none; NSD counts boundary within
``tolerance`` (default ``NSD_TOLERANCE_PX`` pixels, in the same units). Empty cases follow the
usual conventions: nothing predicted and nothing there scores 1 (HD95 0); one side empty scores 0
(HD95 = the image diagonal). ``dice_from_counts`` is the one Dice (also training's validation).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

NSD_TOLERANCE_PX = 2.0
OVERLAP = ("dice", "iou", "precision", "recall")
DISTANCE = ("hd95", "nsd")
METRICS = OVERLAP + DISTANCE
PERFECT = {"dice": 1.0, "iou": 1.0, "precision": 1.0, "recall": 1.0, "hd95": 0.0, "nsd": 1.0}


def overlap_counts(predicted: np.ndarray, reference: np.ndarray, num_classes: int) -> tuple[int, int]:
    """(intersection, predicted + reference) pixel counts summed over classes 1..K-1."""
    intersection = total = 0
    for cls in range(1, num_classes):
        pred_mask = predicted == cls
        ref_mask = reference == cls
        intersection += int(np.count_nonzero(pred_mask & ref_mask))
        total += int(np.count_nonzero(pred_mask)) + int(np.count_nonzero(ref_mask))
    return intersection, total


def dice_from_counts(intersection: int, total: int) -> float:
    """Dice from pixel counts: ``intersection`` and ``total`` = predicted + reference; 1.0 when both are empty."""
    return 2 * intersection / total if total else 1.0


def dice_score(predicted: np.ndarray, reference: np.ndarray, num_classes: int = 2) -> float:
    """Foreground Dice of one label map; 1.0 when both are empty."""
    return dice_from_counts(*overlap_counts(predicted, reference, num_classes))


@dataclass(frozen=True)
class Counts:
    """Foreground pixel counts of one image (or class), summed over foreground classes."""

    true_positive: int
    false_positive: int
    false_negative: int

    def __add__(self, other: Counts) -> Counts:
        return Counts(
            self.true_positive + other.true_positive,
            self.false_positive + other.false_positive,
            self.false_negative + other.false_negative,
        )

    @property
    def empty(self) -> bool:
        """Nothing predicted and nothing in the reference."""
        return not (self.true_positive or self.false_positive or self.false_negative)

    def scores(self) -> dict[str, float]:
        tp, fp, fn = self.true_positive, self.false_positive, self.false_negative
        return {
            "dice": dice_from_counts(tp, 2 * tp + fp + fn),
            "iou": _ratio(tp, tp + fp + fn),
            "precision": _ratio(tp, tp + fp),
            "recall": _ratio(tp, tp + fn),
        }


NO_COUNTS = Counts(0, 0, 0)


def _ratio(numerator: int, denominator: int) -> float:
    return numerator / denominator if denominator else 1.0


def class_counts(predicted: np.ndarray, reference: np.ndarray, cls: int) -> Counts:
    p, r = predicted == cls, reference == cls
    tp = int(np.count_nonzero(p & r))
    return Counts(tp, int(np.count_nonzero(p)) - tp, int(np.count_nonzero(r)) - tp)


def default_tolerance(spacing: Sequence[float] | None) -> float:
    """NSD's tolerance: ``NSD_TOLERANCE_PX`` pixels, in the units of ``spacing`` (its coarser side)."""
    return NSD_TOLERANCE_PX * (max(spacing) if spacing is not None else 1.0)


def class_scores(
    predicted: np.ndarray,
    reference: np.ndarray,
    cls: int,
    *,
    spacing: Sequence[float] | None = None,
    tolerance: float | None = None,
) -> tuple[dict[str, float], Counts]:
    """Every metric of one foreground class on one (H, W) label map, and its counts.

    spacing: (row, column) pixel size; HD95 and the NSD ``tolerance`` are in its units (pixels when None).
    """
    counts = class_counts(predicted, reference, cls)
    if counts.empty:
        return dict(PERFECT), counts
    distances = _distances(predicted == cls, reference == cls, spacing, tolerance)
    return {**counts.scores(), **distances}, counts


def image_scores(
    predicted: np.ndarray,
    reference: np.ndarray,
    num_classes: int,
    *,
    spacing: Sequence[float] | None = None,
    tolerance: float | None = None,
) -> tuple[dict[str, float], Counts]:
    """Every metric of one (H, W) label map against its reference (the mean over the foreground classes
    present in either), and its pooled counts."""
    if predicted.shape != reference.shape:
        raise ValueError(f"prediction {predicted.shape} and reference {reference.shape} differ in shape")
    per_class, total = [], NO_COUNTS
    for cls in range(1, num_classes):
        scores, counts = class_scores(predicted, reference, cls, spacing=spacing, tolerance=tolerance)
        total = total + counts
        if not counts.empty:
            per_class.append(scores)
    return mean_over_classes(per_class), total


def mean_over_classes(per_class: Sequence[dict[str, float]]) -> dict[str, float]:
    """The per-image figure: every metric averaged over the classes present; perfect when none is."""
    if not per_class:  # nothing to find and nothing found: a perfect image
        return dict(PERFECT)
    return {key: float(np.mean([c[key] for c in per_class])) for key in METRICS}


def _distances(
    predicted: np.ndarray, reference: np.ndarray, spacing: Sequence[float] | None, tolerance: float | None
) -> dict[str, float]:
    """HD95 and NSD at the tolerance, from MONAI, for one binary class map (in the units of ``spacing``)."""
    if not predicted.any() or not reference.any():
        sizes = predicted.shape if spacing is None else [n * s for n, s in zip(predicted.shape, spacing, strict=True)]
        return {"hd95": math.hypot(*sizes), "nsd": 0.0}
    import torch
    from monai.metrics import compute_hausdorff_distance, compute_surface_dice

    y_pred = torch.from_numpy(np.stack([~predicted, predicted])[np.newaxis])
    y = torch.from_numpy(np.stack([~reference, reference])[np.newaxis])
    physical = None if spacing is None else [float(s) for s in spacing]
    tolerance = default_tolerance(spacing) if tolerance is None else tolerance
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        hd95 = compute_hausdorff_distance(y_pred, y, percentile=95, spacing=physical)
        nsd = compute_surface_dice(y_pred, y, class_thresholds=[tolerance], spacing=physical)
    return {"hd95": float(hd95.item()), "nsd": float(nsd.item())}


@dataclass(frozen=True)
class SplitScores:
    """The metrics of one split: pooled overlap, per-image means, and every image's scores."""

    pooled: dict[str, float]
    per_image_mean: dict[str, float]
    per_image: dict[str, dict[str, float]]


def split_scores(per_image: dict[str, dict[str, float]], counts: Counts) -> SplitScores:
    """Pool the counts and average every metric over the images."""
    means = {key: float(np.mean([s[key] for s in per_image.values()])) for key in METRICS}
    return SplitScores(pooled=counts.scores(), per_image_mean=means, per_image=per_image)
