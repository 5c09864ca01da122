"""Small copies of the real shared datasets (same layout, first images of each split) for fast runs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from slicewise.io.samples import shared_data_dir


def copy_subset(name: str, root: Path, counts: tuple[int, int, int]) -> Path:
    """The first ``counts`` (train, val, test) images of shared dataset ``name`` under ``root``."""
    source = shared_data_dir() / name
    target = root / name
    splits = json.loads((source / "split.json").read_text())
    subset = {split: splits[split][:count] for split, count in zip(("train", "val", "test"), counts, strict=True)}
    for folder in ("images", "masks"):
        (target / folder).mkdir(parents=True)
        for stem in sum(subset.values(), []):
            shutil.copy(source / folder / f"{stem}.png", target / folder / f"{stem}.png")
    (target / "split.json").write_text(json.dumps(subset))
    if not (root / "manifest.json").exists():
        shutil.copy(source.parent / "manifest.json", root / "manifest.json")
    return target


@pytest.fixture(scope="session")
def mini_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """hc18, kvasir_seg and cvc_clinicdb with 24/8/6 images each, beside the shared manifest."""
    root = tmp_path_factory.mktemp("data")
    for name in ("hc18", "kvasir_seg", "cvc_clinicdb"):
        copy_subset(name, root, (24, 8, 6))
    return root


@pytest.fixture(scope="session")
def mini_hc18(mini_data: Path) -> Path:
    return mini_data / "hc18"
