"""napari readers: medical files with their geometry, and big TIFF stacks and zarr arrays lazily.

The medical reader wraps :func:`slicewise.io.medical.read_volume`: the voxel spacing becomes the
layer's ``scale`` and the origin its ``translate`` (both in napari's (z, y, x) order); the full
geometry goes into ``layer.metadata[METADATA_KEY]`` so the writers can put labels back in place.
The stack reader wraps :func:`slicewise.io.lazy.open_image`: napari gets a lazy array and reads
only the planes it shows.

napari's own reader also claims ``.nii``, ``.nii.gz``, ``.nrrd`` and ``.dcm`` (through imageio, which
fails without itk), and an npe2 manifest has no reader priority: with two readers napari asks, and
offers its own first. ``prefer_slicewise_reader`` (run when the slicewise dock first opens, and by
``slicewise demo``) makes slicewise the reader for those patterns in napari's settings
(Preferences > Plugins > File extension readers), unless the person chose one there already.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from slicewise.io.lazy import is_lazy_path, open_image
from slicewise.io.medical import Volume, is_medical_path, read_volume

METADATA_KEY = "slicewise_medical"
PLUGIN = "slicewise"  # the npe2 manifest's name
MEDICAL_PATTERNS = ("*.nii", "*.nii.gz", "*.nrrd", "*.dcm")  # only slicewise reads them without itk

LayerData = tuple[Any, dict[str, Any], str]


def napari_get_reader(path: str | os.PathLike | list[str]) -> Callable[[str], list[LayerData]] | None:
    """The reader for one medical file or DICOM folder, or None (napari's "not mine") for anything else."""
    if isinstance(path, list):
        if len(path) != 1:
            return None
        path = path[0]
    return read_layers if is_medical_path(path) else None


def napari_get_stack_reader(path: str | os.PathLike | list[str]) -> Callable[[str], list[LayerData]] | None:
    """The reader for one TIFF file or zarr store, or None for anything else."""
    if isinstance(path, list):
        if len(path) != 1:
            return None
        path = path[0]
    return read_stack_layers if is_lazy_path(path) else None


def read_stack_layers(path: str | os.PathLike) -> list[LayerData]:
    """One image layer: the whole array for a small TIFF, a lazy one for a big TIFF or a zarr store."""
    return [(open_image(path), {"name": Path(path).stem}, "image")]


def read_layers(path: str | os.PathLike) -> list[LayerData]:
    """One layer: labels for label files (see docs/medical_files.md), an image otherwise."""
    volume = read_volume(path)
    return [(volume.array, layer_kwargs(volume), "labels" if volume.is_labels else "image")]


def layer_kwargs(volume: Volume) -> dict[str, Any]:
    """The napari layer keyword arguments that place ``volume`` in the world (mm) and keep its geometry."""
    return {
        "name": volume.name,
        "scale": volume.spacing,
        "translate": volume.translate,
        "metadata": {METADATA_KEY: volume.metadata()},
    }


def prefer_slicewise_reader() -> list[str]:
    """Make slicewise napari's reader for ``MEDICAL_PATTERNS`` the person has not assigned; the patterns set."""
    from napari.settings import get_settings

    plugins = get_settings().plugins
    chosen = dict(plugins.extension2reader)
    added = [pattern for pattern in MEDICAL_PATTERNS if pattern not in chosen]
    if added:
        plugins.extension2reader = {**chosen, **dict.fromkeys(added, PLUGIN)}
    return added
