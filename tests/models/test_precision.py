"""Precision chosen at load time: forced float32, the measured table, the ONNX Runtime twin."""

import numpy as np
import pytest
import torch
from torch import nn

import slicewise
from slicewise.core.prompting import Prompt, box_from_mask, predict_prompts
from slicewise.errors import OptionError, RunStopped
from slicewise.models import precision
from slicewise.models.loaded import set_precision


def test_cpu_features_are_read_from_this_machine():
    features = precision.cpu_features()
    assert features.capability == torch.backends.cpu.get_cpu_capability()
    assert features.describe().startswith(features.capability)
    assert features.bf16 == bool({"amx_bf16", "avx512_bf16"} & features.flags)


def test_fp32_can_be_forced_by_argument_and_environment(monkeypatch):
    assert precision.choose("lite_medsam", torch.device("cpu"), "fp32").name == "fp32"
    monkeypatch.setenv(precision.ENV_VAR, "fp32")
    assert precision.choose("lite_medsam", torch.device("cpu"), "auto").name == "fp32"
    monkeypatch.setenv(precision.ENV_VAR, "fp8")
    with pytest.raises(OptionError, match="SLICEWISE_PRECISION"):
        precision.choose("unet", torch.device("cpu"))
    with pytest.raises(OptionError, match="choose one of"):
        slicewise.load_model("polyp_unet", device="cpu", precision="half")


def test_choice_follows_the_measured_table(monkeypatch):
    monkeypatch.delenv(precision.ENV_VAR, raising=False)
    avx2 = precision.CpuFeatures("AVX2", frozenset({"avx2"}))
    monkeypatch.setattr(precision, "cpu_features", lambda: avx2)
    assert precision.choose("segformer", torch.device("cpu")).name == "fp32"
    assert precision.choose("lite_medsam", torch.device("cpu")).name == "onnx"
    assert precision.choose("unet", torch.device("cpu")).name == "onnx"
    assert precision.choose("timm_unet", torch.device("cpu")).name == "onnx"
    assert precision.choose("segformer", torch.device("cpu"), "onnx").name == "fp32"  # not offered for it
    assert precision.choose("unet", torch.device("cuda")).name == "fp16"
    assert precision.choose("unet", torch.device("cpu"), "fp32").name == "fp32"
    amx = precision.CpuFeatures("AVX512", frozenset({"amx_bf16", "avx512_bf16"}))
    monkeypatch.setattr(precision, "cpu_features", lambda: amx)
    assert precision.choose("segformer", torch.device("cpu")).name == "bf16"
    assert precision.choose("unet", torch.device("cpu")).name == "bf16"  # faster than ONNX Runtime there
    assert precision.choose("lite_medsam", torch.device("cpu")).name == "onnx"  # a tie: keeps one shared cache
    assert precision.choose("timm_unet", torch.device("cpu")).name == "onnx"  # measured faster in ONNX Runtime


def test_onnx_twin_computes_what_torch_computes(tmp_path, monkeypatch):
    monkeypatch.setenv("SLICEWISE_CACHE", str(tmp_path))
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.GELU(), nn.Conv2d(8, 4, 1)).eval()
    twin = precision.onnx_twin(net, (1, 3, 32, 32), threads=1)
    x = torch.rand(2, 3, 32, 32)  # the batch axis stays dynamic
    with torch.no_grad():
        torch.testing.assert_close(twin(x), net(x), atol=1e-5, rtol=1e-4)
    assert len(list(tmp_path.glob("onnx/*.onnx"))) == 1
    precision.onnx_twin(net, (1, 3, 32, 32))  # cached: exported once
    assert len(list(tmp_path.glob("onnx/*.onnx"))) == 1


def test_a_stopped_token_ends_its_onnx_runs_and_only_its_own(tmp_path, monkeypatch):
    """A run under a stopped token raises RunStopped (a newer request made it unneeded); the twin
    itself still runs for everyone else. (Stopping a run in progress: tests/_qt/test_prompts.py.)"""
    monkeypatch.setenv("SLICEWISE_CACHE", str(tmp_path))
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1)).eval()
    twin, x = precision.onnx_twin(net, (1, 3, 16, 16), threads=1), torch.rand(1, 3, 16, 16)
    token = precision.StopToken()
    token.stop()
    with precision.stopping(token), pytest.raises(RunStopped, match="newer request"):
        twin(x)
    with precision.stopping(precision.StopToken()):
        assert twin(x).shape == (1, 4, 16, 16)
    assert twin(x).shape == (1, 4, 16, 16)


