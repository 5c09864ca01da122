"""Hugging Face transformers folders: ``config.json`` + ``model.safetensors`` or ``pytorch_model.bin``.

SegFormer maps onto the ``segformer`` architecture, UperNet on a ConvNeXt or Swin backbone
onto ``upernet_convnext``/``upernet_swin``, and a DPT segmenter on a DINOv2 backbone
(``model_type`` ``dpt`` with a ``dinov2`` ``backbone_config``) onto ``dpt_dinov2``: the init
kwargs are the config's model-specific fields. Class names come from ``id2label`` (unless they
are transformers' ``LABEL_n`` placeholders), input channels from ``num_channels``. The config is
read by transformers' ``AutoConfig`` with ``trust_remote_code=False``, and only after slicewise has
refused a folder that asks for code: an ``auto_map`` entry in any of its JSON files, or Python files
beside the config (transformers would otherwise offer to run them).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from slicewise._compat import ensure_torchvision_ops
from slicewise.errors import CheckpointError, one_line
from slicewise.models.importers import Imported, ImportOptions, read_config_json, read_tensors, registry_spec
from slicewise.models.spec import ModelSpec

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
SUPPORTED = "SegFormer, UperNet (ConvNeXt or Swin backbone) and DPT segmentation (DINOv2 backbone)"
_UPERNET_BACKBONES = {"convnext": "upernet_convnext", "swin": "upernet_swin"}
_STAGES = ["stage1", "stage2", "stage3", "stage4"]
# fields every transformers config has, or that the spec holds itself
_NOT_INIT = {"num_labels", "num_channels", "id2label", "label2id", "backbone_config", "out_features", "out_indices"}
_NOT_INIT |= {"stage_names", "transformers_version", "architectures", "model_type", "dtype", "torch_dtype"}
# the adapter fixes these: the training-only auxiliary head is dropped, the DPT neck reshapes the tokens
_NOT_INIT |= {"use_auxiliary_head", "auxiliary_loss_weight", "backbone_out_indices", "reshape_hidden_states"}


def detect(path: Path) -> bool:
    config = read_config_json(path)
    return config is not None and "model_type" in config and any((path / f).is_file() for f in WEIGHT_FILES)


def _init_kwargs(config: Any, arch: str) -> dict[str, Any]:
    """The fields of ``config`` that shape the network: the adapter's own keys and every non-default one."""
    from transformers import PretrainedConfig

    from slicewise.models.registry import get_adapter

    adapter_keys = set(get_adapter(arch).default_kwargs)
    defaults = type(config)().to_dict()
    generic = set(PretrainedConfig().to_dict()) | _NOT_INIT
    return {
        key: value
        for key, value in config.to_dict().items()
        if key in adapter_keys or (key in defaults and key not in generic and value != defaults[key])
    }


def _backbone_type(config: Any) -> str | None:
    backbone = getattr(config, "backbone_config", None)
    return None if backbone is None else backbone.model_type


def _is_depth(config: Any) -> bool:
    """A depth estimator (``DPTForDepthEstimation``, as the DINOv2 DPT checkpoints on the Hub are) is no segmenter."""
    return any("DepthEstimation" in name for name in config.architectures or [])


def _class_names(config: Any) -> tuple[str, ...] | None:
    labels = {int(key): str(value) for key, value in (config.id2label or {}).items()}
    names = tuple(labels[index] for index in sorted(labels))
    return None if all(name == f"LABEL_{index}" for index, name in enumerate(names)) else names


def _preprocessing(path: Path) -> str | None:
    """What ``preprocessor_config.json`` asks for, in words (slicewise's input spec has no mean/std scheme)."""
    file = path / "preprocessor_config.json"
    if not file.is_file():
        return None
    processor = json.loads(file.read_text())
    steps = []
    if processor.get("do_rescale", True):
        steps.append(f"rescale by {processor.get('rescale_factor', 1 / 255):.6g}")
    if processor.get("do_normalize", True) and "image_mean" in processor:
        steps.append(f"mean {processor['image_mean']} std {processor.get('image_std')}")
    return ", ".join(steps) or "none"


def _state_dict(spec: ModelSpec, tensors: dict[str, torch.Tensor], weights: Path) -> dict[str, torch.Tensor]:
    """The weights as the spec's network names them, loaded by transformers' own ``from_pretrained``.

    transformers renames keys between a saved file and the module (older checkpoints, and the
    conversions of transformers 5); tensors the network lacks (UperNet's training-only
    auxiliary head) are left out, and a tensor the file lacks is an error.
    """
    from slicewise.models.registry import get_adapter
    from slicewise.models.validate import build_checked, meta_module

    adapter = get_adapter(spec.arch)
    meta_module(adapter, spec, weights.parent.name)  # a config of absurd widths is refused before allocating
    network = build_checked(adapter, spec, weights.parent.name)
    try:
        loaded, info = type(network).from_pretrained(
            None,
            config=network.config,
            state_dict=tensors,
            output_loading_info=True,
            local_files_only=True,
            trust_remote_code=False,
        )
    except (RuntimeError, ValueError, KeyError, TypeError) as error:
        raise CheckpointError(
            one_line(
                f"transformers cannot load {weights.name} into the network its config.json describes "
                f"({type(error).__name__}: {str(error)[:120]}); the folder's weights and config do not belong together."
            )
        ) from error
    if info["missing_keys"]:
        missing = sorted(info["missing_keys"])
        raise CheckpointError(
            f"{weights.name} lacks {len(missing)} tensors of the network its config.json describes (first: "
            f"{missing[0]!r}); the folder's weights and config do not belong together."
        )
    return loaded.state_dict()


