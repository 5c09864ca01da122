"""TIFFs slicewise writes (label stacks, uncertainty maps) hold slices, whatever their number."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile

from slicewise.io.images import read_image, write_tiff


@pytest.mark.parametrize("slices", [1, 3, 4, 5])
def test_a_labels_stack_of_any_depth_is_written_as_gray_slices_and_reads_back(tmp_path: Path, slices: int):
    labels = np.random.default_rng(slices).integers(0, 3, (slices, 24, 32), dtype=np.uint8)
    path = write_tiff(tmp_path / "labels.tif", labels)
    with tifffile.TiffFile(path) as tiff:
        assert tiff.pages[0].photometric == tifffile.PHOTOMETRIC.MINISBLACK  # never 3 or 4 slices as RGB planes
    np.testing.assert_array_equal(read_image(path).reshape(labels.shape), labels)
