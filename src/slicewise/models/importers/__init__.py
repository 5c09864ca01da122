"""Foreign model formats → a slicewise spec and state dict, or a runnable module.

One module per format, each with ``detect(path) -> bool`` and ``read(path, options) ->
Imported``. A format whose network is a registry architecture (Hugging Face SegFormer/UperNet,
smp, MONAI bundles, nnU-Net v2, SAM/MedSAM checkpoints) yields a normal ``ModelSpec`` plus state dict, so ``convert``
writes a plain slicewise checkpoint. ONNX graphs and TorchScript modules are files that run,
not weights: they load into a ``LoadedModel`` but do not convert. Weights are read with
safetensors or ``torch.load(weights_only=True)``; TorchScript, which runs code from the file,
loads only when the caller allows it. Importers only read: ``slicewise.models.sources`` builds
and converts what they return.

Class names, input channels and normalisation come from the file's own metadata where it has
them; ``ImportOptions`` supplies the rest, and ``Imported.assumed`` names what was neither.
"""

from __future__ import annotations

import importlib
import json
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from slicewise.errors import CheckpointError, PretrainedWeightsError, one_line
from slicewise.models.adapters.base import Adapter, read_weights
from slicewise.models.spec import NORMALIZATIONS, ModelSpec, OutputSpec

__all__ = [
    "FORMATS",
    "ImportOptions",
    "Imported",
    "detect_format",
    "import_model",
]

# detection order: the folder formats with the most specific marker files first
FORMATS: dict[str, str] = {
    "nnunet": "slicewise.models.importers.nnunet",
    "monai_bundle": "slicewise.models.importers.monai_bundle",
    "smp": "slicewise.models.importers.smp",
    "timm": "slicewise.models.importers.timm",
    "huggingface": "slicewise.models.importers.huggingface",
    "onnx": "slicewise.models.importers.onnx",
    "sam": "slicewise.models.importers.sam",
    "torchscript": "slicewise.models.importers.torchscript",
}


@dataclass(frozen=True)
class ImportOptions:
    """What a person says about a foreign model that its files may not.

    classes: class names, background first (renames the file's own when given).
    channels: input channels, for formats that do not record them (ONNX with a dynamic channel axis).
    normalization: one of ``NORMALIZATIONS``; overrides the file's preprocessing.
    allow_torchscript: load TorchScript, which runs code stored in the file.
    """

    classes: tuple[str, ...] | None = None
    channels: int | None = None
    normalization: str | None = None
    allow_torchscript: bool = False

    def __post_init__(self) -> None:
        if self.normalization is not None and self.normalization not in NORMALIZATIONS:
            raise CheckpointError(
                f"Unknown normalization {self.normalization!r}; choose one of: {', '.join(NORMALIZATIONS)}."
            )
        if self.classes is not None:
            object.__setattr__(self, "classes", tuple(self.classes))


@dataclass(frozen=True, eq=False)
class Imported:
    """A foreign model read into slicewise terms.

    state_dict: the weights of ``spec``'s registry architecture, or None for the runtime formats
    (ONNX, TorchScript), which carry a ready ``module`` and its ``adapter`` instead.
    details: what ``slicewise inspect`` shows about the original (its class, trainer, fold, …).
    assumed: spec fields the file did not record and the options did not give.
    """

    format: str
    source: Path
    spec: ModelSpec
    state_dict: dict[str, torch.Tensor] | None = None
    module: nn.Module | None = None
    adapter: Adapter | None = None
    details: dict[str, Any] = field(default_factory=dict)
    assumed: tuple[str, ...] = ()

    @property
    def provenance(self) -> dict[str, Any]:
        """The checkpoint provenance of a converted model: where it came from and what was assumed."""
        origin = {"format": self.format, "path": str(self.source), **self.details}
        if self.assumed:
            origin["assumed"] = list(self.assumed)
        return {"imported_from": origin}


def _module(name: str) -> Any:
    return importlib.import_module(FORMATS[name])


def detect_format(path: str | os.PathLike) -> str | None:
    """The foreign format of a file or folder, or None when no importer recognises it."""
    path = Path(path)
    if not (path.is_dir() or path.is_file()):  # missing, or a pipe or device that reading would block on
        return None
    return next((name for name in FORMATS if _module(name).detect(path)), None)


