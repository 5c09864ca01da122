"""Plain image files in and label maps out, for the CLI and the sample data.

PNG/JPEG/BMP go through Pillow, TIFF through tifffile (stacks included), ``.npy`` through
numpy without pickles. Medical volumes (NIfTI, NRRD, DICOM) are read and their labels written in
their geometry by ``slicewise.io.medical``, which these functions hand them to, so that every CLI
command takes them as stacks; that module (nibabel, pynrrd, pydicom) is imported only then.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import tifffile
from PIL import Image

from slicewise.errors import ImageError, printable
from slicewise.io.autosave import READABLE, write_atomically
from slicewise.io.checks import check_decoded, decoding, plane_of, regular_file

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".npy")
MEDICAL_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".dcm")
LISTED_SUFFIXES = (*IMAGE_SUFFIXES, ".zarr", ".nii", ".nii.gz", ".nrrd")  # a folder's .dcm files are one series


def medical_stem(path: str | os.PathLike) -> str | None:
    """The file name without its medical suffix (``brain.nii.gz`` → ``brain``); None for other files."""
    name = Path(path).name
    suffix = next((s for s in MEDICAL_SUFFIXES if name.lower().endswith(s)), None)
    return None if suffix is None else name[: -len(suffix)]


def output_stem(path: str | os.PathLike) -> str:
    """The name results for the image file ``path`` are written under (and its mask is found by)."""
    return medical_stem(path) or Path(path).stem


MASK_SUFFIXES = ("_mask", "_masks", "_seg", "_segmentation", "_label", "_labels", "_gt")


def masks_by_image(images: list[Path], masks: list[Path]) -> dict[Path, Path]:
    """Each image's label map among ``masks``: another file of the same name (any image format),
    else one named with a suffix data sets often give masks (``scan_mask.png``,
    ``ISIC_1_segmentation.png``; ``MASK_SUFFIXES``), so masks may also sit beside their images in one
    folder. Images without one, and the masks themselves, are left out."""
    same: dict[str, list[Path]] = {}
    suffixed: dict[str, Path] = {}
    for path in masks:
        stem = output_stem(path)
        same.setdefault(stem, []).append(path)
        base = next((stem[: -len(s)] for s in MASK_SUFFIXES if stem.lower().endswith(s) and len(stem) > len(s)), None)
        if base is not None:
            suffixed.setdefault(base, path)
    found, are_masks = {}, set(suffixed.values())
    for image in images:
        if image in are_masks:
            continue
        mask = next((path for path in same.get(output_stem(image), []) if path != image), None)
        mask = mask or suffixed.get(output_stem(image))
        if mask is not None:
            found[image] = mask
    return found


def references_by_image(images: list[Path], masks: list[Path], folder: str | os.PathLike) -> dict[Path, Path]:
    """Each image's reference label map (``masks_by_image``), in the images' order; masks lying
    beside their images are not images. An image without one is an ``ImageError`` that names it."""
    found = masks_by_image(images, masks)
    missing = [path.name for path in images if path not in found and path not in found.values()]
    if missing:
        raise ImageError(
            f"{folder} has no reference for {printable(missing[0])}"
            f"{f' (and {len(missing) - 1} more)' if len(missing) > 1 else ''}; give each image a mask of the same name."
        )
    return found


def read_image(path: str | os.PathLike) -> np.ndarray:
    """An image as stored: (H, W), (H, W, 3|4), or a stack (Z, H, W[, C]) for TIFF/.npy and the
    (Z, Y, X) array of a NIfTI, NRRD or DICOM volume.

    The header is checked before the pixels are decoded (see ``slicewise.io.checks``): a pipe, a
    header that states more pixels than the file can hold, or a slice over the size limit is one
    ``ImageError``, and so is whatever the decoder raises on a damaged file.
    """
    path = regular_file(path, "an image file or a folder of images")
    if medical_stem(path) is not None:
        from slicewise.io.medical import read_volume

        return read_volume(path).array
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


def read_label_map(path: str | os.PathLike) -> np.ndarray:
    """A label map file (0 = background, 1, 2, … = classes) as ``read_image`` reads it, except that a
    black-and-white mask is read as 0 and 1 (see ``as_label_map``)."""
    return as_label_map(read_image(path))


def as_label_map(mask: np.ndarray) -> np.ndarray:
    """A binary mask saved as a picture (its one object value the largest its type holds, 255 in a
    PNG; the same in every colour channel) as the label map it means: 0 = background, 1 = object.

    Many data sets and drawing tools save masks that way; read as class numbers they would name
    class 255. Anything else, a multi-class map included, is returned as it is."""
    mask = np.asarray(mask)
    grey = mask.ndim == 3 and mask.shape[-1] in (3, 4) and (mask[..., 1:3] == mask[..., :1]).all()
    if grey and (mask.shape[-1] == 3 or (mask[..., 3] == mask[0, 0, 3]).all()):  # no alpha, or a uniform one
        mask = mask[..., 0]
    if mask.dtype.kind != "u" or mask.dtype.itemsize > 2:
        return mask
    white = np.iinfo(mask.dtype).max
    values = np.unique(mask)
    if values[-1] == white and values.size <= 2 and values[0] in (0, white):
        return (mask == white).astype(np.uint8)
    return mask


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
            found.extend(sorted(p for p in entry.iterdir() if p.name.lower().endswith(LISTED_SUFFIXES)))
        elif entry.exists():
            found.append(entry)
        else:
            raise ImageError(f"{entry} does not exist.")
    if not found:
        raise ImageError(f"No image files ({', '.join(LISTED_SUFFIXES)}) found in {', '.join(map(str, paths))}.")
    return found


def write_labels(path: str | os.PathLike, labels: np.ndarray) -> Path:
    """A label map as PNG (2D, uint8) or TIFF (stacks or more than 255 classes), written atomically:
    a full disk or a killed process leaves the old file or none, never a partial one under the name."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() == ".png":
        image = Image.fromarray(labels.astype(np.uint8), mode="L")
        write_atomically(path, lambda file: image.save(file, format="PNG"), mode=READABLE)
    else:
        write_tiff(path, labels)
    return path


def prediction_path(out: str | os.PathLike, source: str | os.PathLike, ndim: int) -> Path:
    """Where the labels predicted for the image file ``source`` go in the folder ``out``: a medical
    volume's as ``<stem>.nii.gz``, a 2D image's as ``<stem>.png``, a stack's as ``<stem>.tif``."""
    stem = medical_stem(source)
    if stem is not None:
        return Path(out) / f"{stem}.nii.gz"
    return Path(out) / f"{Path(source).stem}{'.png' if ndim == 2 else '.tif'}"


def write_prediction(target: str | os.PathLike, source: str | os.PathLike, labels: np.ndarray) -> Path:
    """Write the labels predicted for the image file ``source`` to ``target`` (``prediction_path``):
    a medical volume's in the volume's own geometry (affine, spacing), so they overlay it in any viewer."""
    if medical_stem(source) is not None:
        from slicewise.io import medical

        return medical.write_labels(target, labels, like=medical.read_volume(source))
    return write_labels(target, labels)


def write_tiff(path: str | os.PathLike, array: np.ndarray) -> Path:
    """An array as a zlib-compressed TIFF, written atomically (labels stacks, uncertainty and explanation maps)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()  # tifffile wants a named file or an in-memory one, not a bare descriptor
    # minisblack: a stack of 3 or 4 slices is slices, not the planes of one RGB image
    tifffile.imwrite(buffer, array, compression="zlib", photometric="minisblack")
    write_atomically(path, lambda file: file.write(buffer.getbuffer()), mode=READABLE)
    return path
