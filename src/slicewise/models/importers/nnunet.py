"""nnU-Net v2 trained-model folders of a 2D configuration.

``<Trainer>__<Plans>__<configuration>/`` holds ``plans.json``, ``dataset.json`` and
``fold_X/checkpoint_final.pth`` (or ``.safetensors``, which newer nnU-Net writes beside a JSON
sidecar). The configuration's ``architecture`` (``PlainConvUNet`` or ``ResidualEncoderUNet``
with their ``arch_kwargs``; older plans' ``UNet_class_name`` fields are translated) becomes the
``nnunet`` architecture. Classes come from ``dataset.json`` ``labels``, input channels from
``channel_names``, the normalisation from the plans' ``normalization_schemes``.

The trainer's ``.pth`` is a pickle of the network weights, optimizer state, logs and init
args; it is read with ``torch.load(weights_only=True)`` and an allow-list of the numpy scalar
types its logs hold, nothing else. A folder of several folds loads one (``fold_0`` first, or
the fold folder or checkpoint file passed); nnU-Net's own prediction averages all folds.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch

from slicewise.errors import CheckpointError
from slicewise.models.adapters.nnunet import NETWORKS, NNUNET_LAYERS
from slicewise.models.importers import Imported, ImportOptions, read_tensors, registry_spec

CHECKPOINTS = ("checkpoint_final", "checkpoint_best", "checkpoint_latest")
# nnU-Net normalisation schemes slicewise's input spec expresses: (normalisation, percentiles)
_NORMALIZATIONS = {
    "ZScoreNormalization": ("zscore", None),
    "RescaleTo01Normalization": ("percentile", (0.0, 100.0)),
    "NoNormalization": ("none", None),
}
_SAFE_GLOBALS = [
    np._core.multiarray.scalar,
    np.dtype,
    *(type(np.dtype(kind)) for kind in ("float64", "float32", "int64", "int32", "bool")),
]


def _root(path: Path) -> Path | None:
    """The trained-model folder (plans.json + dataset.json) at or above ``path``, two levels at most."""
    for candidate in (path, path.parent, path.parent.parent):
        if candidate.is_dir() and (candidate / "plans.json").is_file() and (candidate / "dataset.json").is_file():
            return candidate
    return None


def detect(path: Path) -> bool:
    return _root(path) is not None


def _checkpoint(path: Path, root: Path) -> Path:
    if path.is_file():
        return path
    folds = [path] if path != root else sorted(root.glob("fold_*"))
    for fold in folds:
        for stem in CHECKPOINTS:
            for suffix in (".safetensors", ".pth"):
                if (fold / f"{stem}{suffix}").is_file():
                    return fold / f"{stem}{suffix}"
    raise CheckpointError(
        f"The nnU-Net folder {path} has no fold_X/checkpoint_final.pth (or .safetensors); pass a trained-model "
        "folder or one of its fold folders."
    )


def _trainer_checkpoint(file: Path) -> dict[str, Any]:
    """The trainer's dict from a ``.pth``, unpickling only tensors, containers and numpy scalars."""
    try:
        with torch.serialization.safe_globals(_SAFE_GLOBALS):
            checkpoint = torch.load(file, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, OSError, EOFError) as error:
        raise CheckpointError(
            f"Cannot read {file.name} safely: it holds Python objects beyond tensors, containers and numpy scalars "
            "(anything else could run code and is refused); convert it with nnUNetv2_convert_to_safetensors."
        ) from error
    if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("network_weights"), dict):
        raise CheckpointError(f"{file.name} is not an nnU-Net v2 checkpoint: it has no network_weights.")
    return checkpoint


def _configuration_name(root: Path, init_args: dict[str, Any]) -> str:
    parts = root.name.split("__")
    return parts[-1] if len(parts) == 3 else str(init_args.get("configuration", ""))


def _configuration(plans: dict[str, Any], name: str, root: Path) -> dict[str, Any]:
    """The configuration ``name`` with ``inherits_from`` applied, as nnU-Net's PlansManager does."""
    configurations = plans.get("configurations", {})
    if name not in configurations:
        raise CheckpointError(
            f"The plans of {root.name} have no configuration {name!r} (they have {', '.join(configurations)}); "
            "name the folder <Trainer>__<Plans>__<configuration> as nnU-Net does."
        )
    configuration = dict(configurations[name])
    parent = configuration.pop("inherits_from", None)
    return {**_configuration(plans, parent, root), **configuration} if parent else configuration


