"""Tiled (sliding-window) prediction against one forward, on the bundled ultrasound U-Net and real HC18 images.

The large slices are montages of real test images at their native scale: a tile then holds
whole heads at the size the model was trained on, as in a large scan, so tiled and untiled
runs see the same content and should agree away from the seams.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import pytest
import torch

import slicewise
from slicewise.core.metrics import dice_score
from slicewise.core.tiling import window_shape
from slicewise.errors import SlicewiseError
from slicewise.io.images import read_image
from slicewise.models.checkpoint import load_checkpoint
from slicewise.models.loaded import Ensemble, from_state


def size_agnostic_fetal_model(**init_kwargs):
    """The bundled fetal-head U-Net (fully convolutional) with no fixed input size, so large slices
    reach it whole or in tiles; in fp32 PyTorch, whose forwards the hooks count."""
    header, state = load_checkpoint(slicewise.bundled_models()["fetal_head_unet"])
    spec = dataclasses.replace(
        header.spec,
        input=dataclasses.replace(header.spec.input, size=None),
        init_kwargs={**header.spec.init_kwargs, **init_kwargs},
    )
    return from_state(spec, state, device="cpu")


@pytest.fixture(scope="module")
def fetal_model():
    return size_agnostic_fetal_model()


@pytest.fixture(scope="module")
def montages(data_dir) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """side → (image, mask): side × side real HC18 test images (grayscale uint8) cropped to one size, tiled."""
    from slicewise.io.samples import split_stems

    root = data_dir / "hc18"
    stems = split_stems(root, "test")[:16]
    images = [read_image(root / "images" / f"{s}.png") for s in stems]
    masks = [read_image(root / "masks" / f"{s}.png") for s in stems]
    height, width = min(i.shape[0] for i in images), min(i.shape[1] for i in images)

    def grid(arrays: list[np.ndarray], side: int) -> np.ndarray:
        return np.block([[arrays[r * side + c][:height, :width] for c in range(side)] for r in range(side)])

    return {side: (grid(images, side), grid(masks, side)) for side in (2, 4)}


@contextmanager
def forward_inputs(model) -> Iterator[list[tuple[int, ...]]]:
    """The input shape of every forward of ``model`` (each ensemble member) while the block runs."""
    shapes: list[tuple[int, ...]] = []
    modules = [m.module for m in getattr(model, "members", [model])]
    hooks = [m.register_forward_pre_hook(lambda _, args: shapes.append(tuple(args[0].shape))) for m in modules]
    try:
        yield shapes
    finally:
        for hook in hooks:
            hook.remove()


def test_window_shape_tiles_only_slices_larger_than_the_tile():
    assert window_shape(512, 512, 512, 16) is None
    assert window_shape(4000, 4000, None, 16) is None
    assert window_shape(4000, 4000, 1000, 16) == (992, 992)  # rounded down to the divisor
    assert window_shape(4000, 304, 1024, 16) == (1024, 304)  # never wider than the slice


def test_tiled_prediction_agrees_with_one_forward_and_runs_tile_by_tile(fetal_model, montages):
    image, mask = montages[4]
    with forward_inputs(fetal_model) as whole:
        untiled = slicewise.predict(fetal_model, image, tile_size=None)
    with forward_inputs(fetal_model) as tiles:
        tiled = slicewise.predict(fetal_model, image, tile_size=512)
    padded = tuple(-(-s // 16) * 16 for s in image.shape)
    assert whole == [(1, 1, *padded)]
    # 704 × 1024 px in 512² px windows overlapping by a quarter: 2 rows × 3 columns
    assert tiles == [(1, 1, 512, 512)] * 6
    assert tiled.labels.shape == image.shape and tiled.probabilities.shape == (2, *image.shape)
    np.testing.assert_allclose(tiled.probabilities.sum(0), 1.0, atol=1e-5)
    assert (tiled.labels == untiled.labels).mean() > 0.97
    assert dice_score(tiled.labels, untiled.labels, 2) > 0.93
    assert dice_score(tiled.labels, mask, 2) > dice_score(untiled.labels, mask, 2) - 0.02


@pytest.fixture(scope="module")
def dropout_model():
    return size_agnostic_fetal_model(dropout=0.1)


@pytest.mark.parametrize(
    ("case", "method", "views"),
    [("single", "tta", 8), ("dropout", "mc_dropout", 8), ("ensemble", "entropy", 1)],
)
def test_tiling_composes_with_uncertainty_and_ensembles(case, method, views, fetal_model, dropout_model, montages):
    # the ensemble's second member has the same weights (dropout is off in eval), so it must equal one model
    model = {"single": fetal_model, "dropout": dropout_model}.get(case) or Ensemble([fetal_model, dropout_model])
    image = montages[2][0][:192, :336]
    plain = slicewise.predict(fetal_model, image, tile_size=192)
    torch.manual_seed(0)
    with forward_inputs(model) as tiles:
        tiled = slicewise.predict(model, image, uncertainty=method, tile_size=192)
    members = 2 if case == "ensemble" else 1
    assert tiles == [(views, 1, 192, 192)] * 2 * members  # 192 × 336 px: 2 windows per member
    assert tiled.uncertainty.shape == image.shape and tiled.uncertainty.dtype == np.float32
    assert tiled.uncertainty.min() >= 0.0 and tiled.uncertainty.max() <= 1.0
    assert 0.0 <= tiled.uncertainty_score <= 1.0
    np.testing.assert_allclose(tiled.probabilities.sum(0), 1.0, atol=1e-5)
    if case == "ensemble":
        np.testing.assert_allclose(tiled.probabilities, plain.probabilities, atol=1e-5)
        assert tiled.uncertainty.max() < 1e-4  # identical members: no mutual information
    else:
        assert (tiled.labels == plain.labels).mean() > 0.85


def test_explanations_are_refused_for_tiled_slices(fetal_model, montages):
    image, _ = montages[2]
    with forward_inputs(fetal_model) as calls, pytest.raises(SlicewiseError, match="tiles; crop the region"):
        slicewise.predict(fetal_model, image, explain="gradcam", tile_size=256)
    assert calls == []
    assert slicewise.predict(fetal_model, image, explain="gradcam").explanation.shape == image.shape
