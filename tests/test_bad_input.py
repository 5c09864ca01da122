"""The bad-input matrix: every mistake a person can make is one short sentence, never a traceback.

One table of cases over the three faces' entry points — the ``slicewise`` and ``slicewise-train``
commands (exit status 2 and one ``error:`` line on stderr), the Python API (``load_model``,
``predict``, the readers; a ``SlicewiseError`` subclass) and the core calls the widget makes
(proposals, slices, prompts). Each message must be one line of at most ``MESSAGE_LIMIT`` characters.
Under pytest the CLI boundary re-raises anything unexpected, so an internal bug here fails loudly.
"""

from __future__ import annotations

import functools
import json
import os
import pickle
import re
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tifffile
from PIL import Image
from safetensors.torch import save_file

import slicewise
from slicewise.errors import (
    MESSAGE_LIMIT,
    CheckpointError,
    ImageError,
    InputSpecError,
    NothingToUndoError,
    OptionError,
    ProposalError,
    SlicewiseError,
    TrainingDataError,
    UnknownModelError,
)
from slicewise.models.checkpoint import save_checkpoint
from slicewise.models.registry import build_model, make_spec


@dataclass(frozen=True)
class Case:
    """``run(folder)`` is either CLI argv (a list, first item the program) or a callable that must raise."""

    name: str
    run: Callable[[Path], Any]  # an ``Argv`` for the command-line faces
    expect: type[SlicewiseError] = SlicewiseError
    match: str = ""


# --- the hostile files, built once -------------------------------------------------------------------


def _tiny_spec(**overrides: Any):
    kwargs = {"channels": [4, 8, 16], "strides": [2, 2], **overrides}
    return make_spec("unet", class_names=("background", "a", "b"), in_channels=1, **kwargs)


def _checkpoint_with(path: Path, *, spec_json: str | None = None, tensors=None, provenance: str = "{}") -> Path:
    spec = _tiny_spec()
    state = tensors if tensors is not None else build_model(spec).state_dict()
    metadata = {
        "slicewise.format_version": "1",
        "slicewise.spec": spec_json if spec_json is not None else spec.to_json(),
        "slicewise.provenance": provenance,
    }
    save_file({k: v.clone().contiguous() for k, v in state.items()}, str(path), metadata=metadata)
    return path


def _huge_tiff(path: Path, side: int = 30000) -> Path:
    """A small TIFF whose header claims ``side``² pixels (nothing that large is on disk)."""
    tifffile.imwrite(path, np.zeros((64, 64), np.uint8))
    with tifffile.TiffFile(path, mode="r+b") as tif:
        tags = tif.pages[0].tags
        tags["ImageWidth"].overwrite(side)
        tags["ImageLength"].overwrite(side)
        tags["RowsPerStrip"].overwrite(side)
    return path


def _dataset(root: Path, *, train: int = 3, val: int = 2, test: int = 2, classes: int = 2) -> Path:
    rng = np.random.default_rng(0)
    stems = {"train": [], "val": [], "test": []}
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for split, count in (("train", train), ("val", val), ("test", test)):
        for index in range(count):
            stem = f"{split}{index}"
            stems[split].append(stem)
            Image.fromarray(rng.integers(0, 255, (32, 32), dtype=np.uint8)).save(root / "images" / f"{stem}.png")
            mask = np.zeros((32, 32), np.uint8)
            mask[8:20, 8:20] = 1 + index % (classes - 1)
            Image.fromarray(mask).save(root / "masks" / f"{stem}.png")
    (root / "split.json").write_text(json.dumps(stems))
    return root


