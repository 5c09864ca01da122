"""MONAI bundles: ``configs/metadata.json`` + ``configs/inference.json`` (or ``.yaml``) + ``models/model.pt``.

The ``network_def`` of the inference config names a MONAI network (UNet, BasicUNet,
AttentionUnet, BasicUNetPlusPlus, DynUNet, SwinUNETR) with ``spatial_dims`` 2; its arguments
become the registry architecture's init kwargs. ``@name`` references are resolved from the
same config; ``$`` expressions are Python code and are refused, as slicewise never evaluates a
config. Class names and input channels come from ``metadata.json``'s ``network_data_format``,
the normalisation from the ``preprocessing`` transforms, the activation from ``postprocessing``.
"""

from __future__ import annotations

import inspect
import json
from pathlib import Path
from typing import Any

from slicewise.errors import CheckpointError, one_line
from slicewise.models.importers import Imported, ImportOptions, read_tensors, registry_spec

_NETWORKS = {
    "UNet": "unet",
    "Unet": "unet",
    "BasicUNet": "basic_unet",
    "AttentionUnet": "attention_unet",
    "BasicUNetPlusPlus": "unetpp",
    "DynUNet": "dynunet",
    "SwinUNETR": "swin_unetr",
}
# MONAI intensity transforms slicewise's input spec expresses: (normalisation, percentiles)
_NORMALIZATIONS = {
    "NormalizeIntensity": ("zscore", None),
    "ScaleIntensity": ("percentile", (0.0, 100.0)),
}


def detect(path: Path) -> bool:
    return path.is_dir() and (path / "configs" / "metadata.json").is_file()


def _load_config(file: Path) -> dict[str, Any]:
    """A bundle config as a dict; YAML through ``safe_load`` (no ``!!python`` tags), malformed files one sentence."""
    import yaml

    try:
        values = yaml.safe_load(file.read_text()) if file.suffix in (".yaml", ".yml") else json.loads(file.read_text())
    except (yaml.YAMLError, ValueError, RecursionError) as error:
        raise CheckpointError(
            one_line(
                f"The MONAI bundle config {file.name} is not valid {file.suffix[1:].upper()} ({error}); "
                "fix or re-export it."
            )
        ) from error
    if not isinstance(values, dict):
        raise CheckpointError(
            f"The MONAI bundle config {file.name} must hold one object (a mapping of names to values)."
        )
    return values


def _inference_config(path: Path) -> dict[str, Any]:
    for name in ("inference.json", "inference.yaml", "inference.yml"):
        if (path / "configs" / name).is_file():
            return _load_config(path / "configs" / name)
    raise CheckpointError(
        f"The MONAI bundle {path.name} has no configs/inference.json or inference.yaml; slicewise reads the "
        "network definition from it."
    )


def _resolve(value: Any, config: dict[str, Any], path: Path) -> Any:
    """Replace ``@name`` references by their values; refuse ``$`` expressions (Python code)."""
    if isinstance(value, str) and value.startswith("@"):
        node: Any = config
        for part in value[1:].replace("#", "::").split("::"):
            node = node[int(part)] if isinstance(node, list) else node[part]
        return _resolve(node, config, path)
    if isinstance(value, str) and value.startswith(("$", "%")):
        raise CheckpointError(
            f"The network_def of the MONAI bundle {path.name} computes {value!r} with Python code, which slicewise "
            "never runs; write the value into the config as a number or list."
        )
    if isinstance(value, dict):
        return {key: _resolve(item, config, path) for key, item in value.items()}
    if isinstance(value, list):
        return [_resolve(item, config, path) for item in value]
    return value


def _target(node: dict[str, Any]) -> str:
    return str(node.get("_target_", "")).rpartition(".")[2]


def _transform_names(config: dict[str, Any], key: str) -> list[dict[str, Any]]:
    node = config.get(key) or {}
    transforms = node.get("transforms", []) if isinstance(node, dict) else node
    return [t for t in transforms if isinstance(t, dict)]


