"""Plain image files in and label maps out, for the CLI and the sample data.

PNG/JPEG/BMP go through Pillow, TIFF through tifffile (stacks included), ``.npy`` through
numpy without pickles. Medical formats (NIfTI, DICOM, NRRD) are a separate module.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import tifffile
from PIL import Image, UnidentifiedImageError

from slicewise.errors import ImageError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".npy")


def read_image(path: str | os.PathLike) -> np.ndarray:
    """An image as stored: (H, W), (H, W, 3|4), or a stack (Z, H, W[, C]) for TIFF/.npy."""
    path = Path(path)
    if not path.is_file():
        raise ImageError(f"{path} is not a file; pass an image file or a folder of images.")
    suffix = path.suffix.lower()
    try:
        if suffix in (".tif", ".tiff"):
            return tifffile.imread(path)
        if suffix == ".npy":
            return np.load(path, allow_pickle=False)
        with Image.open(path) as image:
            if image.mode in ("P", "CMYK", "YCbCr", "LA"):
                image = image.convert("RGB")
            return np.asarray(image)
    except (UnidentifiedImageError, OSError, ValueError) as error:
        raise ImageError(f"Cannot read {path.name} as an image ({error}).") from error


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
    """A label map as PNG (2D, uint8) or TIFF (stacks or more than 255 classes)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() == ".png":
        Image.fromarray(labels.astype(np.uint8), mode="L").save(path)
    else:
        tifffile.imwrite(path, labels, compression="zlib")
    return path
