"""napari writers for labels layers: NIfTI, TIFF and DICOM SEG, in the source image's geometry.

The geometry comes from the labels layer's own ``metadata`` when it was read from a file, else
from the one image layer of the same shape that slicewise's reader opened in the current viewer
(labels painted beside an image), else (NIfTI and TIFF only) from the layer's scale and translate.
A DICOM SEG needs a DICOM image series to reference; without one the writer raises one sentence.
"""

from __future__ import annotations

from typing import Any

import napari
import numpy as np

from slicewise._reader import METADATA_KEY
from slicewise.errors import ImageError
from slicewise.io.medical import Volume, write_labels


def write_nifti(path: str, data: Any, attributes: dict[str, Any]) -> list[str]:
    """A labels layer as NIfTI with the source image's affine."""
    return [str(write_labels(path, np.asarray(data), like=_like(data, attributes, dicom=False)))]


def write_tiff(path: str, data: Any, attributes: dict[str, Any]) -> list[str]:
    """A labels layer as an ImageJ TIFF carrying the voxel spacing in mm."""
    return [str(write_labels(path, np.asarray(data), like=_like(data, attributes, dicom=False)))]


def write_dicom_seg(path: str, data: Any, attributes: dict[str, Any]) -> list[str]:
    """A labels layer as a DICOM SEG referencing the DICOM series it was painted on."""
    return [str(write_labels(path, np.asarray(data), like=_like(data, attributes, dicom=True)))]


def _like(data: Any, attributes: dict[str, Any], *, dicom: bool) -> Volume:
    """The volume whose geometry the labels take: their own, an image layer's beside them, or the layer grid."""
    shape = np.shape(data)
    own = attributes.get("metadata", {}).get(METADATA_KEY)
    if own and (not dicom or own["kind"] == "dicom"):
        return Volume.from_metadata(data, own)
    viewer = napari.current_viewer()
    beside = {
        layer.metadata[METADATA_KEY]["source"]: layer.metadata[METADATA_KEY]
        for layer in (viewer.layers if viewer else ())
        if METADATA_KEY in layer.metadata
        and np.shape(layer.data) == shape
        and (not dicom or layer.metadata[METADATA_KEY]["kind"] == "dicom")
    }
    if len(beside) > 1:
        raise ImageError(
            f"{len(beside)} open images of shape {shape} could be the labels' source; "
            "close the others before saving so the geometry is unambiguous."
        )
    if beside:
        return Volume.from_metadata(data, next(iter(beside.values())))
    if dicom:
        raise ImageError(
            f"No DICOM image of shape {shape} is open beside these labels; open the DICOM file or series "
            "they were painted on before saving a DICOM SEG, or save NIfTI or TIFF."
        )
    return Volume.from_grid(data, spacing=attributes["scale"], translate=attributes["translate"])