class _SizeAsConstant(nn.Module):
    """Scales by its input's width read as a Python int, which an export bakes in as a constant."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * int(x.shape[-1])


def test_an_any_size_graph_that_holds_at_one_size_only_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("SLICEWISE_CACHE", str(tmp_path))
    with pytest.raises(RuntimeError, match="differs"):
        precision.onnx_twin(_SizeAsConstant(), (1, 1, 8, 8), threads=1, any_size=True)
    assert not list(tmp_path.glob("onnx/*.onnx"))  # nothing cached


def test_bf16_autocast_keeps_the_unet_masks(native_size_model, kvasir_test):
    """bfloat16 is never chosen on a CPU without bfloat16 units, but forcing it must still work and agree."""
    image = kvasir_test[0][1][::2, ::2]
    reference = slicewise.predict(native_size_model, image).labels  # polyp_unet in fp32
    bf16 = set_precision(slicewise.load_model("polyp_unet", device="cpu"), "bf16")
    assert bf16.precision.name == "bf16" and "bfloat16" in bf16.describe_runtime()
    assert (slicewise.predict(bf16, image).labels != reference).mean() < 0.01


def test_the_unet_in_bf16_keeps_its_dice_on_eight_test_images(native_size_model, kvasir_test):
    """What a CPU with bfloat16 units now chooses for the U-Net (``BF16_CHOICES``): its pooled Dice
    within 0.005 of float32's, as the table's rule asks (forced, so it is checked on every CPU)."""
    bf16 = slicewise.load_model("polyp_unet", device="cpu", precision="bf16")
    overlap = {"bf16": [0, 0], "fp32": [0, 0]}
    for _, image, mask in kvasir_test:
        for name, model in (("bf16", bf16), ("fp32", native_size_model)):
            labels = slicewise.predict(model, image).labels == 1
            overlap[name][0] += 2 * int(np.logical_and(labels, mask != 0).sum())
            overlap[name][1] += int(labels.sum() + (mask != 0).sum())
    dice = {name: both / total for name, (both, total) in overlap.items()}
    assert abs(dice["bf16"] - dice["fp32"]) <= 0.005 and dice["fp32"] > 0.7


def test_lite_medsam_box_masks_are_the_same_in_onnx_runtime(lite_medsam, kvasir_test):
    onnx = set_precision(lite_medsam, "auto") if lite_medsam.precision.name == "onnx" else None
    if onnx is None:
        pytest.skip(f"lite_medsam runs {lite_medsam.precision.name} here ({lite_medsam.precision.reason})")
    fp32 = slicewise.load_model("lite_medsam", device="cpu", precision="fp32")
    assert fp32.runtime is None and "ONNX" in onnx.describe_runtime()
    for _, image, mask in kvasir_test[:2]:
        prompt = [Prompt(box=box_from_mask(mask))]
        a, b = predict_prompts(onnx, image, prompt), predict_prompts(fp32, image, prompt)
        assert (a.labels != b.labels).sum() <= 0.0005 * a.labels.size
        np.testing.assert_allclose(a.probabilities, b.probabilities, atol=2e-3)


def test_the_unet_runs_in_onnx_runtime_with_the_same_masks(native_size_model, kvasir_test):
    unet = slicewise.load_model("polyp_unet", device="cpu", precision="onnx")  # chosen on AVX2 CPUs
    if unet.precision.name != "onnx":
        pytest.skip(f"polyp_unet runs {unet.precision.name} here ({unet.precision.reason})")
    changed = 0
    for _, image, _ in kvasir_test:
        a, b = slicewise.predict(unet, image), slicewise.predict(native_size_model, image)
        np.testing.assert_allclose(a.probabilities, b.probabilities, atol=1e-4)
        changed += int((a.labels != b.labels).sum())
    assert changed <= 20  # a handful of pixels at a probability of 0.5, if any


def test_polyp_lite0_runs_in_onnx_runtime_with_the_same_masks(kvasir_test):
    """The default's timm U-Net (TF "same" padding, 128 px by a padded short side) exported whole."""
    lite = slicewise.load_model("polyp_lite0", device="cpu")  # the precision this CPU gets
    if lite.precision.name != "onnx":
        pytest.skip(f"polyp_lite0 runs {lite.precision.name} here ({lite.precision.reason})")
    fp32 = slicewise.load_model("polyp_lite0", device="cpu", precision="fp32")
    assert "ONNX" in lite.describe_runtime() and isinstance(lite.inference_module, precision.OnnxTwin)
    assert fp32.runtime is None and "ONNX" not in fp32.describe_runtime()
    changed, pixels, overlap = 0, 0, {"onnx": [0, 0], "fp32": [0, 0]}
    for _, image, mask in kvasir_test:
        a, b = slicewise.predict(lite, image), slicewise.predict(fp32, image)
        np.testing.assert_allclose(a.probabilities, b.probabilities, atol=1e-4)
        changed, pixels = changed + int((a.labels != b.labels).sum()), pixels + a.labels.size
        for name, labels in (("onnx", a.labels), ("fp32", b.labels)):
            overlap[name][0] += 2 * int(np.logical_and(labels == 1, mask != 0).sum())
            overlap[name][1] += int((labels == 1).sum() + (mask != 0).sum())
    assert changed <= 0.001 * pixels
    dice = {name: both / total for name, (both, total) in overlap.items()}
    assert abs(dice["onnx"] - dice["fp32"]) <= 0.005 and dice["fp32"] > 0.7


