"""Uncertainty maps: exact on constructed cases, and meaningful on real data."""

import numpy as np
import pytest
import torch
from monai.metrics import compute_roc_auc

import slicewise
from slicewise.core.uncertainty import mc_dropout_samples, mutual_information, normalized_entropy, tta_samples
from slicewise.errors import SlicewiseError
from slicewise.models.checkpoint import save_checkpoint
from slicewise.models.registry import build_model, make_spec


def test_entropy_is_zero_when_certain_and_one_when_uniform():
    certain = torch.zeros(3, 4, 5)
    certain[1] = 1.0
    assert float(normalized_entropy(certain).max()) == pytest.approx(0.0, abs=1e-6)
    assert normalized_entropy(torch.full((3, 4, 5), 1 / 3)).numpy() == pytest.approx(1.0, abs=1e-6)


def test_mutual_information_is_zero_for_agreeing_samples_and_high_for_disagreeing():
    agree = torch.tensor([[0.9, 0.1], [0.9, 0.1]]).reshape(2, 2, 1, 1)
    disagree = torch.tensor([[1.0, 0.0], [0.0, 1.0]]).reshape(2, 2, 1, 1)
    assert float(mutual_information(agree)) == pytest.approx(0.0, abs=1e-6)
    assert float(mutual_information(disagree)) == pytest.approx(1.0, abs=1e-4)


def test_tta_views_are_undone_exactly_on_a_non_square_slice():
    x = torch.rand(1, 2, 7, 11)
    samples = tta_samples(lambda views: views.softmax(1), x)
    assert samples.shape == (8, 2, 7, 11)
    for sample in samples:
        torch.testing.assert_close(sample, x[0].softmax(0))


def test_mc_dropout_samples_differ_and_dropout_is_switched_back_off(tmp_path):
    spec = make_spec("unet", channels=[4, 8, 16], strides=[2, 2], dropout=0.3)
    model = slicewise.load_model(save_checkpoint(tmp_path / "d.safetensors", build_model(spec).state_dict(), spec))
    image = np.random.default_rng(0).integers(0, 255, (32, 48, 3), dtype=np.uint8)
    prediction = slicewise.predict(model, image, uncertainty="mc_dropout")
    assert prediction.uncertainty.shape == (32, 48) and prediction.uncertainty.max() > 0
    assert not any(m.training for m in model.module.modules())
    with pytest.raises(SlicewiseError, match="no dropout layers"):
        mc_dropout_samples(torch.nn.Identity(), lambda v: v, torch.zeros(1, 1, 4, 4))


def test_mc_dropout_never_switches_the_shared_module(tmp_path):
    """A prediction running on the cached module meanwhile sees it in eval mode the whole time."""
    spec = make_spec("unet", channels=[4, 8, 16], strides=[2, 2], dropout=0.3)
    path = save_checkpoint(tmp_path / "d.safetensors", build_model(spec).state_dict(), spec)
    model = slicewise.load_model(path, precision="fp32")  # the hooks watch PyTorch's forwards, not an ONNX twin
    shared, seen = set(map(id, model.module.modules())), []
    record = lambda m, _: seen.append(m.training) if id(m) in shared else None  # noqa: E731 (the twin copies hooks)
    hooks = [m.register_forward_pre_hook(record) for m in model.module.modules()]
    image = np.random.default_rng(0).integers(0, 255, (32, 48, 3), dtype=np.uint8)
    first = slicewise.predict(model, image, uncertainty="mc_dropout")
    slicewise.predict(model, image)  # a plain prediction between: it runs the shared module
    second = slicewise.predict(model, image, uncertainty="mc_dropout")
    for hook in hooks:
        hook.remove()
    assert seen and not any(seen)  # the shared module never ran a dropout sample
    assert first.uncertainty.max() > 0 and not np.array_equal(first.uncertainty, second.uncertainty)


def test_ensemble_members_must_share_classes():
    with pytest.raises(SlicewiseError, match="must share their classes"):
        slicewise.load_model(["polyp_unet", "fetal_head_unet"])


def test_ensemble_spread_is_its_uncertainty(kvasir_test):
    ensemble = slicewise.load_model(["polyp_unet", "polyp_unet"])
    prediction = slicewise.predict(ensemble, kvasir_test[0][1], uncertainty="entropy")
    single = slicewise.predict("polyp_unet", kvasir_test[0][1])
    np.testing.assert_allclose(prediction.probabilities, single.probabilities, atol=1e-5)
    assert prediction.uncertainty.max() < 1e-4  # identical members do not disagree


@pytest.mark.parametrize("method", ["entropy", "tta"])
def test_uncertainty_flags_the_wrong_pixels_of_real_polyps(default_model, kvasir_test, method):
    maps, wrong = [], []
    for _, image, mask in kvasir_test:
        prediction = slicewise.predict(default_model, image, uncertainty=method)
        assert prediction.uncertainty.shape == mask.shape and prediction.uncertainty.dtype == np.float32
        assert 0.0 <= prediction.uncertainty_score <= 1.0
        maps.append(prediction.uncertainty.ravel())
        wrong.append((prediction.labels != mask).ravel())
    auroc = compute_roc_auc(
        torch.from_numpy(np.concatenate(maps)), torch.from_numpy(np.concatenate(wrong).astype(np.float32))
    )
    assert auroc >= 0.75
