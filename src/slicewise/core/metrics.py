"""Overlap metrics for label maps, background excluded (the study's convention).

``dice_from_counts`` is the one Dice of slicewise and slicewise-train (per image, pooled over a
split, during training's validation): 2 x intersection over the sum of both sizes, 1.0 when both
are empty.
"""

from __future__ import annotations

import numpy as np


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