def _architecture(configuration: dict[str, Any]) -> dict[str, Any]:
    """``arch_kwargs`` plus the network's class name; older plans' fields translated."""
    if "architecture" in configuration:
        architecture = configuration["architecture"]
        return {"network": architecture["network_class_name"].rpartition(".")[2], **architecture["arch_kwargs"]}
    kernels = configuration["conv_kernel_sizes"]
    base, most = configuration["UNet_base_num_features"], configuration["unet_max_num_features"]
    return {
        "network": configuration["UNet_class_name"],
        "n_stages": len(kernels),
        "features_per_stage": [min(base * 2**stage, most) for stage in range(len(kernels))],
        "conv_op": "torch.nn.modules.conv.Conv2d" if len(kernels[0]) == 2 else "torch.nn.modules.conv.Conv3d",
        "kernel_sizes": kernels,
        "strides": configuration["pool_op_kernel_sizes"],
        "n_conv_per_stage": configuration["n_conv_per_stage_encoder"],
        "n_conv_per_stage_decoder": configuration["n_conv_per_stage_decoder"],
        **NNUNET_LAYERS,
    }


def _labels(dataset: dict[str, Any], root: Path) -> tuple[str, ...]:
    labels = {name: value for name, value in dataset["labels"].items() if name != "ignore"}
    if any(not isinstance(value, int) for value in labels.values()):
        raise CheckpointError(
            f"{root.name} was trained on overlapping regions (region-based labels), which predict one sigmoid per "
            "region; slicewise imports nnU-Net models with one label per class."
        )
    return tuple(sorted(labels, key=labels.get))


def _normalization(configuration: dict[str, Any]) -> tuple[str | None, tuple[float, float] | None]:
    schemes = set(configuration.get("normalization_schemes", []))
    return _NORMALIZATIONS.get(schemes.pop(), (None, None)) if len(schemes) == 1 else (None, None)


def read(path: Path, options: ImportOptions) -> Imported:
    root = _root(path)
    file = _checkpoint(path, root)
    if file.suffix == ".safetensors":
        weights = read_tensors(file)
        sidecar = file.with_suffix(".json")
        meta = json.loads(sidecar.read_text()) if sidecar.is_file() else {}
    else:
        meta = _trainer_checkpoint(file)
        weights = meta["network_weights"]
    init_args = meta.get("init_args") or {}
    plans = json.loads((root / "plans.json").read_text())
    dataset = json.loads((root / "dataset.json").read_text())
    name = _configuration_name(root, init_args)
    configuration = _configuration(plans, name, root)
    init_kwargs = _architecture(configuration)
    if init_kwargs["network"] not in NETWORKS:
        raise CheckpointError(
            f"{root.name} uses the network {init_kwargs['network']}; slicewise imports nnU-Net's "
            f"{' and '.join(NETWORKS)} only."
        )
    if not str(init_kwargs["conv_op"]).endswith("Conv2d"):
        raise CheckpointError(
            f"{root.name} is the 3D nnU-Net configuration {name!r}; slicewise runs 2D networks on slices, so import "
            "the 2d configuration of the dataset."
        )
    normalization, percentiles = _normalization(configuration)
    channel_names = dataset.get("channel_names") or dataset.get("modality") or {}
    spec, assumed = registry_spec(
        "nnunet",
        init_kwargs,
        name=f"{plans.get('dataset_name', root.parent.name)} {name}",
        outputs=len(_labels(dataset, root)),
        options=options,
        classes=_labels(dataset, root),
        channels=len(channel_names) or None,
        normalization=normalization,
        percentiles=percentiles,
    )
    details = {
        "architecture": init_kwargs["network"],
        "configuration": name,
        "checkpoint": str(file.relative_to(root)),
        "trainer": meta.get("trainer_name", root.name.split("__")[0]),
        "channel_names": [channel_names[key] for key in sorted(channel_names, key=int)],
        "normalization_schemes": configuration.get("normalization_schemes", []),
        "folds": sorted(fold.name for fold in root.glob("fold_*")),
    }
    return Imported("nnunet", root, spec, state_dict=weights, details=details, assumed=assumed)
