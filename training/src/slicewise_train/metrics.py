"""Segmentation metrics: the one implementation lives in ``slicewise.core.metrics`` (the widget's
Evaluate section and ``slicewise evaluate`` use it too); this module re-exports it for training.

Overlap is pooled over a split (the study's convention) and averaged per image; HD95 and NSD are
in pixels here, since the 2D sets carry no spacing; NSD counts boundary within ``NSD_TOLERANCE_PX``.
"""

from __future__ import annotations

from slicewise.core.metrics import (
    DISTANCE,
    NSD_TOLERANCE_PX,
    OVERLAP,
    Counts,
    SplitScores,
    class_counts,
    dice_from_counts,
    image_scores,
    split_scores,
)

__all__ = [
    "DISTANCE",
    "NSD_TOLERANCE_PX",
    "OVERLAP",
    "Counts",
    "SplitScores",
    "class_counts",
    "dice_from_counts",
    "image_scores",
    "split_scores",
]