def _asks_for_code(value: Any, depth: int = 0) -> bool:
    """Whether a JSON value holds an ``auto_map`` (transformers' pointer to Python code in the folder)."""
    if depth > 20:
        return True  # nesting this deep is no real config; refuse rather than recurse
    if isinstance(value, dict):
        return "auto_map" in value or any(_asks_for_code(v, depth + 1) for v in value.values())
    if isinstance(value, list):
        return any(_asks_for_code(v, depth + 1) for v in value)
    return False


def refuse_remote_code(path: Path) -> None:
    """Refuse a folder whose config asks transformers to run code from it, before transformers reads it."""
    for file in sorted(path.glob("*.json")):
        try:
            values = json.loads(file.read_text())
        except (ValueError, OSError, RecursionError):
            continue  # a malformed JSON file asks for nothing; transformers or the importer will say what is wrong
        if _asks_for_code(values):
            raise CheckpointError(
                f"{file.name} in {path.name} has an auto_map, asking to run Python code stored with the model; "
                "slicewise never runs code from a model folder, so export the model to ONNX and load the .onnx file."
            )
    code = sorted(p.name for p in path.glob("*.py"))
    if code:
        raise CheckpointError(
            f"{path.name} holds Python code ({code[0]}) beside its config.json; slicewise never runs code from a "
            "model folder, so remove the .py files or export the model to ONNX."
        )


def read(path: Path, options: ImportOptions) -> Imported:
    refuse_remote_code(path)
    ensure_torchvision_ops()
    from huggingface_hub.errors import StrictDataclassError
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(path, local_files_only=True, trust_remote_code=False)
    except (ValueError, KeyError, OSError, TypeError, AttributeError, StrictDataclassError) as error:
        # transformers' configs validate their fields strictly: a value of the wrong type is one sentence
        raise CheckpointError(
            one_line(
                f"transformers cannot read {path / 'config.json'} ({one_line(error, 140)}); slicewise imports "
                f"{SUPPORTED} folders."
            )
        ) from error
    if config.model_type == "segformer":
        arch, init_kwargs, channels = "segformer", _init_kwargs(config, "segformer"), config.num_channels
    elif config.model_type == "upernet" and config.backbone_config.model_type in _UPERNET_BACKBONES:
        backbone = config.backbone_config
        if list(backbone.out_features) != _STAGES:
            raise CheckpointError(
                f"The UperNet in {path.name} reads the backbone stages {backbone.out_features}; slicewise's "
                f"UperNet reads all four ({', '.join(_STAGES)}), so this model cannot be imported."
            )
        arch = _UPERNET_BACKBONES[backbone.model_type]
        init_kwargs = {**_init_kwargs(backbone, arch), "decoder_hidden_size": config.hidden_size}
        channels = backbone.num_channels
    elif config.model_type == "dpt" and _backbone_type(config) == "dinov2" and not _is_depth(config):
        backbone = config.backbone_config
        backbone_kwargs = {**_init_kwargs(backbone, "dinov2"), "out_indices": list(backbone.out_indices)}
        init_kwargs = {**_init_kwargs(config, "dpt_dinov2"), "backbone_config": backbone_kwargs}
        arch, channels = "dpt_dinov2", backbone.num_channels
    else:
        backbone = _backbone_type(config)
        kind = ("depth-estimation " if _is_depth(config) else "") + config.model_type
        raise CheckpointError(
            f"{path.name} holds a transformers {kind} model{f' on {backbone}' if backbone else ''}; slicewise "
            f"imports {SUPPORTED} folders, so export this one to ONNX and load the .onnx file."
        )
    weights = next(path / f for f in WEIGHT_FILES if (path / f).is_file())
    preprocessing = _preprocessing(path)
    spec, assumed = registry_spec(
        arch,
        init_kwargs,
        name=path.name,
        outputs=config.num_labels,
        options=options,
        classes=_class_names(config),
        channels=channels,
    )
    state = _state_dict(spec, read_tensors(weights), weights)
    details = {"architecture": (config.architectures or [type(config).__name__])[0], "weights": weights.name}
    if preprocessing:
        details["preprocessing"] = preprocessing
    return Imported("huggingface", path, spec, state_dict=state, details=details, assumed=assumed)
