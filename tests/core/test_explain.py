"""Explanations: maps of the right shape and range that point at real polyps, and leave the model as it was."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from slicewise.core.explain import EXPLAIN_METHODS, attribution, batches, reporting
from slicewise.core.inference import probabilities_from_logits
from slicewise.core.preprocess import prepare
from slicewise.errors import SlicewiseError
from slicewise.models.loaded import LoadedModel, from_state
from slicewise.models.registry import build_model, make_spec

POLYP = 1


pytestmark = pytest.mark.usefixtures("one_thread")


def _prepared(model: LoadedModel, image: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """The padded batch and its predicted labels, made as iter_predict makes them (under inference_mode)."""
    batch = torch.from_numpy(prepare(image, model.spec.input)).unsqueeze(0)
    with torch.inference_mode():
        logits = model.adapter.logits(model.module, batch)
        labels = probabilities_from_logits(logits, model.spec.output.activation)[0].argmax(0)
    return batch, labels


def _mass_inside(cam: torch.Tensor, mask: np.ndarray) -> float:
    """Share of the map's mass inside ``mask``, over the real (unpadded) slice."""
    height, width = mask.shape
    real = cam[:height, :width].numpy()
    return float((real * mask).sum() / max(real.sum(), 1e-12))


def _random_twin(model: LoadedModel, seed: int = 0) -> LoadedModel:
    """A randomly initialised network of the same spec."""
    torch.manual_seed(seed)
    return from_state(model.spec, build_model(model.spec).state_dict(), device="cpu")


@pytest.mark.parametrize("method", EXPLAIN_METHODS)
def test_each_method_maps_the_padded_batch_into_the_unit_range(native_size_model, kvasir_test, method):
    _, image, _ = kvasir_test[0]
    batch, labels = _prepared(native_size_model, image)
    cam = attribution(method, native_size_model, batch, labels, POLYP)
    assert cam.shape == batch.shape[-2:] and cam.dtype == torch.float32
    assert torch.isfinite(cam).all()
    assert float(cam.min()) == 0.0 and float(cam.max()) == pytest.approx(1.0)


def test_trained_gradcam_concentrates_on_the_polyp_more_than_random_weights(native_size_model, kvasir_test):
    random_model = _random_twin(native_size_model)
    trained, untrained = [], []
    for _, image, mask in kvasir_test:
        for model, masses in ((native_size_model, trained), (random_model, untrained)):
            batch, labels = _prepared(model, image)
            masses.append(_mass_inside(attribution("gradcam", model, batch, labels, POLYP), mask))
    area = np.mean([mask.mean() for _, _, mask in kvasir_test])
    assert np.mean(trained) > max(2 * area, np.mean(untrained) + 0.2), (trained, untrained, area)


def _deletion_scores(model: LoadedModel, batch: torch.Tensor, labels: torch.Tensor, order: torch.Tensor) -> float:
    """Mean polyp probability over the predicted region after zeroing the first 10, 20 and 30 % of ``order``."""
    region = labels == POLYP
    views = batch.repeat(3, 1, 1, 1)
    for step, fraction in enumerate((0.1, 0.2, 0.3)):
        deleted = order[: int(fraction * len(order))]
        views[step].view(batch.shape[1], -1)[:, deleted] = 0.0
    with torch.inference_mode():
        logits = model.adapter.logits(model.module, views)
    polyp = probabilities_from_logits(logits, model.spec.output.activation)[:, POLYP]
    return float((polyp * region).sum() / region.sum() / len(views))


@pytest.mark.parametrize("method", EXPLAIN_METHODS)
def test_deleting_the_most_attributed_pixels_hurts_the_polyp_more_than_random_ones(
    native_size_model, kvasir_test, method
):
    generator = torch.Generator().manual_seed(0)
    for _, image, _ in kvasir_test[:2]:
        batch, labels = _prepared(native_size_model, image)
        assert (labels == POLYP).any()
        cam = attribution(method, native_size_model, batch, labels, POLYP)
        by_attribution = torch.argsort(cam.flatten(), descending=True)
        at_random = torch.randperm(cam.numel(), generator=generator)
        attributed = _deletion_scores(native_size_model, batch, labels, by_attribution)
        shuffled = _deletion_scores(native_size_model, batch, labels, at_random)
        assert attributed < 0.8 * shuffled, (method, attributed, shuffled)


def test_unknown_method_class_or_layer_is_one_sentence(native_size_model, kvasir_test):
    batch, labels = _prepared(native_size_model, kvasir_test[0][1])
    no_layer = type(native_size_model.adapter)()
    no_layer.cam_layer = lambda spec: None
    renamed = type(native_size_model.adapter)()
    renamed.cam_layer = lambda spec: "no.such.layer"
    cases = [
        ("lime", native_size_model, POLYP, "Unknown explanation method 'lime'; choose one of: gradcam"),
        ("gradcam", native_size_model, 2, "pick a foreground class from 1 to 1"),
        ("gradcam", dataclasses.replace(native_size_model, adapter=no_layer), POLYP, "declares no layer for Grad-CAM"),
        ("gradcam", dataclasses.replace(native_size_model, adapter=renamed), POLYP, "has no layer 'no.such.layer'"),
    ]
    for method, model, target_class, expected in cases:
        with pytest.raises(SlicewiseError, match=expected) as raised:
            attribution(method, model, batch, labels, target_class)
        message = str(raised.value)
        assert "\n" not in message and message.endswith("."), message


def test_the_model_is_left_as_it_was():
    spec = make_spec("unet", channels=[4, 8, 16, 32, 64], strides=[2, 2, 2, 2])
    model = from_state(spec, build_model(spec).state_dict(), device="cpu")
    for parameter in list(model.module.parameters())[::2]:
        parameter.requires_grad_(False)  # a partly frozen network must stay partly frozen
    weights = {name: value.clone() for name, value in model.module.state_dict().items()}
    flags = [p.requires_grad for p in model.module.parameters()]
    image = np.random.default_rng(0).integers(0, 256, (40, 56, 3), dtype=np.uint8)
    batch, labels = _prepared(model, image)
    for method in EXPLAIN_METHODS:
        attribution(method, model, batch, labels, 1)
    assert [p.requires_grad for p in model.module.parameters()] == flags
    assert all(p.grad is None for p in model.module.parameters())
    assert not any(m.training for m in model.module.modules())
    for name, value in model.module.state_dict().items():
        torch.testing.assert_close(value, weights[name], rtol=0, atol=0, msg=name)
    assert not batch.requires_grad


@pytest.mark.parametrize("method", EXPLAIN_METHODS)
def test_each_batch_is_reported_and_a_raising_callback_stops_between_two(native_size_model, kvasir_test, method):
    batch, labels = _prepared(native_size_model, kvasir_test[0][1][:96, :128])
    seen = []
    with reporting(seen.append):
        attribution(method, native_size_model, batch, labels, POLYP)
    assert [p.step for p in seen] == list(range(batches(method, *batch.shape[-2:])))
    assert all(p.total == len(seen) and method in p.stage for p in seen)

    class Stop(Exception):
        pass

    def stop_at_the_second(progress):
        seen.append(progress)
        if progress.step == 1:
            raise Stop

    if len(seen) < 2:  # Grad-CAM is one pass: nothing to stop between
        return
    seen.clear()
    with pytest.raises(Stop), reporting(stop_at_the_second):
        attribution(method, native_size_model, batch, labels, POLYP)
    assert len(seen) == 2
