"""Medical volumes in and label maps out with their geometry: NIfTI, NRRD, DICOM and DICOM SEG.

Every reader returns a :class:`Volume` whose array is in napari's axis order, (z, y, x) for a
volume and (y, x) for a single DICOM frame, i.e. the reverse of the file's (x, y, z) index order.
The geometry travels in one convention whatever the format: ``affine`` maps the file-order index
(x, y, z, 1) to RAS+ millimetres, exactly as a NIfTI affine does (DICOM and NRRD's LPS is
converted). Writers take that geometry back from ``like`` so labels painted on an image land in
the image's space; every writer writes atomically (a temporary file moved over the name).
No Qt or napari here; ``slicewise._reader``/``_writer`` wrap this module.
"""

from __future__ import annotations

import gzip
import io
import os
import re
import zlib
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nibabel as nib
import nrrd
import numpy as np
import pydicom
import tifffile
from pydicom.errors import InvalidDicomError

from slicewise import __version__
from slicewise.errors import ImageError
from slicewise.io.autosave import READABLE, write_atomically
from slicewise.io.checks import MAX_DECODED_BYTES, check_decoded, check_plane, decoding, regular_file
from slicewise.io.images import MEDICAL_SUFFIXES, output_stem

__all__ = ["MEDICAL_SUFFIXES", "LABEL_SUFFIXES", "Volume", "is_medical_path", "read_volume", "write_labels"]

LABEL_SUFFIXES = (".nii", ".nii.gz", ".tif", ".tiff", ".dcm")
LABEL_WORDS = frozenset(
    {"label", "labels", "labelmap", "labelstr", "labelsts", "seg", "segmentation", "segmentations", "mask", "masks"}
)
MAX_LABEL_VALUES = 256
SPACING_RTOL = 0.01
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
SEG_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.66.4"

# What third-party readers raise on a damaged or foreign file; turned into ImageError sentences.
_READ_ERRORS = (
    OSError,
    EOFError,
    ValueError,
    KeyError,
    AttributeError,
    RuntimeError,
    zlib.error,
    InvalidDicomError,
    nib.filebasedimages.ImageFileError,
    nrrd.NRRDError,
)


@dataclass(frozen=True, eq=False)
class Volume:
    """An image or label volume with the geometry needed to write labels back in its space.

    ``array``: (z, y, x) or (y, x), intensities as stored (DICOM and NIfTI linear rescale applied).
    ``spacing``: mm per array axis, same order as ``array``. ``affine``: 4×4, file-order index
    (x, y, z, 1) → RAS+ mm. ``kind``: "nifti", "nrrd", "dicom" or "dicom-seg". ``dicom_files``: for
    DICOM images, the instance files in array (z) order, which a DICOM SEG must reference.
    """

    array: np.ndarray
    spacing: tuple[float, ...]
    affine: np.ndarray
    kind: str
    source: Path
    modality: str = ""
    is_labels: bool = False
    dicom_files: tuple[Path, ...] = ()

    @property
    def name(self) -> str:
        """The source's file or folder name without its medical suffix, e.g. ``brain1_label``."""
        return output_stem(self.source)

    @property
    def translate(self) -> tuple[float, ...]:
        """The origin in napari's world frame: mm along each array axis's own direction.

        For the usual axis-aligned RAS scan this is the RAS origin reversed to (z, y, x); for other
        orientations the world frame is the volume's own axes, so layers sharing an orientation
        line up in napari even when their grids or fields of view differ.
        """
        columns = self.affine[:3, :3]
        directions = columns / np.linalg.norm(columns, axis=0)
        along = directions.T @ self.affine[:3, 3]
        return tuple(float(v) for v in along[: self.array.ndim][::-1])

    def metadata(self) -> dict[str, Any]:
        """Plain (JSON-able) description of the geometry, for napari's ``layer.metadata``."""
        return {
            "kind": self.kind,
            "source": str(self.source),
            "modality": self.modality,
            "spacing": list(self.spacing),
            "affine": self.affine.tolist(),
            "dicom_files": [str(p) for p in self.dicom_files],
        }

    @classmethod
    def from_metadata(cls, array: np.ndarray, metadata: dict[str, Any], *, is_labels: bool = True) -> Volume:
        """The inverse of :meth:`metadata`, around a (possibly edited) array."""
        return cls(
            array=np.asarray(array),
            spacing=tuple(float(s) for s in metadata["spacing"]),
            affine=np.asarray(metadata["affine"], dtype=float),
            kind=str(metadata["kind"]),
            source=Path(metadata["source"]),
            modality=str(metadata.get("modality", "")),
            is_labels=is_labels,
            dicom_files=tuple(Path(p) for p in metadata.get("dicom_files", ())),
        )

    @classmethod
    def from_grid(cls, array: np.ndarray, *, spacing: Sequence[float], translate: Sequence[float]) -> Volume:
        """A volume placed only by napari's scale and translate (identity orientation, RAS+)."""
        ndim = np.ndim(array)
        affine = np.eye(4)
        affine[np.arange(ndim), np.arange(ndim)] = list(spacing)[::-1]
        affine[:ndim, 3] = list(translate)[::-1]
        return cls(
            array=np.asarray(array), spacing=tuple(map(float, spacing)), affine=affine, kind="grid", source=Path()
        )


