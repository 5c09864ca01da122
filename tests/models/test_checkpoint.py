import json
import os
import pickle
import zipfile

import pytest
import torch
from safetensors.torch import save_file

import slicewise
from slicewise.errors import CheckpointError, DeviceError, UnknownModelError
from slicewise.models.checkpoint import read_header, save_checkpoint
from slicewise.models.registry import build_model, get_adapter, make_spec
from slicewise.models.spec import ModelSpec


def test_round_trip_keeps_spec_provenance_and_weights(tiny_checkpoint):
    header = read_header(tiny_checkpoint)
    assert header.spec.output.class_names == ("background", "a", "b")
    assert header.provenance == {"note": "tiny"}
    model = slicewise.load_model(tiny_checkpoint, device="cpu")
    assert model.spec == header.spec
    assert ModelSpec.from_json(header.spec.to_json()) == header.spec


class _Exploit:
    """Unpickling this would create a marker file: a stand-in for arbitrary code."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_pickle_is_refused_and_never_executes(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "model.safetensors"
    path.write_bytes(pickle.dumps(_Exploit(str(marker))))
    with pytest.raises(CheckpointError, match="Python pickle.*never unpickles"):
        slicewise.load_model(path)
    assert not marker.exists()


def test_torch_save_file_is_refused(tmp_path):
    path = tmp_path / "model.pt"
    torch.save({"weight": torch.zeros(2)}, path)
    assert zipfile.is_zipfile(path)
    with pytest.raises(CheckpointError, match="PyTorch zip/pickle"):
        slicewise.load_model(path)


def test_truncated_checkpoint_is_one_sentence(tiny_checkpoint, tmp_path):
    truncated = tmp_path / "truncated.safetensors"
    data = tiny_checkpoint.read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated"):
        slicewise.load_model(truncated)


def test_safetensors_without_spec_and_unknown_family(tmp_path):
    plain = tmp_path / "plain.safetensors"
    save_file({"w": torch.zeros(2)}, str(plain))
    with pytest.raises(CheckpointError, match="without a slicewise model spec"):
        slicewise.load_model(plain)
    alien = tmp_path / "alien.safetensors"
    spec = {"arch": "hypernet9000", "init_kwargs": {}, "input": {}, "output": {}, "name": "x"}
    save_file({"w": torch.zeros(2)}, str(alien), metadata={"slicewise.spec": json.dumps(spec)})
    with pytest.raises(UnknownModelError, match="Unknown architecture 'hypernet9000'; choose one of: .*unet"):
        slicewise.load_model(alien)


def test_weights_that_do_not_fit_the_spec(tmp_path):
    spec = make_spec("unet", channels=[4, 8, 16], strides=[2, 2])
    bigger = make_spec("unet", channels=[8, 16, 32], strides=[2, 2])
    path = save_checkpoint(tmp_path / "mismatch.safetensors", build_model(bigger).state_dict(), spec)
    with pytest.raises(CheckpointError, match="do not fit a unet"):
        slicewise.load_model(path)


def test_missing_file_and_unknown_name():
    with pytest.raises(UnknownModelError, match="No bundled model or file named 'nosuchmodel'"):
        slicewise.load_model("nosuchmodel")
    with pytest.raises(CheckpointError, match="does not exist"):
        slicewise.load_model("/nonexistent/model.safetensors")


def test_cuda_request_without_gpu_is_one_sentence(tiny_checkpoint):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(DeviceError, match="no usable CUDA GPU"):
        slicewise.load_model(tiny_checkpoint, device="cuda")


def test_bundled_default_model_describes_its_training():
    header = read_header(slicewise.bundled_models()[slicewise.DEFAULT_MODEL])
    assert header.spec.output.class_names == ("background", "polyp")
    assert header.provenance["data"] == ["kvasir_seg"]
    metrics = header.provenance["metrics"]
    assert metrics["test_mean_dice_kvasir_seg"] >= 0.85 and metrics["test_mean_dice_cvc_clinicdb"] >= 0.85
    assert header.provenance["use"]  # fast or accurate, shown by `slicewise models`
    assert get_adapter(header.spec.arch).kind == "GP-VM"
    assert header.spec.init_kwargs["encoder"] == "tf_efficientnet_lite0"
    assert slicewise.bundled_models()[slicewise.DEFAULT_MODEL].stat().st_size < 10_000_000  # weights stored as fp16
