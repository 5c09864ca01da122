"""Filling between labelled slices: shapes interpolated, absent classes not carried, clear refusals."""

from __future__ import annotations

import numpy as np
import pytest

import slicewise
from slicewise.core.interpolate import fill_between, iter_fill_between
from slicewise.errors import SlicewiseError
from slicewise.io.medical import read_volume


def _disc(radius: float, shape: tuple[int, int] = (64, 64)) -> np.ndarray:
    rows, cols = np.ogrid[: shape[0], : shape[1]]
    return (rows - 32) ** 2 + (cols - 32) ** 2 <= radius**2


def test_a_disc_grows_linearly_between_two_painted_slices() -> None:
    labels = np.zeros((5, 64, 64), np.uint8)
    labels[0][_disc(8)], labels[4][_disc(24)] = 1, 1
    filled = fill_between(labels, [0, 4])
    assert [z for z, _ in iter_fill_between(labels, [0, 4])] == [1, 2, 3]
    radius = np.sqrt(filled[2].sum() / np.pi)
    assert abs(radius - 16) < 1.0  # half way between radius 8 and 24
    assert not filled[[0, 4]].any()  # the labelled slices themselves are not proposed


def test_a_class_missing_at_one_end_is_not_filled_and_classes_keep_their_numbers() -> None:
    labels = np.zeros((3, 64, 64), np.uint8)
    labels[0][_disc(20)] = 2
    labels[0][_disc(6)] = 1  # class 1 only below: a done slice above says it has ended
    labels[2][_disc(20)] = 2
    filled = fill_between(labels, [0, 2])
    assert set(np.unique(filled[1])) == {0, 2}
    assert filled[1][32, 32] == 2  # class 1's place counts as background of the kept classes' shapes
    empty = np.zeros_like(labels)
    empty[0][_disc(10)] = 1  # an all-background (done) slice above: nothing is carried towards it
    assert not fill_between(empty, [0, 2]).any()


def test_the_slice_between_two_painted_tumour_slices_of_a_real_mr(data_dir) -> None:
    reference = read_volume(data_dir / "pyradiomics_3d" / "brain2_label.nrrd").array.astype(np.uint8)
    painted = np.zeros_like(reference)
    painted[[8, 10]] = reference[[8, 10]]  # the tumour is on slices 8, 9 and 10
    filled = slicewise.fill_between(painted, [8, 10])
    overlap = 2 * np.sum((filled[9] > 0) & (reference[9] > 0)) / (np.sum(filled[9] > 0) + np.sum(reference[9] > 0))
    assert overlap > 0.55 and not filled[:8].any() and not filled[11:].any()


@pytest.mark.parametrize(
    ("shape", "labelled", "says"),
    [
        ((8, 8), [0, 2], "3D labels"),
        ((4, 8, 8), [1], "two slices"),
        ((4, 8, 8), [1, 2], "two slices"),
        ((4, 8, 8), [0, 7], "between 0 and 3"),
    ],
)
def test_nothing_to_fill_is_one_sentence(shape, labelled, says) -> None:
    with pytest.raises(SlicewiseError, match=says):
        fill_between(np.zeros(shape, np.uint8), labelled)