def is_medical_path(path: str | os.PathLike) -> bool:
    """Whether ``path`` looks like something :func:`read_volume` reads (cheap: names and preambles)."""
    path = Path(path)
    if path.is_dir():
        return any(_is_dicom_file(p) for p in sorted(path.iterdir()) if p.is_file())
    return path.is_file() and (_suffix(path) in MEDICAL_SUFFIXES or _is_dicom_file(path))


def read_volume(path: str | os.PathLike) -> Volume:
    """Read a NIfTI, NRRD or DICOM file, a DICOM SEG, or a folder holding one DICOM series."""
    path = Path(path)
    if not path.exists():
        raise ImageError(f"{path} does not exist; pass a NIfTI, NRRD or DICOM file or a DICOM series folder.")
    if path.is_dir():
        with decoding(path, "a DICOM series"):
            return _read_dicom_folder(path)
    regular_file(path, "a NIfTI, NRRD or DICOM file")
    suffix = _suffix(path)
    with decoding(path, f"a {suffix or 'DICOM'} file"):
        if suffix in (".nii", ".nii.gz"):
            return _read_nifti(path)
        if suffix == ".nrrd":
            return _read_nrrd(path)
        if suffix == ".dcm" or _is_dicom_file(path):
            return _read_dicom_file(path)
    raise ImageError(f"{path.name} is not a NIfTI (.nii, .nii.gz), NRRD (.nrrd) or DICOM file.")


def write_labels(path: str | os.PathLike, labels: np.ndarray, *, like: Volume) -> Path:
    """Write ``labels`` (same shape as ``like.array``) in ``like``'s geometry; the suffix picks the format.

    ``.nii``/``.nii.gz``: NIfTI with ``like``'s affine. ``.tif``/``.tiff``: an ImageJ TIFF with the
    spacing in mm. ``.dcm``: a DICOM SEG referencing ``like``'s DICOM series (``like`` must be a DICOM image).
    """
    path = Path(path)
    labels = np.asarray(labels)
    if labels.shape != like.array.shape:
        raise ImageError(
            f"The labels have shape {labels.shape} but {like.source.name or 'the image'} has {like.array.shape}; "
            "write labels painted on that image."
        )
    if not np.issubdtype(labels.dtype, np.integer) and labels.dtype != bool:
        raise ImageError(f"Labels must be integers, not {labels.dtype}; write a Labels layer.")
    suffix = _suffix(path)
    if suffix not in LABEL_SUFFIXES:
        raise ImageError(f"Cannot write labels as {suffix or path.name}; use one of {', '.join(LABEL_SUFFIXES)}.")
    path.parent.mkdir(parents=True, exist_ok=True)
    if suffix == ".dcm":
        _write_dicom_seg(path, labels, like)
        return path
    compact = _compact_labels(labels)
    if suffix in (".tif", ".tiff"):
        _write_tiff(path, compact, like.spacing)
    else:
        image = nib.Nifti1Image(np.ascontiguousarray(compact.T), like.affine)
        image.set_qform(like.affine, code=1)
        image.set_sform(like.affine, code=1)
        image.header.set_xyzt_units("mm")
        data = image.to_bytes()
        if suffix == ".nii.gz":
            data = gzip.compress(data, compresslevel=6)
        write_atomically(path, lambda file: file.write(data), mode=READABLE)
    return path


