"""Open big TIFF stacks and zarr arrays without reading them: a slice is read when it is indexed.

``open_lazy`` returns a read-only ``zarr.Array`` — over a TIFF through tifffile's zarr store
(one chunk per page, strip or tile, compressed or not), or a ``.zarr`` store itself — which
napari shows as a layer and ``take_slice`` reads one plane from, so a stack larger than memory
never has to fit in it. ``open_image`` is what the faces call: small TIFFs are read whole
(``read_image``), larger ones and every zarr store open lazily.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import tifffile

from slicewise.errors import ImageError, one_line
from slicewise.io.checks import check_decoded, check_plane, decoding, plane_of, regular_file
from slicewise.io.images import read_image, tiff_header

if TYPE_CHECKING:
    import zarr

__all__ = ["EAGER_LIMIT_BYTES", "LAZY_SUFFIXES", "is_lazy_path", "open_image", "open_lazy"]

LAZY_SUFFIXES = (".tif", ".tiff", ".zarr")
EAGER_LIMIT_BYTES = 256 * 2**20


def is_lazy_path(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a TIFF file or a zarr store (by suffix), which can open lazily."""
    return Path(path).suffix.lower() in LAZY_SUFFIXES


def open_lazy(path: str | os.PathLike) -> zarr.Array:
    """A TIFF's first series (full resolution) or a zarr array as a read-only ``zarr.Array``; nothing is read yet.

    A zarr group (e.g. OME-Zarr) gives its first array in name order, ``"0"``: full resolution.
    """
    import zarr  # here, not at module level: reading plain images (the predict path) never needs it

    path = Path(path)
    if not path.exists():
        raise ImageError(f"{path} does not exist; pass a TIFF file or a .zarr store.")
    with decoding(path, "a TIFF file or zarr store"):
        try:
            if path.suffix.lower() == ".zarr":
                node = zarr.open(path, mode="r")
            else:
                regular_file(path, "a TIFF file")
                shape, dtype, compressed = tiff_header(path)
                # lazily: the sizes must still be real and a slice must fit, but the whole need not
                check_decoded(path, shape, dtype.itemsize, plane=plane_of(shape), compressed=compressed, limit=None)
                node = zarr.open(tifffile.imread(path, aszarr=True, level=0), mode="r")
        except (OSError, ValueError, KeyError, RuntimeError) as error:  # what tifffile and zarr raise on foreign files
            raise ImageError(
                one_line(f"Cannot open {path.name} lazily ({error}); check that it is a TIFF or zarr file.")
            ) from error
        if isinstance(node, zarr.Group):
            names = sorted(node.array_keys())
            if not names:
                raise ImageError(f"The zarr group {path.name} holds no array; open the array inside it.")
            node = node[names[0]]
        if node.ndim < 2 or node.size == 0:
            raise ImageError(f"{path.name} holds no image (shape {tuple(node.shape)}); pass an image with pixels.")
        check_plane(path, *plane_of(node.shape))
    return node


def open_image(path: str | os.PathLike, *, eager_limit_bytes: int = EAGER_LIMIT_BYTES) -> np.ndarray | zarr.Array:
    """An image or stack as ``read_image`` gives it, but lazy for zarr stores and TIFFs over ``eager_limit_bytes``.

    The lazy array has ``shape``, ``dtype`` and ``ndim`` and reads only what is indexed.
    """
    path = Path(path)
    if not is_lazy_path(path):
        return read_image(path)
    array = open_lazy(path)
    if path.suffix.lower() == ".zarr" or array.nbytes > eager_limit_bytes:
        return array
    return read_image(path)