def import_model(path: str | os.PathLike, options: ImportOptions | None = None) -> Imported:
    """Read a foreign model file or folder; an unrecognised one is a one-sentence ``CheckpointError``."""
    path = Path(path)
    name = detect_format(path)
    if name is None:
        raise CheckpointError(
            f"{path} is not a format slicewise can import ({', '.join(FORMATS)}) nor a slicewise checkpoint; "
            "see docs/importers.md for the files each importer reads."
        )
    try:
        return _module(name).read(path, options or ImportOptions())
    except (KeyError, IndexError, TypeError, ValueError, AttributeError, RecursionError, OverflowError) as error:
        # a folder or file that looks like the format but whose metadata is incomplete or malformed
        raise CheckpointError(
            one_line(
                f"{path.name} looks like a {name} model, but its metadata is incomplete or malformed "
                f"({type(error).__name__}: {str(error)[:120]}); check the files against docs/importers.md."
            )
        ) from error


def read_tensors(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors or plain-tensor PyTorch file, as a ``CheckpointError`` on failure."""
    try:
        return read_weights(path)
    except PretrainedWeightsError as error:
        raise CheckpointError(str(error)) from error


def read_config_json(folder: Path) -> dict[str, Any] | None:
    """The JSON object in ``folder/config.json`` (HF, smp and timm folders), or None if there is none."""
    file = folder / "config.json"
    if not (folder.is_dir() and file.is_file()):
        return None
    try:
        config = json.loads(file.read_text())
    except ValueError:
        return None
    return config if isinstance(config, dict) else None


def default_class_names(count: int) -> tuple[str, ...]:
    return ("background", *(f"class_{index}" for index in range(1, count)))


def resolve_io(
    *,
    outputs: int,
    options: ImportOptions,
    classes: tuple[str, ...] | None = None,
    channels: int | None = None,
    normalization: str | None = None,
    activation: str = "softmax",
) -> tuple[OutputSpec, int, str, tuple[str, ...]]:
    """The output spec, input channels, normalisation and the names of assumed fields.

    outputs: the network's output channels (one sigmoid channel is background + one class).
    The file's ``classes``/``channels``/``normalization`` (None where it has none) are combined
    with ``options``: options rename classes and override the normalisation; the file's channel
    count is fixed by its weights, so an option that disagrees is an error.
    """
    assumed = []
    count = 2 if activation == "sigmoid" and outputs == 1 else outputs
    names = options.classes or classes
    if names is None:
        names = default_class_names(count)
        assumed.append("classes")
    if len(names) != count:
        raise CheckpointError(
            f"The model predicts {count} classes but {len(names)} class names were given ({', '.join(names)}); "
            f"pass {count} names, background first."
        )
    if channels is not None and options.channels is not None and options.channels != channels:
        raise CheckpointError(
            f"The model takes {channels} input channel(s), fixed by its weights, but {options.channels} were asked "
            "for; leave the channels option out."
        )
    in_channels = channels or options.channels
    if in_channels is None:
        in_channels = 3
        assumed.append("channels")
    chosen = options.normalization or normalization
    if chosen is None:
        chosen = "percentile"
        assumed.append("normalization")
    return OutputSpec(class_names=tuple(names), activation=activation), in_channels, chosen, tuple(assumed)


def registry_spec(
    arch: str,
    init_kwargs: dict[str, Any],
    *,
    name: str,
    outputs: int,
    options: ImportOptions,
    classes: tuple[str, ...] | None = None,
    channels: int | None = None,
    normalization: str | None = None,
    percentiles: tuple[float, float] | None = None,
    activation: str = "softmax",
) -> tuple[ModelSpec, tuple[str, ...]]:
    """A complete spec for a registry architecture (``make_spec``) with the foreign file's I/O.

    percentiles: the file's own percentile range (``(0, 100)`` is min-max scaling), used when
    its normalisation is kept.
    """
    from slicewise.models.registry import make_spec

    output, in_channels, chosen, assumed = resolve_io(
        outputs=outputs,
        options=options,
        classes=classes,
        channels=channels,
        normalization=normalization,
        activation=activation,
    )
    spec = make_spec(
        arch,
        class_names=output.class_names,
        in_channels=in_channels,
        normalization=chosen,
        name=name,
        **init_kwargs,
    )
    if percentiles is not None and options.normalization is None:
        spec = replace(spec, input=replace(spec.input, percentiles=percentiles))
    return replace(spec, output=output), assumed
