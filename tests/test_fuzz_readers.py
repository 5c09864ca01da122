"""A bounded, seeded fuzz of the public readers: every mutated file is read or refused in one sentence.

The mutations and readers are those of ``benchmarks/fuzz_inputs.py`` (which runs 10,000 cases in
worker processes with timeouts); here a few hundred run in-process, so any exception other than a
``SlicewiseError`` with a one-line message fails the test with its traceback.
"""

from __future__ import annotations

import importlib.util
import random
import shutil
import sys
from pathlib import Path

import pytest

from slicewise.errors import MESSAGE_LIMIT, SlicewiseError

CASES = 240
KINDS = [
    "png_gray",
    "png_rgb",
    "jpeg",
    "bmp",
    "tiff_plain",
    "tiff_zlib",
    "tiff_lzw",
    "tiff_stack",
    "tiff_tiled",
    "npy",
    "nifti",
    "nifti_gz",
    "nrrd",
    "dicom",
    "checkpoint_bytes",
    "checkpoint_spec",
    "checkpoint_weights",
]


@pytest.fixture(scope="module")
def fuzz():
    path = Path(__file__).parents[1] / "benchmarks" / "fuzz_inputs.py"
    spec = importlib.util.spec_from_file_location("fuzz_inputs", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["fuzz_inputs"] = module
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop("fuzz_inputs", None)


@pytest.fixture(scope="module")
def seeds(fuzz, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return fuzz.make_seeds(tmp_path_factory.mktemp("seeds"), KINDS)


def test_mutated_files_are_read_or_refused_in_one_sentence(fuzz, seeds, tmp_path: Path) -> None:
    outcomes = {"read": 0, "sentence": 0}
    for number in range(CASES):
        rng = random.Random(f"ci:{number}")
        kind = KINDS[number % len(KINDS)]
        folder = tmp_path / str(number)
        folder.mkdir()
        path = fuzz.make_case(kind, seeds, folder, rng)
        try:
            fuzz.read_case(kind, path, rng.random())
            outcomes["read"] += 1
        except SlicewiseError as error:
            message = str(error)
            assert "\n" not in message and 0 < len(message) <= MESSAGE_LIMIT, f"case {number} ({kind}): {message!r}"
            outcomes["sentence"] += 1
        shutil.rmtree(folder)
    assert outcomes["sentence"] > CASES // 4, outcomes  # the mutations do break files
