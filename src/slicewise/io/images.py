"""Plain image files in and label maps out, for the CLI and the sample data.

PNG/JPEG/BMP go through Pillow, TIFF through tifffile (stacks included), ``.npy`` through
numpy without pickles. Medical formats (NIfTI, DICOM, NRRD) are a separate module.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import tifffile
from PIL import Image

from slicewise.errors import ImageError
from slicewise.io.autosave import write_atomically
from slicewise.io.checks import check_decoded, decoding, plane_of, regular_file

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".npy")


def read_image(path: str | os.PathLike) -> np.ndarray:
    """An image as stored: (H, W), (H, W, 3|4), or a stack (Z, H, W[, C]) for TIFF/.npy.

    The header is checked before the pixels are decoded (see ``slicewise.io.checks``): a pipe, a
    header that states more pixels than the file can hold, or a slice over the size limit is one
    ``ImageError``, and so is whatever the decoder raises on a damaged file.
    """
    path = regular_file(path, "an image file or a folder of images")
    suffix = path.suffix.lower()
    with decoding(path, f"a {suffix.lstrip('.') or 'image'} image"):
        if suffix in (".tif", ".tiff"):
            shape, dtype, compressed = tiff_header(path)
            check_decoded(path, shape, dtype.itemsize, plane=plane_of(shape), compressed=compressed)
            return tifffile.imread(path)
        if suffix == ".npy":
            mapped = np.load(path, allow_pickle=False, mmap_mode="r")  # the header only; nothing read yet
            check_decoded(
                path, mapped.shape or (0,), mapped.dtype.itemsize, plane=plane_of(mapped.shape), compressed=False
            )
            return np.array(mapped)
        with Image.open(path) as image:
            width, height = image.size
            bands = len(image.getbands())
            check_decoded(path, (height, width, bands), 1, plane=(height, width))
            if image.mode in ("P", "CMYK", "YCbCr", "LA"):
                image = image.convert("RGB")
            return np.asarray(image)


def tiff_header(path: Path) -> tuple[tuple[int, ...], np.dtype, bool]:
    """A TIFF's first series as its header states it: (shape, dtype, whether its data is compressed)."""
    with tifffile.TiffFile(path) as tif:
        series = tif.series[0]
        return tuple(series.shape), np.dtype(series.dtype), tif.pages.first.compression != 1


def list_images(paths: list[str | os.PathLike]) -> list[Path]:
    """Files and the image files inside folders, in sorted order per folder."""
    found: list[Path] = []
    for entry in map(Path, paths):
        if entry.is_dir() and entry.suffix.lower() != ".zarr":  # a zarr store is one image
            found.extend(sorted(p for p in entry.iterdir() if p.suffix.lower() in (*IMAGE_SUFFIXES, ".zarr")))
        elif entry.exists():
            found.append(entry)
        else:
            raise ImageError(f"{entry} does not exist.")
    if not found:
        raise ImageError(f"No image files ({', '.join(IMAGE_SUFFIXES)}) found in {', '.join(map(str, paths))}.")
    return found


def write_labels(path: str | os.PathLike, labels: np.ndarray) -> Path:
    """A label map as PNG (2D, uint8) or TIFF (stacks or more than 255 classes), written atomically:
    a full disk or a killed process leaves the old file or none, never a partial one under the name."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() == ".png":
        image = Image.fromarray(labels.astype(np.uint8), mode="L")
        write_atomically(path, lambda file: image.save(file, format="PNG"))
    else:
        write_tiff(path, labels)
    return path


def write_tiff(path: str | os.PathLike, array: np.ndarray) -> Path:
    """An array as a zlib-compressed TIFF, written atomically (labels stacks, uncertainty and explanation maps)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()  # tifffile wants a named file or an in-memory one, not a bare descriptor
    # minisblack: a stack of 3 or 4 slices is slices, not the planes of one RGB image
    tifffile.imwrite(buffer, array, compression="zlib", photometric="minisblack")
    write_atomically(path, lambda file: file.write(buffer.getbuffer()))
    return path