# --- reading -----------------------------------------------------------------------------------


def _read_nifti(path: Path) -> Volume:
    image = nib.load(path)  # the header only; the data stays on disk until asked for
    shape = tuple(int(n) for n in image.shape)
    if len(shape) >= 2:
        offset = 0 if _suffix(path) == ".nii.gz" else int(image.dataobj.offset)
        check_decoded(
            path,
            shape,
            image.get_data_dtype().itemsize,
            plane=(shape[1], shape[0]),
            compressed=_suffix(path) == ".nii.gz",
            offset=offset,
        )
    raw = np.asanyarray(image.dataobj.get_unscaled())
    if raw.ndim > 3 and all(n == 1 for n in raw.shape[3:]):
        raw = raw.reshape(raw.shape[:3])
    if raw.ndim not in (2, 3):
        raise ImageError(f"{path.name} has {raw.ndim} dimensions; slicewise reads 2D and 3D NIfTI files.")
    array = _rescale(np.ascontiguousarray(raw.T), image.dataobj.slope, image.dataobj.inter)
    return _volume(array, image.affine, "nifti", path)


def _read_nrrd(path: Path) -> Volume:
    header = nrrd.read_header(str(path))
    sizes = [int(n) for n in np.atleast_1d(header.get("sizes", []))][::-1]  # C order: (z, y, x)
    if len(sizes) >= 2:
        itemsize = nrrd.reader._determine_datatype(header).itemsize
        check_decoded(path, sizes, itemsize, compressed=header.get("encoding", "raw") not in ("raw",))
    data, header = nrrd.read(str(path), index_order="C")
    if data.ndim not in (2, 3):
        raise ImageError(f"{path.name} has {data.ndim} axes; slicewise reads 2D and 3D single-channel NRRD files.")
    ndim = data.ndim
    affine = np.eye(4)
    if "space directions" in header:
        directions = np.asarray(header["space directions"], dtype=float)
        if directions.shape != (ndim, ndim) or not np.all(np.isfinite(directions)):
            raise ImageError(f"{path.name} has non-spatial axes (channels or time); save one channel per file.")
        affine[:ndim, :ndim] = directions.T
        affine[:ndim, 3] = np.asarray(header.get("space origin", np.zeros(ndim)), dtype=float)
        affine = _space_to_ras(header.get("space", "right-anterior-superior"), path) @ affine
    elif "spacings" in header:
        affine[np.arange(ndim), np.arange(ndim)] = np.nan_to_num(np.asarray(header["spacings"], float), nan=1.0)
    return _volume(np.ascontiguousarray(data), affine, "nrrd", path)


def _space_to_ras(space: str, path: Path) -> np.ndarray:
    """The sign flip from an NRRD anatomical space name (e.g. left-posterior-superior) to RAS."""
    words = space.lower().replace("3d-", "").replace("-time", "").split("-")
    signs = {"right": 1, "left": -1, "anterior": 1, "posterior": -1, "superior": 1, "inferior": -1}
    aliases = {"ras": ["right", "anterior", "superior"], "lps": ["left", "posterior", "superior"]}
    words = aliases.get(words[0], words)
    if len(words) != 3 or any(w not in signs for w in words):
        raise ImageError(f"{path.name} uses the space '{space}', which is not anatomical; slicewise needs RAS or LPS.")
    return np.diag([signs[w] for w in words] + [1]).astype(float)


def _read_dicom_file(path: Path) -> Volume:
    dataset = pydicom.dcmread(path)
    if _is_seg(dataset):
        return _read_dicom_seg(path, dataset)
    if _frames(dataset) > 1:
        raise ImageError(
            f"{path.name} is a multi-frame DICOM image; slicewise reads single-frame series and DICOM SEG."
        )
    return _stack_dicom([(path, dataset)], path)