def _normalization(config: dict[str, Any]) -> tuple[str | None, tuple[float, float] | None]:
    for transform in _transform_names(config, "preprocessing"):
        found = _NORMALIZATIONS.get(_target(transform).removesuffix("d"))
        if found:
            return found
    return None, None


def _activation(config: dict[str, Any]) -> str:
    for transform in _transform_names(config, "postprocessing"):
        if _target(transform).removesuffix("d") == "Activations" and transform.get("sigmoid"):
            return "sigmoid"
    return "softmax"


def _network_kwargs(network: dict[str, Any], arch: str) -> dict[str, Any]:
    """The network_def's arguments, with MONAI's own defaults for those the adapter would otherwise set."""
    from monai.networks import nets

    from slicewise.models.registry import get_adapter

    given = {k: v for k, v in network.items() if k not in ("_target_", "spatial_dims", "in_channels", "out_channels")}
    signature = inspect.signature(getattr(nets, _target(network)))
    defaults = {
        key: signature.parameters[key].default
        for key in get_adapter(arch).default_kwargs
        if key in signature.parameters and signature.parameters[key].default is not inspect.Parameter.empty
    }
    return json.loads(json.dumps({**defaults, **given}))  # MONAI's enum defaults (Norm.INSTANCE) as plain JSON


def _data_format(path: Path) -> tuple[int | None, tuple[str, ...] | None]:
    """Input channels and class names from ``metadata.json``'s ``network_data_format``."""
    metadata = _load_config(path / "configs" / "metadata.json")
    data_format = metadata.get("network_data_format", {})
    inputs = list(data_format.get("inputs", {}).values())
    outputs = list(data_format.get("outputs", {}).values())
    channels = inputs[0].get("num_channels") if inputs else None
    channel_def = outputs[0].get("channel_def") if outputs else None
    classes = tuple(str(channel_def[k]) for k in sorted(channel_def, key=int)) if channel_def else None
    return channels, classes


def read(path: Path, options: ImportOptions) -> Imported:
    config = _inference_config(path)
    if not isinstance(config.get("network_def"), dict):
        raise CheckpointError(f"The inference config of the MONAI bundle {path.name} has no network_def to import.")
    network = _resolve(config["network_def"], config, path)
    name = _target(network)
    if name not in _NETWORKS:
        raise CheckpointError(
            f"The MONAI bundle {path.name} defines a {name or 'nameless'} network; slicewise imports bundles of "
            f"{', '.join(sorted(set(_NETWORKS) - {'Unet'}))}."
        )
    if int(network.get("spatial_dims", 3)) != 2:
        raise CheckpointError(
            f"The MONAI bundle {path.name} defines a {network.get('spatial_dims', 3)}D {name}; slicewise runs 2D "
            "networks on slices, so it imports bundles with spatial_dims 2 only."
        )
    weights = path / "models" / "model.pt"
    if not weights.is_file():
        raise CheckpointError(
            f"The MONAI bundle {path.name} has no models/model.pt; slicewise reads the network's weights from it "
            "(a TorchScript models/model.ts runs code and is not read)."
        )
    arch = _NETWORKS[name]
    channels, classes = _data_format(path)
    normalization, percentiles = _normalization(config)
    spec, assumed = registry_spec(
        arch,
        _network_kwargs(network, arch),
        name=path.name,
        outputs=int(network["out_channels"]),
        options=options,
        classes=classes,
        channels=int(network.get("in_channels", channels or 0)) or None,
        normalization=normalization,
        percentiles=percentiles,
        activation=_activation(config),
    )
    details = {"architecture": f"monai.networks.nets.{name}", "weights": "models/model.pt"}
    return Imported("monai_bundle", path, spec, state_dict=read_tensors(weights), details=details, assumed=assumed)