def test_runs_as_tells_the_choice_without_loading(monkeypatch):
    from slicewise.api import runs_as

    monkeypatch.setenv(precision.ENV_VAR, "fp32")
    assert runs_as("polyp_unet", "cpu") == "float32"
    monkeypatch.delenv(precision.ENV_VAR)
    expected = precision.choose("lite_medsam", torch.device("cpu")).describe()
    assert runs_as("lite_medsam", "cpu") == expected
    assert runs_as("polyp_lite0", "cpu") == precision.choose("timm_unet", torch.device("cpu")).describe()
    assert runs_as("no_such_model") == runs_as(None) == "float32"


def test_a_cached_graph_predicts_without_building_the_network(tiny_checkpoint, tmp_path, monkeypatch):
    """With the graph of a checkpoint's weights cached, loading and predicting never build the PyTorch
    network; explanations build it on first use, and a network built already finds the same graph."""
    from slicewise.models import loaded

    monkeypatch.setenv("SLICEWISE_CACHE", str(tmp_path))
    monkeypatch.setenv(precision.ENV_VAR, "onnx")  # what AVX2 CPUs choose for it (bfloat16 units choose bf16)
    if precision.choose("unet", torch.device("cpu")).name != "onnx":
        pytest.skip("the U-Net does not run in ONNX Runtime here")
    image = np.random.default_rng(0).integers(0, 255, (40, 48), dtype=np.uint8)
    exported = slicewise.load_model(tiny_checkpoint, device="cpu")  # builds the network and exports its graph
    assert exported.pending is None and len(list(tmp_path.glob("onnx/*.onnx"))) == 1
    builds, build = [], loaded._build
    monkeypatch.setattr(loaded, "_build", lambda *args: builds.append(args) or build(*args))
    cached = slicewise.load_model(tiny_checkpoint, device="cpu")
    prediction = slicewise.predict(cached, image)
    assert not builds and cached.pending is not None and "not built" in repr(cached)
    np.testing.assert_array_equal(prediction.labels, slicewise.predict(exported, image).labels)
    assert slicewise.predict(cached, image, explain="gradcam").explanation is not None
    assert len(builds) == 1 and cached.pending is None
    set_precision(exported, "auto")  # the key of the built network's state dict is the checkpoint's
    assert len(list(tmp_path.glob("onnx/*.onnx"))) == 1
