"""Mutated checkpoints, model folders and images through every public reader, in subprocesses with timeouts.

Seeds are small valid files written here (PNG gray/RGB, JPEG, BMP, TIFF plain/zlib/LZW/stack/tiled,
.npy, NIfTI .nii/.nii.gz, NRRD, DICOM, a slicewise checkpoint, a Hugging Face SegFormer folder and a
MONAI bundle). Each case mutates one seed, seeded and reproducible: byte flips, overwrites with
boundary integers, truncation, chunk duplication, and for the checkpoint's JSON header and the
model folders' JSON configs, structural mutations (wrong types, huge or negative numbers, deleted
keys, unknown keys, deep nesting); for the checkpoint's weights, other dtypes, NaN and other shapes.
The case then runs through the public reader of its kind in a worker process:

- images: ``slicewise.io.images.read_image`` or ``slicewise.io.lazy.open_image`` + the first slice;
- medical files: ``slicewise.io.medical.read_volume``;
- checkpoints and model folders: ``slicewise.load_model`` and a prediction on a 40×40 image.

Each outcome is one of: **read** (the reader returned), **sentence** (a ``SlicewiseError`` whose
message is one line of at most 300 characters), **other** (any other exception, or a multi-line or
overlong message), **hang** (no answer within ``--timeout`` s; the worker is killed) or **crash**
(the worker died: a signal, or the kernel's out-of-memory killer). Workers run with an 8 GiB
address-space limit so a giant allocation is a ``MemoryError`` rather than a machine in trouble.
Baseline: the issue-14 audit of the readers before this work, 3,150 mutated files: 468 raw
tracebacks or non-slicewise exceptions and 2 hangs (0.149 and 0.0006 of cases).

    nice -n 10 python benchmarks/fuzz_inputs.py [--cases 10000] [--seed 0] [--jobs 1] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import random
import shutil
import struct
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

OUTCOMES = ("read", "sentence", "other", "hang", "crash")
MESSAGE_LIMIT = 300
MEMORY_LIMIT = 8 * 2**30
# kind → weight in the mix (checkpoints and model folders cost more per case than images)
KINDS = {
    "png_gray": 6,
    "png_rgb": 6,
    "jpeg": 4,
    "bmp": 2,
    "tiff_plain": 5,
    "tiff_zlib": 6,
    "tiff_lzw": 3,
    "tiff_stack": 5,
    "tiff_tiled": 4,
    "npy": 3,
    "nifti": 5,
    "nifti_gz": 5,
    "nrrd": 4,
    "dicom": 5,
    "checkpoint_bytes": 8,
    "checkpoint_spec": 10,
    "checkpoint_weights": 6,
    "hf_config": 4,
    "monai_config": 4,
}


# --- seeds ---------------------------------------------------------------------------------------


def _image(rng: Any, shape: tuple[int, ...], dtype: str = "uint8") -> Any:
    import numpy as np

    yy, xx = np.mgrid[: shape[0], : shape[1]]
    base = ((np.sin(xx / 5.0) + np.cos(yy / 7.0)) * 60 + 120).astype(np.float32)
    if len(shape) == 3:
        base = np.stack([base + 20 * c for c in range(shape[2])], axis=-1)
    return np.clip(base + rng.normal(0, 5, base.shape), 0, 255).astype(dtype)


def make_seeds(folder: Path, kinds: list[str] | None = None) -> dict[str, Path]:
    """One small valid file (or model folder) per kind (the model folders only when ``kinds`` asks)."""
    import nibabel as nib
    import nrrd
    import numpy as np
    import tifffile
    from PIL import Image

    rng = np.random.default_rng(0)
    seeds: dict[str, Path] = {}
    gray, rgb = _image(rng, (48, 40)), _image(rng, (40, 48, 3))
    for kind, array, name in (("png_gray", gray, "g.png"), ("png_rgb", rgb, "c.png"), ("bmp", rgb, "c.bmp")):
        Image.fromarray(array).save(folder / name)
        seeds[kind] = folder / name
    Image.fromarray(rgb).save(folder / "c.jpg", quality=85)
    seeds["jpeg"] = folder / "c.jpg"
    tifffile.imwrite(folder / "plain.tif", gray)
    tifffile.imwrite(folder / "zlib.tif", gray, compression="zlib")
    Image.fromarray(rgb).save(folder / "lzw.tif", compression="tiff_lzw")  # tifffile writes LZW only with imagecodecs
    tifffile.imwrite(folder / "stack.tif", np.stack([gray] * 4), imagej=True, metadata={"axes": "ZYX"})
    tifffile.imwrite(folder / "tiled.tif", _image(rng, (64, 64)), tile=(32, 32), compression="zlib")
    seeds.update(
        tiff_plain=folder / "plain.tif",
        tiff_zlib=folder / "zlib.tif",
        tiff_lzw=folder / "lzw.tif",
        tiff_stack=folder / "stack.tif",
        tiff_tiled=folder / "tiled.tif",
    )
    np.save(folder / "a.npy", gray)
    seeds["npy"] = folder / "a.npy"
    volume = _image(rng, (24, 20, 5)).astype(np.int16)
    nib.save(nib.Nifti1Image(volume, np.diag([0.8, 0.8, 2.0, 1.0])), folder / "v.nii")
    nib.save(nib.Nifti1Image(volume, np.diag([0.8, 0.8, 2.0, 1.0])), folder / "v.nii.gz")
    nrrd.write(str(folder / "v.nrrd"), volume, {"space": "left-posterior-superior", "space directions": np.eye(3)})
    seeds.update(nifti=folder / "v.nii", nifti_gz=folder / "v.nii.gz", nrrd=folder / "v.nrrd")
    seeds["dicom"] = _dicom(folder / "ct.dcm", volume[:, :, 0].T.copy())
    seeds["checkpoint_bytes"] = seeds["checkpoint_spec"] = seeds["checkpoint_weights"] = _checkpoint(folder)
    if kinds is None or "hf_config" in kinds:
        seeds["hf_config"] = _hf_folder(folder / "hf")
    if kinds is None or "monai_config" in kinds:
        seeds["monai_config"] = _monai_bundle(folder / "bundle")
    return seeds


def _dicom(path: Path, pixels: Any) -> Path:
    import pydicom
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = pydicom.Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.SeriesInstanceUID, ds.StudyInstanceUID = "CT", generate_uid(), generate_uid()
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    ds.PixelSpacing, ds.ImagePositionPatient = [0.7, 0.7], [0, 0, 0]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.RescaleSlope, ds.RescaleIntercept = 1, -1024
    ds.PixelData = pixels.astype("<i2").tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


def _checkpoint(folder: Path) -> Path:
    from slicewise.models.checkpoint import save_checkpoint
    from slicewise.models.registry import build_model, make_spec

    spec = make_spec("unet", class_names=("background", "a"), in_channels=1, channels=[4, 8, 16], strides=[2, 2])
    return save_checkpoint(folder / "tiny.safetensors", build_model(spec).state_dict(), spec, {"note": "seed"})


def _hf_folder(folder: Path) -> Path:
    from slicewise._compat import ensure_torchvision_ops

    ensure_torchvision_ops()
    from transformers import SegformerConfig, SegformerForSemanticSegmentation

    config = SegformerConfig(
        num_channels=3,
        num_labels=2,
        hidden_sizes=[8, 16, 24, 32],
        decoder_hidden_size=16,
        depths=[1, 1, 1, 1],
        num_attention_heads=[1, 1, 1, 1],
    )
    SegformerForSemanticSegmentation(config).save_pretrained(folder)
    return folder


def _monai_bundle(folder: Path) -> Path:
    import torch
    from monai.networks.nets import UNet

    (folder / "configs").mkdir(parents=True)
    (folder / "models").mkdir()
    kwargs = {"channels": [4, 8, 16], "strides": [2, 2], "num_res_units": 1}
    network = UNet(spatial_dims=2, in_channels=1, out_channels=2, **kwargs)
    torch.save(network.state_dict(), folder / "models" / "model.pt")
    inference = {
        "network_def": {"_target_": "UNet", "spatial_dims": 2, "in_channels": 1, "out_channels": 2, **kwargs},
        "preprocessing": {"transforms": [{"_target_": "ScaleIntensityd", "keys": "image"}]},
    }
    (folder / "configs" / "inference.json").write_text(json.dumps(inference))
    metadata = {"network_data_format": {"inputs": {"image": {"num_channels": 1}}, "outputs": {}}}
    (folder / "configs" / "metadata.json").write_text(json.dumps(metadata))
    return folder


# --- mutations -----------------------------------------------------------------------------------

_INTERESTING = [0, 1, 0x7F, 0x80, 0xFF, 0x7FFF, 0x8000, 0xFFFF, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF]


def mutate_bytes(data: bytes, rng: random.Random) -> bytes:
    """One to four byte-level mutations, biased towards the header (the first 512 bytes)."""
    out = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        if not out:
            break
        where = rng.randrange(min(len(out), 512)) if rng.random() < 0.7 else rng.randrange(len(out))
        op = rng.random()
        if op < 0.3:
            out[where] ^= 1 << rng.randrange(8)
        elif op < 0.55:
            value = rng.choice(_INTERESTING)
            size = rng.choice((1, 2, 4))
            packed = struct.pack(rng.choice("<>") + {1: "B", 2: "H", 4: "I"}[size], value & ((1 << (8 * size)) - 1))
            out[where : where + size] = packed
        elif op < 0.7:
            out[where] = rng.randrange(256)
        elif op < 0.82:
            del out[rng.randrange(len(out)) :]  # truncate
        elif op < 0.92:
            start = rng.randrange(len(out))
            chunk = out[start : start + rng.randint(1, 64)]
            out[where:where] = chunk * rng.randint(1, 8)
        else:
            del out[where : where + rng.randint(1, 32)]
    return bytes(out)


def _hostile_value(rng: random.Random, original: Any) -> Any:
    choices = [
        None,
        True,
        -1,
        0,
        2**31,
        10**12,
        1e308,
        float("nan"),
        "",
        "x" * 200,
        "ten",
        [],
        [1] * 40,
        {},
        {"a": 1},
        [[[[[[[[[[[]]]]]]]]]]],
        "\x1b[31mred\nline",
    ]
    if isinstance(original, int | float) and not isinstance(original, bool):
        choices += [original * 1000, -original, original + 1]
    if isinstance(original, list) and original:
        choices += [original[:-1], original + original, [str(v) for v in original]]
    return rng.choice(choices)


def mutate_json(value: Any, rng: random.Random) -> Any:
    """Replace, delete or add one entry somewhere in a JSON value."""
    if isinstance(value, dict) and value and rng.random() < 0.75:
        key = rng.choice(sorted(value))
        op = rng.random()
        copy = dict(value)
        if op < 0.5 and isinstance(copy[key], dict | list) and copy[key]:
            copy[key] = mutate_json(copy[key], rng)
        elif op < 0.8:
            copy[key] = _hostile_value(rng, copy[key])
        elif op < 0.9:
            del copy[key]
        else:
            copy[rng.choice(["auto_map", "bogus", "extra_width", "_target_"])] = _hostile_value(rng, None)
        return copy
    if isinstance(value, list) and value:
        copy = list(value)
        index = rng.randrange(len(copy))
        copy[index] = mutate_json(copy[index], rng) if rng.random() < 0.5 else _hostile_value(rng, copy[index])
        return copy
    return _hostile_value(rng, value)


def _mutated_checkpoint(seed: Path, target: Path, rng: random.Random, part: str) -> None:
    import torch
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(seed), framework="pt") as handle:
        metadata = dict(handle.metadata())
        tensors = {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118
    if part == "spec":
        key = rng.choice(["slicewise.spec", "slicewise.spec", "slicewise.provenance", "slicewise.format_version"])
        try:
            metadata[key] = json.dumps(mutate_json(json.loads(metadata[key]), rng))
        except ValueError:
            metadata[key] = mutate_bytes(metadata[key].encode(), rng).decode("utf-8", "replace")
    else:
        key = rng.choice(sorted(k for k, v in tensors.items() if v.is_floating_point()))
        op = rng.random()
        if op < 0.25:
            tensors[key] = tensors[key].to(rng.choice([torch.float64, torch.int32, torch.int8, torch.bool]))
        elif op < 0.45:
            tensors[key] = torch.full_like(tensors[key], rng.choice([float("nan"), float("inf")]))
        elif op < 0.6:
            del tensors[key]
        elif op < 0.75:
            tensors[key] = torch.zeros(tuple(n + 1 for n in tensors[key].shape))
        elif op < 0.9:
            tensors["extra." + key] = tensors[key].clone()
        else:
            tensors = {k: v.to(torch.float16) for k, v in tensors.items()}
    save_file(tensors, str(target), metadata=metadata)


def make_case(kind: str, seeds: dict[str, Path], folder: Path, rng: random.Random) -> Path:
    """Write one mutated case of ``kind`` into ``folder``; the path to read."""
    seed = seeds[kind]
    if kind in ("hf_config", "monai_config"):
        target = folder / seed.name
        shutil.copytree(seed, target)
        config = target / ("config.json" if kind == "hf_config" else "configs/inference.json")
        if rng.random() < 0.2:
            config.write_bytes(mutate_bytes(config.read_bytes(), rng))
        else:
            config.write_text(json.dumps(mutate_json(json.loads(config.read_text()), rng)))
        return target
    target = folder / seed.name
    if kind == "checkpoint_spec":
        _mutated_checkpoint(seed, target, rng, "spec")
    elif kind == "checkpoint_weights":
        _mutated_checkpoint(seed, target, rng, "weights")
    else:
        target.write_bytes(mutate_bytes(seed.read_bytes(), rng))
    return target


# --- the worker ----------------------------------------------------------------------------------


def read_case(kind: str, path: Path, choice: float) -> None:
    """Run one case through the public reader of its kind (see the module); raises what the reader raises."""
    import numpy as np

    if kind.startswith(("png", "jpeg", "bmp", "tiff", "npy")):
        if choice < 0.5:
            from slicewise.io.images import read_image

            read_image(path)
        else:
            from slicewise.core.slices import is_rgb, spatial_ndim, take_slice
            from slicewise.core.types import SliceRef
            from slicewise.io.lazy import open_image

            image = open_image(path)
            rgb = is_rgb(tuple(image.shape))
            leading = max(0, spatial_ndim(tuple(image.shape), rgb) - 2)
            take_slice(image, SliceRef((0,) * leading), rgb=rgb)
    elif kind in ("nifti", "nifti_gz", "nrrd", "dicom"):
        from slicewise.io.medical import read_volume

        read_volume(path)
    else:
        import slicewise

        model = slicewise.load_model(path, device="cpu")
        channels = model.spec.input.channels
        image = np.random.default_rng(0).integers(0, 255, (40, 40, channels) if channels > 1 else (40, 40))
        slicewise.predict(model, image.astype(np.uint8), rgb=channels > 1)


def worker(connection: Any) -> None:
    """Read cases from ``connection`` until it closes; answer (outcome, exception type, message) for each."""
    import logging
    import resource
    import warnings

    logging.disable(logging.CRITICAL)  # tifffile logs every damaged tag; the outcome is what counts
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ.pop("SLICEWISE_DEBUG", None)
    warnings.simplefilter("ignore")
    import torch

    torch.set_num_threads(1)
    import slicewise  # noqa: F401 - every library a case may need is imported before the clock starts
    import slicewise.io.lazy  # noqa: F401
    import slicewise.io.medical  # noqa: F401
    from slicewise._compat import ensure_torchvision_ops
    from slicewise.errors import SlicewiseError

    ensure_torchvision_ops()
    import monai.networks.nets  # noqa: F401
    import transformers.models.segformer  # noqa: F401
    import transformers.utils.logging

    transformers.utils.logging.disable_progress_bar()
    connection.send("ready")
    while True:
        try:
            kind, path, choice = connection.recv()
        except EOFError:
            return
        try:
            read_case(kind, Path(path), choice)
            answer = ("read", "", "")
        except SlicewiseError as error:
            message = str(error)
            clean = "\n" not in message and 0 < len(message) <= MESSAGE_LIMIT
            answer = ("sentence" if clean else "other", type(error).__name__, message[:400])
        except BaseException as error:  # noqa: BLE001 - counting every escape is the point
            answer = ("other", type(error).__name__, str(error)[:400])
        connection.send(answer)


class Worker:
    """One worker process and its pipe; restarted after a hang or a crash."""

    def __init__(self, context: Any) -> None:
        self.context = context
        self.start()

    def start(self) -> None:
        self.connection, child = self.context.Pipe()
        self.process = self.context.Process(target=worker, args=(child,), daemon=True)
        self.process.start()
        child.close()
        if not self.connection.poll(600) or self.connection.recv() != "ready":
            raise RuntimeError("the fuzz worker did not start within 10 minutes")

    def run(self, case: tuple[str, str, float], timeout: float) -> tuple[str, str, str]:
        try:
            self.connection.send(case)
            if self.connection.poll(timeout):
                return self.connection.recv()
        except (EOFError, OSError, BrokenPipeError):
            self.process.join(5)
            code = self.process.exitcode
            self.start()
            return ("crash", f"exit {code}", "")
        self.process.kill()
        self.process.join(5)
        self.start()
        return ("hang", "", f"no answer in {timeout:.0f} s")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds before a case counts as a hang")
    parser.add_argument("--json", help="write the counts and every non-clean case here")
    parser.add_argument("--keep", help="copy every non-clean case's file into this folder")
    parser.add_argument("--kinds", help="comma-separated kinds to run (default: all)")
    args = parser.parse_args()
    kinds = args.kinds.split(",") if args.kinds else list(KINDS)
    weights = [KINDS[k] for k in kinds]
    context = mp.get_context("spawn")
    work = Path(tempfile.mkdtemp(prefix="slicewise-fuzz-"))
    started = time.time()
    try:
        seeds = make_seeds(work, kinds)
        pool = Worker(context)
        counts: dict[str, Counter] = defaultdict(Counter)
        failures = []
        rng = random.Random(args.seed)
        for number in range(args.cases):
            kind = rng.choices(kinds, weights)[0]
            case_rng = random.Random(f"{args.seed}:{number}")
            folder = work / f"case_{number}"
            folder.mkdir()
            path = make_case(kind, seeds, folder, case_rng)
            outcome, error_type, message = pool.run((kind, str(path), case_rng.random()), args.timeout)
            counts[kind][outcome] += 1
            if outcome not in ("read", "sentence"):
                failures.append(
                    {"case": number, "kind": kind, "outcome": outcome, "type": error_type, "message": message}
                )
                if args.keep:
                    keep = Path(args.keep) / f"{number}_{kind}"
                    keep.mkdir(parents=True, exist_ok=True)
                    (shutil.copytree if path.is_dir() else shutil.copyfile)(path, keep / path.name)
            shutil.rmtree(folder, ignore_errors=True)
            if (number + 1) % 500 == 0:
                print(f"{number + 1} cases, {time.time() - started:.0f} s", file=sys.stderr, flush=True)
        pool.connection.close()
        pool.process.join(5)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    totals = Counter()
    for per_kind in counts.values():
        totals.update(per_kind)
    print(f"{'kind':<20}" + "".join(f"{o:>10}" for o in OUTCOMES))
    for kind in kinds:
        print(f"{kind:<20}" + "".join(f"{counts[kind][o]:>10}" for o in OUTCOMES))
    print(f"{'total':<20}" + "".join(f"{totals[o]:>10}" for o in OUTCOMES))
    bad = totals["other"] + totals["hang"] + totals["crash"]
    print(
        f"{args.cases} cases in {time.time() - started:.0f} s: {bad} not clean ({bad / args.cases:.4f}); "
        f"baseline (issue 14 audit): 470 of 3150 (0.149); ratio {bad / args.cases / 0.149:.3f}"
    )
    for failure in failures[:30]:
        where = f"case {failure['case']} {failure['kind']}"
        print(f"  {where}: {failure['outcome']} {failure['type']}: {failure['message'][:160]!r}")
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {"cases": args.cases, "seed": args.seed, "counts": counts, "totals": totals, "failures": failures},
                indent=1,
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
