"""The one resolver for model names and paths: bundled, wheel-shipped, checkpoint, foreign."""

from __future__ import annotations

from pathlib import Path

import pytest

import slicewise
from slicewise.errors import UnknownModelError
from slicewise.models.sources import bundled_models, model_names, packaged_models, resolve


def test_each_kind_of_source_resolves(tmp_path: Path) -> None:
    bundled = resolve(slicewise.DEFAULT_MODEL)
    assert bundled.kind == "bundled" and bundled.path == bundled_models()[slicewise.DEFAULT_MODEL]
    assert resolve("lite_medsam").kind == "packaged" and "lite_medsam" in packaged_models()
    assert resolve(bundled.path).kind == "checkpoint"
    onnx = tmp_path / "m.onnx"
    onnx.write_bytes(b"not a graph")
    assert resolve(tmp_path / "missing.safetensors").kind == "checkpoint"  # its loader says it is missing
    assert model_names() == list(bundled_models()) and model_names(promptable=True) == packaged_models()


def test_an_unknown_bare_name_lists_every_known_name() -> None:
    with pytest.raises(UnknownModelError, match="lite_medsam") as caught:
        resolve("no_such_model")
    assert slicewise.DEFAULT_MODEL in str(caught.value)


def test_importers_never_import_the_loader() -> None:
    """The import circle loaded ↔ importers is gone: importers read, ``sources`` builds."""
    folder = Path(slicewise.__file__).parent / "models"
    for module in (folder / "importers").glob("*.py"):
        text = module.read_text()
        assert "import slicewise.models.loaded" not in text and "from slicewise.models.loaded" not in text, module.name
        assert "from slicewise.models.sources" not in text, module.name
    assert "slicewise.models.importers" not in (folder / "loaded.py").read_text()
