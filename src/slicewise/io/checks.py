"""Checks every reader makes before it decodes: image files are untrusted input.

A reader first asks ``regular_file`` (a pipe or a device would block or stream forever), then reads
only the header and asks ``check_decoded`` whether the sizes it states fit slicewise's limits and
the file itself (a small file cannot hold gigabytes, however it is compressed), and only then
decodes — inside ``decoding``, which turns whatever the decoding library raises on a damaged file
into one ``ImageError`` sentence.
"""

from __future__ import annotations

import os
import struct
import tokenize
import zlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from math import prod
from pathlib import Path

from slicewise.errors import ImageError, SlicewiseError, one_line

__all__ = [
    "DECODE_ERRORS",
    "MAX_COMPRESSION_RATIO",
    "MAX_DECODED_BYTES",
    "MAX_PLANE_PIXELS",
    "check_decoded",
    "check_plane",
    "decoding",
    "plane_of",
    "regular_file",
]

MAX_PLANE_PIXELS = 4096 * 4096  # the core's per-slice limit (slicewise.core.preprocess.MAX_SLICE_PIXELS)
MAX_DECODED_BYTES = 4 * 2**30  # what one read may decode into memory; bigger stacks open lazily
MAX_COMPRESSION_RATIO = 4096  # deflate tops out near 1032:1, LZW near 2730:1: beyond this a header lies

# what image decoders (Pillow, tifffile, imagecodecs, zarr, nibabel, pynrrd, pydicom) raise on damaged files
DECODE_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    EOFError,
    ValueError,
    TypeError,
    KeyError,
    IndexError,
    AttributeError,
    ZeroDivisionError,
    OverflowError,
    MemoryError,
    SyntaxError,
    RecursionError,
    NotImplementedError,
    RuntimeError,
    AssertionError,
    struct.error,
    zlib.error,
    tokenize.TokenError,  # numpy parses a .npy header as a Python literal
)


def _decode_errors() -> tuple[type[BaseException], ...]:
    """``DECODE_ERRORS`` plus the libraries' own exception classes that derive from ``Exception`` directly."""
    extra: list[type[BaseException]] = []
    try:
        from PIL import Image

        extra.append(Image.DecompressionBombError)
    except ImportError:  # Pillow is a dependency; this only keeps the module importable without it
        pass
    try:
        from nibabel.filebasedimages import ImageFileError
        from nibabel.spatialimages import HeaderDataError, ImageDataError

        extra += [HeaderDataError, ImageDataError, ImageFileError]
    except ImportError:
        pass
    try:
        from pydicom.errors import BytesLengthException, InvalidDicomError

        extra += [InvalidDicomError, BytesLengthException]
    except ImportError:
        pass
    try:
        from nrrd.errors import NRRDError

        extra.append(NRRDError)
    except ImportError:
        pass
    return DECODE_ERRORS + tuple(extra)


def regular_file(path: str | os.PathLike, what: str = "an image file") -> Path:
    """``path`` if it is a regular file; a missing path, a folder, a pipe or a device is one ``ImageError``."""
    path = Path(path)
    if not path.exists():
        raise ImageError(f"{path} does not exist; pass {what}.")
    if path.is_dir():
        raise ImageError(f"{path} is a folder; pass {what}.")
    if not path.is_file():
        raise ImageError(f"{path} is not a regular file (a pipe or a device); pass {what}.")
    return path


def check_plane(path: Path, height: int, width: int) -> None:
    """Refuse slices beyond ``MAX_PLANE_PIXELS`` before one is read (their decoding alone could exhaust memory)."""
    if int(height) * int(width) > MAX_PLANE_PIXELS:
        raise ImageError(
            f"{path.name} has {int(width)}×{int(height)} px slices, more than slicewise's limit of "
            f"{MAX_PLANE_PIXELS // 1_000_000} megapixels per slice; crop or downsample it first."
        )


def plane_of(shape: Sequence[int]) -> tuple[int, int]:
    """The (H, W) of one slice of an array of ``shape``: a last axis of 3 or 4 on 3+ axes is colour."""
    shape = tuple(int(n) for n in shape)
    if len(shape) >= 3 and shape[-1] in (3, 4):
        return shape[-3], shape[-2]
    return (shape[-2], shape[-1]) if len(shape) >= 2 else (1, shape[0] if shape else 0)


def check_decoded(
    path: Path,
    shape: Sequence[int],
    itemsize: int,
    *,
    plane: Sequence[int] | None = None,
    compressed: bool = True,
    limit: int | None = MAX_DECODED_BYTES,
    offset: int = 0,
) -> None:
    """Refuse a header whose sizes cannot be real or would not fit, before anything is decoded.

    shape, itemsize: what the header says the data is. plane: the (H, W) of one slice, checked
    against ``MAX_PLANE_PIXELS`` (default: the last two axes; ``plane_of`` for colour).
    compressed: whether the data may be smaller on disk than in memory (up to
    ``MAX_COMPRESSION_RATIO``); uncompressed data must fit in the file after ``offset``.
    limit: the most bytes one read may decode (None for a lazy open).
    """
    shape = [int(n) for n in shape]
    if any(n < 0 for n in shape):
        raise ImageError(f"{path.name} states a negative size {tuple(shape)} in its header; the file is damaged.")
    if prod(shape) == 0 or len(shape) < 2:
        raise ImageError(f"{path.name} holds no image (shape {tuple(shape)}); pass an image with pixels.")
    check_plane(path, *(plane if plane is not None else shape[-2:]))
    nbytes = prod(shape) * max(1, int(itemsize))
    size = path.stat().st_size
    room = max(0, size - offset) * (MAX_COMPRESSION_RATIO if compressed else 1)
    if nbytes > room + (64 * 1024 if compressed else 0):
        raise ImageError(
            f"{path.name} states {nbytes / 2**20:.0f} MiB of pixels in its header but holds {size / 2**20:.1f} MiB; "
            "the file is truncated or damaged."
        )
    if limit is not None and nbytes > limit:
        raise ImageError(
            f"{path.name} holds {nbytes / 2**30:.1f} GiB of pixels, more than the {limit / 2**30:.0f} GiB slicewise "
            "reads at once; save it as a TIFF stack or zarr store, which open lazily."
        )


@contextmanager
def decoding(path: Path, kind: str = "an image") -> Iterator[None]:
    """Turn whatever a decoding library raises inside the block into one ``ImageError`` naming the file."""
    try:
        yield
    except SlicewiseError:
        raise
    except MemoryError as error:
        raise ImageError(
            f"Not enough memory to read {path.name}; close other programs or save the image smaller."
        ) from error
    except _decode_errors() as error:
        detail = one_line(f"{type(error).__name__}: {error}", 100)
        raise ImageError(
            one_line(f"Cannot read {path.name} as {kind} ({detail}); the file is damaged or not {kind}.")
        ) from error