class Evil:
    """A pickle that would create a marker file when unpickled."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture(scope="module")
def bad(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("bad")
    spec = _tiny_spec()
    state = build_model(spec).state_dict()
    save_checkpoint(d / "tiny.safetensors", state, spec)
    Image.fromarray(np.zeros((40, 48, 3), np.uint8) + 90).save(d / "rgb.png")
    Image.fromarray(np.zeros((1, 1), np.uint8)).save(d / "one.png")
    (d / "notes.png").write_text("not an image")
    data = (d / "rgb.png").read_bytes()
    (d / "truncated.png").write_bytes(data[: len(data) // 2])
    # a PNG whose header claims 5000 × 5000 pixels (under Pillow's own bomb limit, over slicewise's)
    bomb = bytearray((d / "one.png").read_bytes())
    bomb[16:24] = (5000).to_bytes(4, "big") * 2
    bomb[29:33] = zlib.crc32(bytes(bomb[12:29])).to_bytes(4, "big")
    (d / "bomb.png").write_bytes(bytes(bomb))
    os.mkfifo(d / "fifo.png")
    os.mkfifo(d / "fifo.safetensors")
    os.mkfifo(d / "fifo.tif")
    (d / "empty").mkdir()
    np.save(d / "thin.npy", np.zeros((64, 64, 2), np.uint8))
    np.save(d / "five_d.npy", np.zeros((2, 2, 2, 16, 16), np.uint8))
    np.save(d / "objects.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    tifffile.imwrite(d / "nan.tif", np.full((32, 32), np.nan, np.float32))
    tifffile.imwrite(d / "zlib.tif", np.arange(64 * 64, dtype=np.uint16).reshape(64, 64), compression="zlib")
    raw = bytearray((d / "zlib.tif").read_bytes())
    raw[300:340] = b"\xff" * 40  # inside the compressed strip
    (d / "zlib.tif").write_bytes(bytes(raw))
    _huge_tiff(d / "huge.tif")
    (d / "out_file").write_text("a file where a folder is needed")
    with open(d / "evil.pt", "wb") as handle:
        pickle.dump(Evil(d / "PWNED"), handle)
    (d / "text.safetensors").write_text("hello")
    checkpoint = (d / "tiny.safetensors").read_bytes()
    (d / "truncated.safetensors").write_bytes(checkpoint[: len(checkpoint) // 2])
    _checkpoint_with(d / "spec_not_json.safetensors", spec_json="{not json")
    _checkpoint_with(d / "spec_list.safetensors", spec_json="[1, 2]")
    wrong = json.loads(spec.to_json())
    wrong["input"]["channels"] = "3"
    _checkpoint_with(d / "spec_types.safetensors", spec_json=json.dumps(wrong))
    wide = json.loads(spec.to_json())
    wide["init_kwargs"]["channels"] = [100000, 200000, 400000]
    _checkpoint_with(d / "wide.safetensors", spec_json=json.dumps(wide))
    huge = json.loads(spec.to_json())
    huge["init_kwargs"]["channels"] = [60000, 60000, 60000]
    _checkpoint_with(d / "huge_net.safetensors", spec_json=json.dumps(huge))
    repeats = json.loads(spec.to_json())
    repeats["init_kwargs"]["num_res_units"] = 2**31
    _checkpoint_with(d / "repeats.safetensors", spec_json=json.dumps(repeats))
    unknown = json.loads(spec.to_json())
    unknown["init_kwargs"]["bogus_width"] = 3
    _checkpoint_with(d / "unknown_kwarg.safetensors", spec_json=json.dumps(unknown))
    many = json.loads(spec.to_json())
    many["output"]["class_names"] = [f"c{i}" for i in range(300)]
    _checkpoint_with(d / "classes.safetensors", spec_json=json.dumps(many))
    divisor = json.loads(spec.to_json())
    divisor["input"]["divisor"] = 10**9
    _checkpoint_with(d / "divisor.safetensors", spec_json=json.dumps(divisor))
    _checkpoint_with(d / "provenance.safetensors", provenance="[1]")
    key = next(k for k, v in state.items() if v.is_floating_point())
    for name, change in (
        ("float64", lambda v: v.double()),
        ("int", lambda v: v.to(dtype=__import__("torch").int32)),
        ("bool", lambda v: v.bool()),
        ("nan", lambda v: v * float("nan")),
        ("shape", lambda v: v.new_zeros(tuple(n + 1 for n in v.shape))),
    ):
        _checkpoint_with(d / f"weights_{name}.safetensors", tensors={**state, key: change(state[key])})
    _checkpoint_with(d / "weights_missing.safetensors", tensors={k: v for k, v in state.items() if k != key})
    _checkpoint_with(d / "weights_extra.safetensors", tensors={**state, "extra.weight": state[key]})
    hf = d / "hf_auto_map"
    hf.mkdir()
    (hf / "config.json").write_text(json.dumps({"model_type": "segformer", "auto_map": {"AutoConfig": "evil.C"}}))
    save_file({"w": __import__("torch").zeros(1)}, str(hf / "model.safetensors"))
    bundle = d / "bundle_yaml"
    (bundle / "configs").mkdir(parents=True)
    (bundle / "models").mkdir()
    (bundle / "configs" / "metadata.json").write_text("{}")
    (bundle / "configs" / "inference.yaml").write_text("network_def: {_target_: UNet, spatial_dims: [2\n")
    code = d / "bundle_code"
    (code / "configs").mkdir(parents=True)
    (code / "configs" / "metadata.json").write_text("{}")
    network = {"_target_": "UNet", "spatial_dims": "$2", "in_channels": 1, "out_channels": 2}
    (code / "configs" / "inference.json").write_text(json.dumps({"network_def": network}))
    wrong_type = d / "bundle_list"
    (wrong_type / "configs").mkdir(parents=True)
    (wrong_type / "configs" / "metadata.json").write_text("[]")
    (wrong_type / "configs" / "inference.json").write_text("[1, 2, 3]")
    import nibabel as nib

    nib.save(nib.Nifti1Image(np.zeros((8, 8, 4), np.int16), np.eye(4)), d / "giant.nii")
    header = bytearray((d / "giant.nii").read_bytes())
    header[42:48] = (30000).to_bytes(2, "little") * 3  # dim[1..3]: a 30000³ volume in a 600-byte file
    (d / "giant.nii").write_bytes(bytes(header))
    nii = (d / "giant.nii").read_bytes()
    (d / "short.nii").write_bytes(nii[:352] + b"\x00" * 10)
    (d / "garbage.nii.gz").write_bytes(b"\x1f\x8b" + os.urandom(200))
    ok = _dataset(d / "data_ok")
    _dataset(d / "data_nomask")
    (d / "data_nomask" / "masks" / "train0.png").unlink()
    _dataset(d / "data_badsplit")
    (d / "data_badsplit" / "split.json").write_text("{'train': [}")
    _dataset(d / "data_splitlist")
    (d / "data_splitlist" / "split.json").write_text('{"train": "train0", "val": ["val0"], "test": ["test0"]}')
    _dataset(d / "data_notest", test=0)
    _dataset(d / "data_size")
    Image.fromarray(np.zeros((20, 20), np.uint8)).save(d / "data_size" / "masks" / "train1.png")
    _dataset(d / "data_truncated")
    png = (d / "data_truncated" / "images" / "train0.png").read_bytes()
    (d / "data_truncated" / "images" / "train0.png").write_bytes(png[:100])
    (d / "config_ten.json").write_text(json.dumps({"data": [str(ok)], "epochs": "ten"}))
    (d / "config_key.json").write_text(json.dumps({"data": [str(ok)], "epoch": 3}))
    (d / "config_list.json").write_text("[1, 2]")
    return d


# --- the table ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Argv:
    """A command line: the program (``slicewise`` or ``slicewise-train``) and its arguments, ``{d}`` the folder."""

    program: str
    args: tuple[str, ...]

    def __call__(self, d: Path) -> list[str]:
        return [a.format(d=d) for a in self.args]


def cli(*argv: str) -> Argv:
    return Argv("slicewise", argv)


def train(*argv: str) -> Argv:
    return Argv("slicewise-train", argv)


def _load_split(root: Path, split: str) -> Any:
    from slicewise_train.data import load_split

    return load_split(root, split)


@functools.cache
def _model():
    return slicewise.load_model(slicewise.DEFAULT_MODEL, device="cpu")


def _predict(image: Any, **options: Any) -> Callable[[Path], Any]:
    return lambda d: slicewise.predict(_model(), image, **options)


def _read(function: str, name: str) -> Callable[[Path], Any]:
    def run(d: Path) -> Any:
        from slicewise.io import images, lazy, medical

        return {"read_image": images.read_image, "open_image": lazy.open_image, "read_volume": medical.read_volume}[
            function
        ](d / name)

    return run


def _accept_mismatch(d: Path) -> Any:
    from slicewise.core.proposals import accept

    return accept(np.zeros((4, 4), np.uint8), np.zeros((4, 4), np.uint8), np.zeros((5, 5), np.uint8))


def _undo_empty(d: Path) -> Any:
    from slicewise.core.proposals import EditHistory

    return EditHistory().undo(np.zeros((2, 2), np.uint8), np.zeros((2, 2), np.uint8))


def _component_outside(d: Path) -> Any:
    from slicewise.core.proposals import accept

    zeros = np.zeros((4, 4), np.uint8)
    return accept(zeros, zeros, np.ones((4, 4), np.uint8), component_at=(10, 10))


def _take_slice(d: Path) -> Any:
    from slicewise.core.slices import take_slice
    from slicewise.core.types import SliceRef

    return take_slice(np.zeros((3, 8, 8)), SliceRef((7,)))


def _slice_of_1d(d: Path) -> Any:
    from slicewise.core.slices import slice_ref_from_point

    return slice_ref_from_point((8,), (1.0,), rgb=False)


def _prompt(**fields: Any) -> Callable[[Path], Any]:
    def run(d: Path) -> Any:
        from slicewise.core.prompting import Prompt

        return Prompt(**fields)

    return run


def _rank_2d(d: Path) -> Any:
    from slicewise.core.inference import run_to_end
    from slicewise.core.review import iter_rank_slices

    return run_to_end(iter_rank_slices(_model(), np.zeros((32, 32), np.uint8)))


CASES = [
    # slicewise predict / rank: images
    Case("predict-missing", cli("predict", "{d}/missing.png", "--out", "{d}/o"), match="does not exist"),
    Case("predict-not-an-image", cli("predict", "{d}/notes.png", "--out", "{d}/o"), match="notes.png"),
    Case("predict-truncated-png", cli("predict", "{d}/truncated.png", "--out", "{d}/o"), match="truncated.png"),
    Case("predict-1x1", cli("predict", "{d}/one.png", "--out", "{d}/o"), match="at least 8 px"),
    Case("predict-png-bomb", cli("predict", "{d}/bomb.png", "--out", "{d}/o"), match="megapixels"),
    Case("predict-fifo-image", cli("predict", "{d}/fifo.png", "--out", "{d}/o"), match="not a regular file"),
    Case("predict-empty-folder", cli("predict", "{d}/empty", "--out", "{d}/o"), match="No image files"),
    Case("predict-thin-channels", cli("predict", "{d}/thin.npy", "--out", "{d}/o"), match="at least 8 px"),
    Case("predict-5d", cli("predict", "{d}/five_d.npy", "--out", "{d}/o"), match="2D slice or a 3D stack"),
    Case("predict-object-npy", cli("predict", "{d}/objects.npy", "--out", "{d}/o"), match="objects.npy"),
    Case("predict-all-nan", cli("predict", "{d}/nan.tif", "--out", "{d}/o"), match="no finite"),
    Case("predict-corrupt-zlib-tiff", cli("predict", "{d}/zlib.tif", "--out", "{d}/o"), match="zlib.tif"),
    Case("predict-30000-tiff", cli("predict", "{d}/huge.tif", "--out", "{d}/o"), match="megapixels"),
    Case("predict-out-is-file", cli("predict", "{d}/rgb.png", "--out", "{d}/out_file"), match="out_file"),
    Case("predict-out-under-file", cli("predict", "{d}/rgb.png", "--out", "{d}/out_file/x"), match="out_file"),
    Case(
        "predict-rgb-into-gray-model",
        cli("predict", "{d}/rgb.png", "--model", "{d}/tiny.safetensors", "--out", "{d}/o"),
        match="grayscale",
    ),
    Case("rank-broken", cli("rank", "{d}/truncated.png"), match="truncated.png"),
    # slicewise predict / inspect / convert: models
    Case("model-unknown-name", cli("predict", "{d}/rgb.png", "--model", "nosuch", "--out", "{d}/o"), match="nosuch"),
    Case("model-missing-file", cli("inspect", "{d}/missing.safetensors"), match="does not exist"),
    Case("model-fifo", cli("inspect", "{d}/fifo.safetensors"), match="not a regular file"),
    Case("model-pickle", cli("inspect", "{d}/evil.pt"), match="evil.pt"),
    Case("model-text", cli("inspect", "{d}/text.safetensors"), match="not a safetensors"),
    Case("model-truncated", cli("inspect", "{d}/truncated.safetensors"), match="truncated"),
    Case("model-folder", cli("inspect", "{d}/empty"), match="empty"),
    Case("spec-not-json", cli("inspect", "{d}/spec_not_json.safetensors"), match="malformed"),
    Case("spec-a-list", cli("inspect", "{d}/spec_list.safetensors"), match="malformed"),
    Case("spec-wrong-types", cli("inspect", "{d}/spec_types.safetensors"), match="channels"),
    Case("spec-300-classes", cli("inspect", "{d}/classes.safetensors"), match="255 classes"),
    Case("spec-divisor", cli("inspect", "{d}/divisor.safetensors"), match="divisor"),
    Case("provenance-a-list", cli("inspect", "{d}/provenance.safetensors"), match="provenance"),
    Case(
        "spec-absurd-widths",
        cli("predict", "{d}/rgb.png", "--model", "{d}/wide.safetensors", "--out", "{d}/o"),
        match="beyond any unet",
    ),
    Case(
        "spec-huge-network",
        cli("predict", "{d}/rgb.png", "--model", "{d}/huge_net.safetensors", "--out", "{d}/o"),
        match="GiB",
    ),
    Case(
        "spec-repeat-count",
        cli("predict", "{d}/rgb.png", "--model", "{d}/repeats.safetensors", "--out", "{d}/o"),
        match="num_res_units",
    ),
    Case(
        "spec-unknown-kwarg",
        cli("predict", "{d}/rgb.png", "--model", "{d}/unknown_kwarg.safetensors", "--out", "{d}/o"),
        match="bogus_width",
    ),
    *(
        Case(
            f"weights-{name}",
            cli("predict", "{d}/rgb.png", "--model", f"{{d}}/weights_{name}.safetensors", "--out", "{d}/o"),
            match=pattern,
        )
        for name, pattern in (
            ("float64", "float64"),
            ("int", "int32"),
            ("bool", "bool"),
            ("nan", "NaN"),
            ("shape", "shape"),
            ("missing", "missing"),
            ("extra", "unexpected"),
        )
    ),
    Case("hf-auto-map-inspect", cli("inspect", "{d}/hf_auto_map"), match="auto_map"),
    Case("hf-auto-map-convert", cli("convert", "{d}/hf_auto_map", "-o", "{d}/x.safetensors"), match="auto_map"),
    Case(
        "hf-auto-map-predict",
        cli("predict", "{d}/rgb.png", "--model", "{d}/hf_auto_map", "--out", "{d}/o"),
        match="auto_map",
    ),
    Case("bundle-bad-yaml", cli("inspect", "{d}/bundle_yaml"), match="inference.yaml"),
    Case("bundle-python-expression", cli("inspect", "{d}/bundle_code"), match="Python code"),
    Case("bundle-wrong-json-type", cli("inspect", "{d}/bundle_list"), match="bundle_list|inference.json"),
    # slicewise-train
    Case("fit-missing-folder", train("fit", "--data", "{d}/nowhere", "--out", "{d}/run"), match="does not exist"),
    Case("fit-missing-mask", train("fit", "--data", "{d}/data_nomask", "--out", "{d}/run"), match="missing"),
    Case("fit-bad-split-json", train("fit", "--data", "{d}/data_badsplit", "--out", "{d}/run"), match="valid JSON"),
    Case("fit-split-not-list", train("fit", "--data", "{d}/data_splitlist", "--out", "{d}/run"), match="list"),
    Case("fit-size-mismatch", train("fit", "--data", "{d}/data_size", "--out", "{d}/run"), match="differ in size"),
    Case("fit-truncated-png", train("fit", "--data", "{d}/data_truncated", "--out", "{d}/run"), match="train0.png"),
    Case("fit-epochs-ten", train("fit", "--config", "{d}/config_ten.json", "--out", "{d}/run"), match="epochs"),
    Case("fit-unknown-key", train("fit", "--config", "{d}/config_key.json", "--out", "{d}/run"), match="epoch"),
    Case("fit-config-list", train("fit", "--config", "{d}/config_list.json", "--out", "{d}/run"), match="object"),
    Case("fit-config-missing", train("fit", "--config", "{d}/nope.json", "--out", "{d}/run"), match="does not exist"),
    Case("fit-zero-epochs", train("fit", "--data", "{d}/data_ok", "--epochs", "0", "--out", "{d}/run"), match="1"),
    Case(
        "evaluate-empty-test",
        train("evaluate", "--model", "{d}/tiny.safetensors", "--data", "{d}/data_notest"),
        match="empty",
    ),
    Case(
        "evaluate-class-mismatch",
        train("evaluate", "--model", "{d}/tiny.safetensors", "--data", "{d}/data_ok"),
        match="classes",
    ),
    Case("evaluate-missing-model", train("evaluate", "--model", "{d}/x.safetensors", "--data", "{d}/data_ok")),
    Case("split-missing-mask", lambda d: _load_split(d / "data_nomask", "train"), TrainingDataError, "missing"),
    Case("split-empty-test", lambda d: _load_split(d / "data_notest", "test"), TrainingDataError, "empty"),
    # the Python API
    Case("load-none", lambda d: slicewise.load_model(None), OptionError, "NoneType"),
    Case("load-int", lambda d: slicewise.load_model(123), OptionError, "int"),
    Case("load-empty-list", lambda d: slicewise.load_model([]), OptionError, "empty"),
    Case("load-list-of-none", lambda d: slicewise.load_model([None]), OptionError, "NoneType"),
    Case("load-unknown", lambda d: slicewise.load_model("nosuch"), UnknownModelError, "nosuch"),
    Case("load-fifo", lambda d: slicewise.load_model(d / "fifo.safetensors"), CheckpointError, "regular file"),
    Case("load-pickle", lambda d: slicewise.load_model(d / "evil.pt"), CheckpointError, "evil.pt"),
    Case("load-nan-weights", lambda d: slicewise.load_model(d / "weights_nan.safetensors"), CheckpointError, "NaN"),
    Case("predict-none", _predict(None), ImageError, "NoneType"),
    Case("predict-list", _predict([[1, 2], [3, 4]]), ImageError, "list"),
    Case("predict-path", _predict("image.png"), ImageError, "str"),
    Case("predict-unknown-uncertainty", _predict(np.zeros((32, 32)), uncertainty="magic"), OptionError, "magic"),
    Case("predict-unknown-explain", _predict(np.zeros((32, 32)), explain="why"), OptionError, "why"),
    Case("predict-tile-0", _predict(np.zeros((32, 32)), tile_size=0), OptionError, "tile_size"),
    Case("predict-tile-text", _predict(np.zeros((32, 32)), tile_size="big"), OptionError, "tile_size"),
    Case("predict-target-99", _predict(np.zeros((32, 32)), explain="saliency", target_class=99), match="99"),
    Case("predict-box-3", _predict(np.zeros((32, 32, 3)), box=(1, 2, 3)), OptionError, "four"),
    Case("predict-box-nan", _predict(np.zeros((32, 32, 3)), box=(1, 2, 3, float("nan"))), OptionError, "finite"),
    Case("predict-1x1", _predict(np.zeros((1, 1, 3), np.uint8)), ImageError, "at least 8 px"),
    Case("predict-empty", _predict(np.zeros((0, 5))), ImageError),
    Case("predict-complex", _predict(np.zeros((16, 16), np.complex64)), ImageError, "complex"),
    Case("predict-all-nan", _predict(np.full((16, 16), np.nan)), ImageError, "finite"),
    Case("predict-too-big", _predict(np.zeros((5000, 5000), np.uint8)), ImageError, "megapixels"),
    Case(
        "predict-rgba-gray-model",
        lambda d: slicewise.predict(d / "tiny.safetensors", np.zeros((32, 32, 4))),
        InputSpecError,
    ),
    # readers (what the widget's open dialog and napari's reader call)
    Case("read-fifo", _read("read_image", "fifo.png"), ImageError, "regular file"),
    Case("open-fifo-tiff", _read("open_image", "fifo.tif"), ImageError, "regular file"),
    Case("open-30000-tiff", _read("open_image", "huge.tif"), ImageError, "megapixels"),
    Case("read-png-bomb", _read("read_image", "bomb.png"), ImageError, "megapixels"),
    Case("read-zlib-tiff", _read("read_image", "zlib.tif"), ImageError, "zlib.tif"),
    Case("volume-giant-nifti", _read("read_volume", "giant.nii"), ImageError, "giant.nii"),
    Case("volume-short-nifti", _read("read_volume", "short.nii"), ImageError, "short.nii"),
    Case("volume-garbage-gz", _read("read_volume", "garbage.nii.gz"), ImageError, "garbage.nii.gz"),
    # core calls the widget makes
    Case("accept-shape-mismatch", _accept_mismatch, ProposalError),
    Case("undo-nothing", _undo_empty, NothingToUndoError, "nothing to undo"),
    Case("accept-component-outside", _component_outside, ProposalError, "outside"),
    Case("take-slice-outside", _take_slice, ImageError, "outside"),
    Case("slice-of-1d", _slice_of_1d, ImageError, "fewer than two"),
    Case("prompt-empty", _prompt(), SlicewiseError, "box"),
    Case("prompt-point-triple", _prompt(points=((1, 2, 3),), point_labels=(1,)), OptionError, "two numbers"),
    Case("prompt-labels-count", _prompt(points=((1, 2),), point_labels=(1, 0)), SlicewiseError, "labels"),
    Case("rank-2d-image", _rank_2d, ImageError, "3D stack"),
]


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_bad_input_is_one_sentence(case: Case, bad: Path, capsys: pytest.CaptureFixture[str]) -> None:
    if isinstance(case.run, Argv):
        if case.run.program == "slicewise":
            from slicewise.cli import main
        else:
            from slicewise_train.cli import main
        status = main(case.run(bad))
        lines = capsys.readouterr().err.strip().splitlines()
        errors = [line for line in lines if "error:" in line]
        assert status == 2, lines
        assert len(errors) == 1, lines
        message = errors[0].split("error: ", 1)[1]
    else:
        with pytest.raises(case.expect) as raised:
            case.run(bad)
        message = str(raised.value)
    assert "\n" not in message and 0 < len(message) <= MESSAGE_LIMIT, f"not one short line: {message!r}"
    if case.match:
        assert re.search(case.match, message), message
    assert not (bad / "PWNED").exists(), "a pickle payload ran"


def test_the_table_is_large_enough() -> None:
    kinds = {"cli" if isinstance(c.run, Argv) else "call" for c in CASES}
    assert len(CASES) >= 60 and kinds == {"cli", "call"}
