"""The core, the models and the API import without Qt or napari (the thin-skin rule), and lightly."""

import subprocess
import sys

import numpy as np
import pytest


def imports_without(modules: str, absent: tuple[str, ...], then: str = "") -> None:
    """In a fresh interpreter, importing ``modules`` loads none of ``absent`` (then ``then`` runs)."""
    code = (
        f"import sys, {modules};{then}"
        f"bad = [m for m in {absent!r} if m in sys.modules];"
        "print(bad); sys.exit(1 if bad else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def test_core_and_models_import_without_qt_or_napari():
    imports_without(
        "slicewise, slicewise.core.inference, slicewise.core.slices, slicewise.core.preprocess, "
        "slicewise.models.registry, slicewise.models.checkpoint, slicewise.cli, slicewise.io.samples, "
        "slicewise.core.prompting, slicewise.core.tiling, slicewise.models.sources, slicewise.models.importers, "
        "slicewise.io.autosave, slicewise.io.lazy, slicewise.io.medical",
        ("qtpy", "napari", "PySide6", "PyQt5", "PyQt6", "magicgui"),
        then="from slicewise.models.registry import architectures, get_adapter;"
        "[get_adapter(a) for a in architectures()];",
    )


def test_importing_slicewise_and_its_readers_loads_no_torch_or_monai():
    """``import slicewise`` and the readers stay light: torch comes with the first model (``python -X importtime``)."""
    imports_without("slicewise, slicewise.io.medical, slicewise.io.images, slicewise.io.lazy", ("torch", "monai"))
    imports_without("slicewise", (), then="assert slicewise.DEFAULT_MODEL and 'torch' in sys.modules;")


def test_predicting_with_a_cached_graph_imports_no_network_library(tiny_checkpoint, tmp_path, monkeypatch):
    """A U-Net whose ONNX graph is cached predicts a folder without MONAI: ``slicewise predict``'s startup."""
    from PIL import Image

    import slicewise

    monkeypatch.setenv("SLICEWISE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("SLICEWISE_PRECISION", "onnx")  # AVX2 CPUs choose it; bfloat16 ones run bf16 PyTorch
    if slicewise.load_model(tiny_checkpoint, device="cpu").precision.name != "onnx":  # exports the graph
        pytest.skip("the U-Net does not run in ONNX Runtime here")
    (tmp_path / "in").mkdir()
    Image.fromarray(np.full((40, 48), 90, np.uint8)).save(tmp_path / "in" / "a.png")
    arguments = ["predict", str(tmp_path / "in"), "--model", str(tiny_checkpoint), "--out", str(tmp_path / "out")]
    code = (
        f"import sys; from slicewise.cli import main; main({arguments!r} + ['--device', 'cpu']); "
        "print(sorted(m for m in ('monai', 'timm', 'segmentation_models_pytorch') if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stdout.strip().endswith("[]"), result.stdout + result.stderr
    assert (tmp_path / "out" / "a.png").is_file()
