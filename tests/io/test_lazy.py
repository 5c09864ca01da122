"""Lazy stacks: TIFF and zarr open without being read, and a prediction reads one plane.

The stacks are the real MNI152 T1 template (the shared zlib TIFF) and a uint16 copy of it
written uncompressed; ``tracemalloc`` sees every numpy buffer and decoded chunk, so its peak
says how much of a stack was read or converted.
"""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import tifffile
import zarr

import slicewise
from slicewise._reader import napari_get_stack_reader
from slicewise.core.slices import slice_ref_from_point, take_slice
from slicewise.core.types import SliceRef
from slicewise.errors import ImageError
from slicewise.io.lazy import open_image, open_lazy


@pytest.fixture(scope="module")
def mni_tiff(data_dir: Path) -> Path:
    return data_dir / "mni152_icbm2009a_3d" / "image_axial_zyx.tif"


@pytest.fixture
def uint16_stack(mni_tiff: Path, tmp_path: Path) -> tuple[Path, np.ndarray]:
    """The MNI volume as uint16 (×257), written uncompressed as 189 pages of 233 × 197."""
    stack = tifffile.imread(mni_tiff).astype(np.uint16) * 257
    path = tmp_path / "mni_uint16.tif"
    tifffile.imwrite(path, stack)
    return path, stack


def traced_peak(run) -> tuple[object, int]:
    """run()'s result and the peak bytes numpy and Python allocated while it ran."""
    tracemalloc.start()
    try:
        result = run()
        return result, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_a_compressed_tiff_opens_lazily_and_reads_one_plane(mni_tiff):
    stack = tifffile.imread(mni_tiff)
    (lazy, plane), peak = traced_peak(lambda: (a := open_lazy(mni_tiff), take_slice(a, SliceRef((90,)))))
    assert isinstance(lazy, zarr.Array) and lazy.shape == stack.shape and lazy.dtype == stack.dtype
    np.testing.assert_array_equal(plane, stack[90])
    assert peak < stack.nbytes / 10


def test_predicting_a_slice_of_a_lazy_stack_converts_only_that_slice(uint16_stack, tiny_checkpoint):
    path, stack = uint16_stack
    model = slicewise.load_model(tiny_checkpoint, device="cpu")
    lazy = open_image(path, eager_limit_bytes=0)
    assert isinstance(lazy, zarr.Array)
    prediction, peak = traced_peak(lambda: slicewise.predict(model, lazy, slice_ref=SliceRef((100,))))
    eager = slicewise.predict(model, stack[100])
    np.testing.assert_array_equal(prediction.labels, eager.labels)
    assert prediction.slice_ref == SliceRef((100,))
    # the slice's own arrays (input, 3-class probabilities, labels) are ~10 float32 planes; the naive
    # path (the whole stack as float32) would be 189 of them
    assert peak < 16 * stack[100].size * 4


def test_small_tiffs_are_read_whole_and_zarr_stores_stay_lazy(uint16_stack, tmp_path):
    path, stack = uint16_stack
    small = open_image(path)
    assert isinstance(small, np.ndarray)
    np.testing.assert_array_equal(small, stack)
    store = tmp_path / "mni.zarr"
    zarr.create_array(store, data=stack, chunks=(1, *stack.shape[1:]))
    lazy = open_image(store)
    assert isinstance(lazy, zarr.Array)
    np.testing.assert_array_equal(take_slice(lazy, SliceRef((3,))), stack[3])


def test_a_zarr_group_opens_its_full_resolution_array(uint16_stack, tmp_path):
    _, stack = uint16_stack
    group = zarr.open_group(tmp_path / "pyramid.zarr", mode="w")
    group.create_array("0", data=stack[:8])
    group.create_array("1", data=stack[:8, ::2, ::2])
    assert open_lazy(tmp_path / "pyramid.zarr").shape == (8, *stack.shape[1:])
    zarr.open_group(tmp_path / "empty.zarr", mode="w")
    with pytest.raises(ImageError, match="holds no array"):
        open_lazy(tmp_path / "empty.zarr")


def test_missing_and_damaged_files_raise_one_sentence(tmp_path):
    with pytest.raises(ImageError, match="does not exist"):
        open_lazy(tmp_path / "missing.tif")
    damaged = tmp_path / "damaged.tif"
    damaged.write_bytes(b"II*\x00" + b"\xff" * 64)
    with pytest.raises(ImageError, match="Cannot read damaged.tif"):
        open_lazy(damaged)


def test_napari_reader_gives_a_layer_the_widget_can_slice(mni_tiff, tmp_path):
    import napari

    store = tmp_path / "mni.zarr"
    zarr.create_array(store, data=tifffile.imread(mni_tiff), chunks=(1, 233, 197))
    assert napari_get_stack_reader(str(tmp_path / "scan.png")) is None
    assert napari_get_stack_reader([str(mni_tiff), str(store)]) is None
    reader = napari_get_stack_reader(str(store))
    ((data, kwargs, kind),) = reader(str(store))
    assert kind == "image" and kwargs["name"] == "mni" and isinstance(data, zarr.Array)
    viewer = napari.components.ViewerModel()
    layer = viewer.add_image(data, **kwargs)
    assert layer.data is data
    viewer.dims.set_point(0, 120)
    ref = slice_ref_from_point(layer.data.shape, layer.world_to_data(viewer.dims.point), layer.rgb)
    assert ref == SliceRef((120,))
    np.testing.assert_array_equal(take_slice(layer.data, ref), tifffile.imread(mni_tiff)[120])
