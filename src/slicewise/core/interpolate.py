"""Fill the slices between labelled ones by interpolating each class's shape: no model at all.

What 3D Slicer's "Fill between slices" and ITK-SNAP's interpolation give a person who painted a
structure on a few slices of a volume. Each class's signed distance (positive inside; background's
too) is interpolated linearly between consecutive labelled slices that both hold the class, and a
pixel takes the class it is most inside there (shape-based interpolation). A labelled slice
without a class says the class is absent there, so nothing of it is filled across that slice, and
nothing is filled beyond the first and the last labelled slice. Teach proposes from what a
pretrained encoder sees and reaches slices outside the labelled range; filling between follows
only the painted shapes, and for a small faint lesion between two painted slices it is often the
better proposal (``docs/teach.md``, *Volumes*).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence

import numpy as np
from scipy import ndimage

from slicewise.errors import SlicewiseError


def _signed_distance(mask: np.ndarray) -> np.ndarray:
    """Distance to the mask's boundary in pixels: positive inside, negative outside."""
    return (ndimage.distance_transform_edt(mask) - ndimage.distance_transform_edt(~mask)).astype(np.float32)


def check_fill_between(labels: np.ndarray, labelled: Sequence[int]) -> list[int]:
    """The labelled slice indices, sorted, once it is sure there is a gap between two of them to fill;
    a ``SlicewiseError`` with one sentence otherwise."""
    if labels.ndim != 3:
        raise SlicewiseError("Filling between slices needs a 3D labels layer (a stack of slices).")
    chosen = sorted({int(z) for z in labelled})
    if any(not 0 <= z < labels.shape[0] for z in chosen):
        raise SlicewiseError(f"The labelled slices must lie between 0 and {labels.shape[0] - 1}.")
    if len(chosen) < 2 or all(b - a < 2 for a, b in itertools.pairwise(chosen)):
        raise SlicewiseError("Label two slices with at least one unlabelled slice between them to fill between.")
    return chosen


def iter_fill_between(labels: np.ndarray, labelled: Sequence[int]) -> Iterator[tuple[int, np.ndarray]]:
    """``(slice index, filled labels)`` for each unlabelled slice between two labelled ones, in order.

    labels: (Z, H, W) class indices, 0 = background; only the ``labelled`` slices are read.
    """
    chosen = check_fill_between(labels, labelled)
    for below, above in itertools.pairwise(chosen):
        if above - below < 2:
            continue
        classes = sorted((set(np.unique(labels[below])) & set(np.unique(labels[above]))) - {0})
        if not classes:
            for z in range(below + 1, above):
                yield z, np.zeros(labels.shape[1:], dtype=labels.dtype)
            continue
        # background is everything but the kept classes: a class at only one end counts as background
        ends = [
            np.stack(
                [_signed_distance(~np.isin(labels[z], classes))] + [_signed_distance(labels[z] == c) for c in classes]
            )
            for z in (below, above)
        ]
        values = np.asarray([0, *classes], dtype=labels.dtype)
        for z in range(below + 1, above):
            t = (z - below) / (above - below)
            filled = values[((1 - t) * ends[0] + t * ends[1]).argmax(axis=0)]
            yield z, filled


def fill_between(labels: np.ndarray, labelled: Sequence[int]) -> np.ndarray:
    """A stack like ``labels`` holding the filled slices between the labelled ones, 0 elsewhere."""
    filled = np.zeros_like(labels)
    for z, plane in iter_fill_between(labels, labelled):
        filled[z] = plane
    return filled
