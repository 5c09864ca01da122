"""Label map files as people save them: class numbers, or a binary mask as a black-and-white picture."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from slicewise.io.images import as_label_map, read_label_map


@pytest.fixture
def polyp(data_dir: Path) -> np.ndarray:
    mask = np.asarray(Image.open(next((data_dir / "kvasir_seg" / "masks").glob("*.png"))))
    assert set(np.unique(mask)) == {0, 1}
    return mask


def test_a_black_and_white_png_reads_as_zero_and_one(polyp: np.ndarray, tmp_path: Path):
    for name, picture in (("grey.png", polyp * 255), ("rgb.png", np.dstack([polyp * 255] * 3))):
        Image.fromarray(picture.astype(np.uint8)).save(tmp_path / name)
        read = read_label_map(tmp_path / name)
        assert read.dtype == np.uint8 and read.shape == polyp.shape
        np.testing.assert_array_equal(read, polyp)


def test_sixteen_bit_white_is_one_too(polyp: np.ndarray):
    np.testing.assert_array_equal(as_label_map(polyp.astype(np.uint16) * 65535), polyp)


@pytest.mark.parametrize(
    "labels",
    [
        np.array([[0, 1], [2, 3]], np.uint8),  # classes
        np.array([[0, 255], [1, 255]], np.uint8),  # 255 beside another class: not a binary picture
        np.array([[0, 200], [0, 200]], np.uint8),  # one class numbered 200
        np.array([[0, 255], [0, 255]], np.int32),  # signed: a number, not a picture's white
    ],
)
def test_other_label_maps_are_left_as_they_are(labels: np.ndarray):
    np.testing.assert_array_equal(as_label_map(labels), labels)


def test_a_colour_label_map_stays_colour():
    coloured = np.zeros((4, 4, 3), np.uint8)
    coloured[:2, :2] = (255, 0, 0)
    assert as_label_map(coloured).shape == (4, 4, 3)  # teach then says it is a colour picture
