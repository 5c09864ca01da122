"""Files made to attack: nothing they hold runs, and nothing they are makes slicewise wait forever.

- a Hugging Face folder whose ``config.json`` has an ``auto_map`` and a ``configuration_*.py`` that
  would create a marker file when imported: refused before transformers sees it, through the API,
  ``inspect``, ``convert`` and ``predict --model``;
- pickles whose unpickling would create a marker file, as a checkpoint, as a MONAI bundle's
  ``model.pt`` and as a Hugging Face ``pytorch_model.bin``; a MONAI YAML with a ``!!python`` tag;
- named pipes (FIFOs) where a checkpoint, an image or a volume is expected: refused at once, checked
  in a subprocess with a timeout so a regression fails instead of hanging the suite.
"""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

import slicewise
from slicewise.cli import main
from slicewise.errors import CheckpointError, SlicewiseError


class Payload:
    """Unpickling this runs ``touch marker``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture
def marker(tmp_path: Path) -> Path:
    path = tmp_path / "EXECUTED"
    yield path
    assert not path.exists(), "code from a hostile file ran"


def _remote_code_folder(root: Path, marker: Path) -> Path:
    folder = root / "remote_code"
    folder.mkdir()
    config = {
        "model_type": "segformer",
        "architectures": ["EvilForSegmentation"],
        "auto_map": {"AutoConfig": "configuration_evil.EvilConfig", "AutoModel": "modeling_evil.EvilModel"},
    }
    (folder / "config.json").write_text(json.dumps(config))
    code = f"import pathlib\npathlib.Path({str(marker)!r}).touch()\n"
    (folder / "configuration_evil.py").write_text(code)
    (folder / "modeling_evil.py").write_text(code)
    save_file({"weight": torch.zeros(2)}, str(folder / "model.safetensors"))
    return folder


def test_auto_map_folders_never_reach_transformers(tmp_path: Path, marker: Path, capsys) -> None:
    folder = _remote_code_folder(tmp_path, marker)
    with pytest.raises(CheckpointError, match="auto_map"):
        slicewise.load_model(folder, device="cpu")
    for argv in (
        ["inspect", str(folder)],
        ["convert", str(folder), "-o", str(tmp_path / "x.safetensors")],
        ["predict", str(tmp_path / "none.png"), "--model", str(folder), "--out", str(tmp_path / "o")],
    ):
        assert main(argv) == 2
        assert "auto_map" in capsys.readouterr().err
    assert not (tmp_path / "x.safetensors").exists()


def test_python_files_beside_a_config_are_refused(tmp_path: Path, marker: Path) -> None:
    folder = _remote_code_folder(tmp_path, marker)
    config = json.loads((folder / "config.json").read_text())
    del config["auto_map"]
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="Python code"):
        slicewise.load_model(folder, device="cpu")


def test_an_auto_map_in_a_nested_config_is_refused(tmp_path: Path, marker: Path) -> None:
    folder = _remote_code_folder(tmp_path, marker)
    for file in folder.glob("*.py"):
        file.unlink()
    (folder / "config.json").write_text(
        json.dumps({"model_type": "upernet", "backbone_config": {"model_type": "convnext", "auto_map": {"a": "b.C"}}})
    )
    with pytest.raises(CheckpointError, match="auto_map"):
        slicewise.load_model(folder, device="cpu")


def test_pickle_payloads_never_run(tmp_path: Path, marker: Path) -> None:
    with open(tmp_path / "model.pt", "wb") as handle:
        pickle.dump({"state_dict": Payload(marker)}, handle)
    with pytest.raises(SlicewiseError):
        slicewise.load_model(tmp_path / "model.pt", device="cpu")

    bundle = tmp_path / "bundle"
    (bundle / "configs").mkdir(parents=True)
    (bundle / "models").mkdir()
    (bundle / "configs" / "metadata.json").write_text("{}")
    network = {"_target_": "UNet", "spatial_dims": 2, "in_channels": 1, "out_channels": 2, "channels": [4, 8]}
    (bundle / "configs" / "inference.json").write_text(json.dumps({"network_def": {**network, "strides": [2]}}))
    with open(bundle / "models" / "model.pt", "wb") as handle:
        pickle.dump(Payload(marker), handle)
    with pytest.raises(SlicewiseError):
        slicewise.load_model(bundle, device="cpu")

    hf = tmp_path / "hf"
    hf.mkdir()
    (hf / "config.json").write_text(json.dumps({"model_type": "segformer", "num_labels": 2}))
    with open(hf / "pytorch_model.bin", "wb") as handle:
        pickle.dump(Payload(marker), handle)
    with pytest.raises(SlicewiseError):
        slicewise.load_model(hf, device="cpu")


def test_yaml_python_tags_never_run(tmp_path: Path, marker: Path) -> None:
    bundle = tmp_path / "bundle"
    (bundle / "configs").mkdir(parents=True)
    (bundle / "configs" / "metadata.json").write_text("{}")
    (bundle / "configs" / "inference.yaml").write_text(
        f"network_def: !!python/object/apply:os.system ['touch {marker}']\n"
    )
    with pytest.raises(CheckpointError, match="inference.yaml"):
        slicewise.load_model(bundle, device="cpu")


def test_pipes_are_refused_without_waiting(tmp_path: Path) -> None:
    """Every reader given a FIFO answers at once; a subprocess with a timeout turns a hang into a failure."""
    for name in ("model.safetensors", "image.png", "stack.tif", "volume.nii.gz", "array.npy"):
        os.mkfifo(tmp_path / name)
    script = textwrap.dedent(
        f"""
        import sys
        from pathlib import Path
        import slicewise
        from slicewise.errors import SlicewiseError
        from slicewise.io.images import read_image
        from slicewise.io.lazy import open_image
        from slicewise.io.medical import read_volume
        from slicewise.models.checkpoint import read_header
        from slicewise.models.importers import detect_format

        d = Path({str(tmp_path)!r})
        assert detect_format(d / "model.safetensors") is None
        calls = [
            (read_header, "model.safetensors"),
            (slicewise.load_model, "model.safetensors"),
            (read_image, "image.png"),
            (read_image, "array.npy"),
            (open_image, "stack.tif"),
            (read_volume, "volume.nii.gz"),
        ]
        for function, name in calls:
            try:
                function(d / name)
            except SlicewiseError as error:
                assert "regular file" in str(error), error
            else:
                sys.exit(f"{{function.__name__}} read a pipe")
        print("refused")
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=180)
    assert done.returncode == 0 and "refused" in done.stdout, done.stderr[-2000:]
    result = subprocess.run(
        [sys.executable, "-m", "slicewise.cli", "inspect", str(tmp_path / "model.safetensors")],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 2 and "regular file" in result.stderr
