import dask.array as da
import numpy as np
import pytest

from slicewise.core.slices import put_slice, slice_ref_from_point, take_slice
from slicewise.core.types import SliceRef
from slicewise.errors import ImageError


def test_take_slice_of_2d_3d_and_rgb_stacks():
    stack = np.arange(4 * 5 * 6).reshape(4, 5, 6)
    np.testing.assert_array_equal(take_slice(stack, SliceRef((2,))), stack[2])
    rgb = np.zeros((4, 5, 6, 3), np.uint8)
    assert take_slice(rgb, SliceRef((1,)), rgb=True).shape == (5, 6, 3)
    assert take_slice(stack[0], SliceRef()).shape == (5, 6)


def test_take_slice_reads_only_the_slice_of_a_lazy_stack():
    computed = []

    def block(block_info=None):
        computed.append(block_info[None]["chunk-location"][0])
        return np.full((1, 16, 16), block_info[None]["chunk-location"][0], np.uint16)

    lazy = da.map_blocks(block, chunks=((1,) * 50, (16,), (16,)), dtype=np.uint16)
    plane = take_slice(lazy, SliceRef((7,)))
    assert isinstance(plane, np.ndarray) and plane.shape == (16, 16) and plane[0, 0] == 7
    assert computed == [7]


def test_slice_ref_from_a_viewer_point():
    assert slice_ref_from_point((10, 20, 30), (3.4, 1.0, 2.0), rgb=False) == SliceRef((3,))
    assert slice_ref_from_point((10, 20, 30, 3), (12.0, 1.0, 2.0), rgb=True) == SliceRef((9,))
    assert slice_ref_from_point((20, 30), (1.0, 2.0), rgb=False) == SliceRef(())


def test_put_slice_writes_labels_and_per_class_planes():
    labels = np.zeros((3, 4, 5), np.uint8)
    put_slice(labels, SliceRef((1,)), np.ones((4, 5), np.uint8))
    assert labels[1].all() and not labels[0].any()
    probabilities = np.zeros((2, 3, 4, 5), np.float32)
    put_slice(probabilities, SliceRef((2,)), np.ones((2, 4, 5), np.float32))
    assert probabilities[:, 2].all() and not probabilities[:, 1].any()


def test_wrong_index_is_one_sentence():
    with pytest.raises(ImageError, match="needs 1 leading"):
        take_slice(np.zeros((3, 4, 5)), SliceRef())
    with pytest.raises(ImageError, match="fewer than two spatial axes"):
        take_slice(np.zeros(5), SliceRef())
