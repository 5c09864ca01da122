import numpy as np
import pytest

from slicewise.core.preprocess import (
    MAX_SLICE_PIXELS,
    check_slice,
    match_channels,
    network_shape,
    normalize,
    pad_to_divisor,
    prepare,
    resize_long_side,
)
from slicewise.errors import ImageError, InputSpecError
from slicewise.models.spec import InputSpec

RGB = InputSpec(channels=3)


def test_normalisation_is_the_same_for_uint8_uint16_and_float(kvasir_test):
    image = kvasir_test[0][1]
    as_uint8 = prepare(image, RGB)
    as_uint16 = prepare(image.astype(np.uint16) * 257, RGB)
    as_float = prepare(image.astype(np.float32) / 255.0, RGB)
    assert as_uint8.dtype == np.float32
    np.testing.assert_allclose(as_uint8, as_uint16, atol=1e-5)
    np.testing.assert_allclose(as_uint8, as_float, atol=1e-5)
    assert as_uint8.min() >= 0.0 and as_uint8.max() <= 1.0


def test_input_is_never_mutated(kvasir_test):
    image = kvasir_test[0][1].copy()
    prepare(image, RGB)
    np.testing.assert_array_equal(image, kvasir_test[0][1])


def test_grayscale_repeats_for_rgb_model_and_rgba_drops_alpha():
    gray = np.arange(12, dtype=np.uint8).reshape(3, 4)
    assert match_channels(gray, 3).shape == (3, 3, 4)
    rgba = np.zeros((3, 4, 4), dtype=np.uint8)
    assert match_channels(rgba, 3).shape == (3, 3, 4)


def test_rgb_into_grayscale_model_is_one_sentence():
    with pytest.raises(InputSpecError, match="expects grayscale input .* slice has 3 channels"):
        match_channels(np.zeros((8, 8, 3), dtype=np.uint8), 1)


@pytest.mark.parametrize(
    ("image", "message"),
    [
        (np.zeros((2, 3, 8, 8)), "Expected a 2D slice"),
        (np.zeros((8, 8, 7)), "Expected a 2D slice"),
        (np.zeros((0, 8)), "empty"),
        (np.zeros((8, 8), dtype=complex), "Cannot segment complex"),
    ],
)
def test_bad_slices_raise_one_sentence(image, message):
    with pytest.raises(ImageError, match=message):
        check_slice(image)


def test_huge_slice_is_refused_without_allocating():
    huge = np.lib.stride_tricks.as_strided(np.zeros(1, np.uint8), shape=(5000, 5000), strides=(0, 0))
    assert huge.size > MAX_SLICE_PIXELS
    with pytest.raises(ImageError, match="megapixels"):
        prepare(huge, RGB)


def test_nan_pixels_take_the_minimum_and_all_nan_is_refused():
    image = np.linspace(0, 1, 64, dtype=np.float32).reshape(8, 8)
    image[2, 3] = np.nan
    out = normalize(image[np.newaxis], InputSpec(channels=1))
    assert np.isfinite(out).all() and out[0, 2, 3] == 0.0
    with pytest.raises(ImageError, match="no finite pixel"):
        normalize(np.full((1, 8, 8), np.nan, np.float32), InputSpec(channels=1))


def test_padding_reaches_the_divisor():
    assert pad_to_divisor(np.ones((3, 45, 71), np.float32), 16).shape == (3, 48, 80)


def test_trained_size_resizes_the_long_side_and_labels_stay_labels():
    image = np.random.default_rng(0).integers(0, 255, (100, 60), dtype=np.uint8)
    chw = prepare(image, InputSpec(channels=1, size=50, divisor=16))
    assert chw.shape == (1, 64, 32)  # 100×60 → 50×30, padded to multiples of 16
    assert np.all(chw[:, 50:] == 0) and np.all(chw[:, :, 30:] == 0)
    mask = np.zeros((1, 100, 60), np.uint8)
    mask[0, 20:80, 10:50] = 2
    small = resize_long_side(mask, 50, labels=True)
    assert small.shape == (1, 50, 30) and small.dtype == np.uint8 and set(np.unique(small)) == {0, 2}
    assert network_shape(100, 60, None) == (100, 60)
