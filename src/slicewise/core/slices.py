"""Take one 2D slice out of 2D/3D/RGB/ND data, and put a slice result back.

Indexing happens before any conversion, so a dask or zarr stack only reads the slice it needs.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from slicewise.core.types import SliceRef
from slicewise.errors import ImageError


def is_rgb(shape: tuple[int, ...], rgb: bool | None = None) -> bool:
    """Whether the last axis of an array of ``shape`` is colour: ``rgb`` when given (a napari layer's
    own flag, a caller's choice), else the one guess — a last axis of 3 or 4 on 3 or more axes.

    The API, the CLI and the widget all decide with this; an RGB image into a grayscale model is then
    the model's one-sentence input error, never a stack of thin slices.
    """
    if rgb is not None:
        return bool(rgb)
    return len(shape) >= 3 and shape[-1] in (3, 4)


def spatial_ndim(shape: tuple[int, ...], rgb: bool) -> int:
    """Number of spatial axes: all but a trailing RGB(A) channel axis."""
    return len(shape) - 1 if rgb else len(shape)


def slice_ref_from_point(shape: tuple[int, ...], point: tuple[float, ...], rgb: bool) -> SliceRef:
    """The slice under a data-space point (napari's dims point mapped into the layer)."""
    leading = spatial_ndim(shape, rgb) - 2
    if leading < 0:
        raise ImageError(f"An image of shape {shape} has fewer than two spatial axes; nothing to segment.")
    coords = tuple(point)[-spatial_ndim(shape, rgb) :][:leading] if leading else ()
    index = tuple(int(np.clip(round(c), 0, shape[i] - 1)) for i, c in enumerate(coords))
    return SliceRef(index=index)


def take_slice(data: Any, ref: SliceRef, *, rgb: bool = False) -> np.ndarray:
    """The (H, W) or (H, W, C) slice of ``data`` at ``ref`` as a numpy array (only it is read)."""
    leading = spatial_ndim(tuple(data.shape), rgb) - 2
    if leading < 0:
        raise ImageError(f"An image of shape {tuple(data.shape)} has fewer than two spatial axes; nothing to segment.")
    if len(ref.index) != leading:
        raise ImageError(
            f"{ref.describe()} does not address an image of shape {tuple(data.shape)}: "
            f"it needs {leading} leading index(es)."
        )
    for axis, (i, n) in enumerate(zip(ref.index, data.shape, strict=False)):
        if not 0 <= i < n:
            raise ImageError(f"Index {i} is outside axis {axis} of length {n}.")
    return np.asarray(data[ref.index] if ref.index else data)


def put_slice(target: np.ndarray, ref: SliceRef, values: np.ndarray) -> None:
    """Write a slice result into ``target`` (shape = spatial shape, or a leading channel axis + it)."""
    plane = target[(..., *ref.index, slice(None), slice(None))] if ref.index else target
    plane[...] = values