def _read_dicom_folder(folder: Path) -> Volume:
    series: dict[str, list[tuple[Path, pydicom.Dataset]]] = defaultdict(list)
    for file in sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")):
        try:
            dataset = pydicom.dcmread(file, stop_before_pixels=True)
        except (InvalidDicomError, OSError, EOFError, ValueError):
            continue
        if "Rows" in dataset:
            series[str(dataset.get("SeriesInstanceUID", ""))].append((file, dataset))
    if not series:
        raise ImageError(f"{folder} holds no DICOM image files; open a folder with one DICOM series.")
    if len(series) > 1:
        raise ImageError(f"{folder} holds {len(series)} DICOM series; open a folder with exactly one series.")
    (members,) = series.values()
    try:
        if len(members) == 1:
            return _read_dicom_file(members[0][0])
        return _stack_dicom([(file, pydicom.dcmread(file)) for file, _ in members], folder)
    except _READ_ERRORS as error:
        raise ImageError(f"Cannot read the DICOM series in {folder} ({error}).") from error


def _stack_dicom(members: list[tuple[Path, pydicom.Dataset]], source: Path) -> Volume:
    """Single-frame images sorted along their normal (ImagePositionPatient), else by InstanceNumber."""
    first = members[0][1]
    if any(_is_seg(ds) or _frames(ds) > 1 for _, ds in members):
        raise ImageError(f"{source} mixes multi-frame objects into a series; open each multi-frame file on its own.")
    if any(int(ds.get("SamplesPerPixel", 1) or 1) != 1 for _, ds in members):
        raise ImageError(f"{source} holds colour DICOM images; slicewise reads single-channel (grey) DICOM.")
    if len({(ds.Rows, ds.Columns) for _, ds in members}) > 1:
        raise ImageError(f"The images in {source} differ in size; open a folder holding one series.")
    orientation = np.asarray(first.get("ImageOrientationPatient", [1, 0, 0, 0, 1, 0]), dtype=float)
    row_dir, col_dir = orientation[:3], orientation[3:]
    normal = np.cross(row_dir, col_dir)
    has_positions = all("ImagePositionPatient" in ds for _, ds in members)
    if has_positions:
        for _, ds in members:
            if not np.allclose(np.asarray(ds.ImageOrientationPatient, float), orientation, atol=1e-4):
                raise ImageError(f"The images in {source} have different orientations; open one series at a time.")
        members = sorted(
            members,
            key=lambda m: (float(np.dot(m[1].ImagePositionPatient, normal)), _instance_number(m[1])),
        )
    else:
        members = sorted(members, key=lambda m: _instance_number(m[1]))
    positions = np.asarray([ds.get("ImagePositionPatient", [0, 0, 0]) for _, ds in members], dtype=float)
    slice_spacing = _slice_spacing(positions @ normal, first, source) if has_positions else _nominal_thickness(first)
    row_spacing, col_spacing = (float(v) for v in first.get("PixelSpacing", [1.0, 1.0]))
    affine = np.eye(4)
    affine[:3, 0] = row_dir * col_spacing
    affine[:3, 1] = col_dir * row_spacing
    affine[:3, 2] = normal * slice_spacing
    affine[:3, 3] = positions[0]
    rows, columns = int(first.Rows), int(first.Columns)
    check_plane(source, rows, columns)
    stored = len(members) * rows * columns * max(1, int(first.get("BitsAllocated", 16) or 16) // 8)
    if stored > MAX_DECODED_BYTES:
        raise ImageError(
            f"{source.name} holds {stored / 2**30:.1f} GiB of pixels, more than the "
            f"{MAX_DECODED_BYTES / 2**30:.0f} GiB slicewise reads at once; open a smaller series."
        )
    raw = np.stack([ds.pixel_array for _, ds in members])
    slopes = np.asarray([float(ds.get("RescaleSlope", 1) or 1) for _, ds in members]).reshape(-1, 1, 1)
    intercepts = np.asarray([float(ds.get("RescaleIntercept", 0) or 0) for _, ds in members]).reshape(-1, 1, 1)
    array = _rescale(raw, slopes, intercepts)
    if len(members) == 1:
        array = array[0]
    files = tuple(file for file, _ in members)
    return _volume(array, LPS_TO_RAS @ affine, "dicom", source, modality=str(first.get("Modality", "")), files=files)


def _is_seg(dataset: pydicom.Dataset) -> bool:
    return dataset.get("SOPClassUID") == SEG_SOP_CLASS or dataset.get("Modality") == "SEG"


def _frames(dataset: pydicom.Dataset) -> int:
    return int(dataset.get("NumberOfFrames", 1) or 1)


def _instance_number(dataset: pydicom.Dataset) -> int:
    return int(dataset.get("InstanceNumber", 0) or 0)


def _slice_spacing(along: np.ndarray, first: pydicom.Dataset, source: Path) -> float:
    if along.size == 1:
        return _nominal_thickness(first)
    gaps = np.diff(along)
    if np.any(gaps < 1e-6):
        raise ImageError(f"Several images in {source} share a position (echoes or time points); open one series.")
    if np.ptp(gaps) > SPACING_RTOL * np.median(gaps):
        raise ImageError(
            f"The slices in {source} are unevenly spaced ({gaps.min():.3g} to {gaps.max():.3g} mm); "
            "slicewise needs evenly spaced slices."
        )
    return float(np.mean(gaps))


def _nominal_thickness(dataset: pydicom.Dataset) -> float:
    return float(dataset.get("SpacingBetweenSlices") or dataset.get("SliceThickness") or 1.0)


def _read_dicom_seg(path: Path, dataset: pydicom.Dataset) -> Volume:
    """A DICOM SEG as one label map whose values are the segment numbers."""
    import highdicom as hd  # only DICOM SEG needs it, and it takes a noticeable time to import

    volume = hd.seg.Segmentation.from_dataset(dataset).get_volume(combine_segments=True, relabel=False)
    # highdicom indexes (slice, row, column) in LPS; reorder to (x, y, z) in RAS.
    affine = LPS_TO_RAS @ np.asarray(volume.affine) @ np.eye(4)[[2, 1, 0, 3]]
    array = np.asarray(volume.array)
    if np.dot(affine[:3, 2], np.cross(affine[:3, 0], affine[:3, 1])) < 0:
        affine[:3, 3] += affine[:3, 2] * (array.shape[0] - 1)
        affine[:3, 2] *= -1
        array = array[::-1]
    array = np.ascontiguousarray(array[0] if array.shape[0] == 1 else array)
    return _volume(array, affine, "dicom-seg", path, modality="SEG", is_labels=True)


def _volume(
    array: np.ndarray,
    affine: np.ndarray,
    kind: str,
    path: Path,
    *,
    modality: str = "",
    is_labels: bool | None = None,
    files: tuple[Path, ...] = (),
) -> Volume:
    zooms = np.linalg.norm(affine[:3, :3], axis=0)
    if np.any(zooms == 0):
        raise ImageError(f"{path.name} has a zero voxel size in its geometry; the file's header is damaged.")
    return Volume(
        array=array,
        spacing=tuple(float(z) for z in zooms[: array.ndim][::-1]),
        affine=affine,
        kind=kind,
        source=path,
        modality=modality,
        is_labels=_looks_like_labels(array, path) if is_labels is None else is_labels,
        dicom_files=files,
    )


def _looks_like_labels(array: np.ndarray, path: Path) -> bool:
    """Integer data, at most MAX_LABEL_VALUES distinct values, and a label word in the file name or as the folder."""
    if not np.issubdtype(array.dtype, np.integer):
        return False
    words = set(re.split(r"[^a-z0-9]+", output_stem(path).lower())) | {path.parent.name.lower()}
    if not words & LABEL_WORDS:
        return False
    return array.dtype.itemsize == 1 or np.unique(array).size <= MAX_LABEL_VALUES


def _rescale(raw: np.ndarray, slope: Any, intercept: Any) -> np.ndarray:
    """Apply a stored linear rescale: stored dtype when trivial, integers when integral, else float32."""
    slope = np.nan_to_num(np.asarray(slope, dtype=float), nan=1.0)
    slope = np.where(slope == 0, 1.0, slope)
    intercept = np.nan_to_num(np.asarray(intercept, dtype=float), nan=0.0)
    if np.all(slope == 1) and np.all(intercept == 0):
        return raw
    if np.all(slope == np.round(slope)) and np.all(intercept == np.round(intercept)):
        values = raw.astype(np.int64) * slope.astype(np.int64) + intercept.astype(np.int64)
        small = np.int16 if values.min() >= -(2**15) and values.max() < 2**15 else np.int32
        return values.astype(small)
    return (raw.astype(np.float32) * slope + intercept).astype(np.float32)


def _suffix(path: Path) -> str:
    name = path.name.lower()
    return ".nii.gz" if name.endswith(".nii.gz") else path.suffix.lower()


def _is_dicom_file(path: Path) -> bool:
    """A '.dcm' name or the 'DICM' marker after the 128-byte preamble."""
    if path.suffix.lower() == ".dcm":
        return True
    try:
        with path.open("rb") as handle:
            return handle.read(132)[128:] == b"DICM"
    except OSError:
        return False


# --- writing -----------------------------------------------------------------------------------


def _compact_labels(labels: np.ndarray) -> np.ndarray:
    """The smallest unsigned dtype holding the labels (uint8/uint16/uint32), int32 when negative."""
    low, high = (int(labels.min()), int(labels.max())) if labels.size else (0, 0)
    if low < 0:
        return labels.astype(np.int32)
    for dtype in (np.uint8, np.uint16, np.uint32):
        if high <= np.iinfo(dtype).max:
            return labels.astype(dtype)
    raise ImageError(f"Label value {high} does not fit 32 bits; relabel before writing.")


def _write_tiff(path: Path, labels: np.ndarray, spacing: tuple[float, ...]) -> None:
    """Pixel size as resolution (pixels per mm), z spacing in the metadata: ImageJ's when 8/16-bit, else tifffile's.

    ImageJ has no 32-bit integer type, so labels beyond 65535 or below 0 get tifffile's JSON description instead.
    """
    metadata: dict[str, Any] = {"unit": "mm", "axes": "ZYX" if labels.ndim == 3 else "YX"}
    if labels.ndim == 3:
        metadata["spacing"] = spacing[0]
    buffer = io.BytesIO()  # tifffile wants a named file or an in-memory one, not a bare descriptor
    tifffile.imwrite(
        buffer,
        labels,
        imagej=labels.dtype in (np.uint8, np.uint16),
        resolution=(1 / spacing[-1], 1 / spacing[-2]),
        metadata=metadata,
        compression="zlib",
    )
    write_atomically(path, lambda file: file.write(buffer.getbuffer()), mode=READABLE)


def _write_dicom_seg(path: Path, labels: np.ndarray, like: Volume) -> None:
    """A DICOM SEG (BINARY, one segment per label value 1..max) referencing ``like``'s instances."""
    import highdicom as hd  # only DICOM SEG needs it, and it takes a noticeable time to import
    from pydicom.sr.codedict import codes

    if like.kind != "dicom" or not like.dicom_files:
        raise ImageError(
            f"A DICOM SEG must reference a DICOM image series, but these labels' geometry comes from {like.kind} data; "
            "write NIfTI or TIFF, or paint on a DICOM image."
        )
    missing = [p for p in like.dicom_files if not p.is_file()]
    if missing:
        raise ImageError(f"The source DICOM file {missing[0]} is gone; reopen the series before writing a DICOM SEG.")
    highest = int(labels.max()) if labels.size else 0
    if highest < 1 or labels.min() < 0:
        raise ImageError(
            "A DICOM SEG needs labels 0..N with at least one positive label; paint a label (none below 0) first."
        )
    sources = [pydicom.dcmread(p) for p in like.dicom_files]
    descriptions = [
        hd.seg.SegmentDescription(
            segment_number=number,
            segment_label=f"Label {number}",
            segmented_property_category=codes.SCT.Tissue,
            segmented_property_type=codes.SCT.Tissue,
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.MANUAL,
        )
        for number in range(1, highest + 1)
    ]
    frames = labels.astype(np.uint8 if highest < 256 else np.uint16)
    segmentation = hd.seg.Segmentation(
        source_images=sources,
        pixel_array=frames if frames.ndim == 3 else frames[np.newaxis],
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions,
        series_instance_uid=hd.UID(),
        series_number=int(sources[0].get("SeriesNumber", 0) or 0) + 1000,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer="slicewise",
        manufacturer_model_name="slicewise",
        software_versions=__version__,
        device_serial_number="0",
        series_description="slicewise labels",
    )
    write_atomically(path, lambda file: segmentation.save_as(file), mode=READABLE)
