"""A network ready to predict: weights loaded, on its device, with its spec and provenance."""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch import nn

from slicewise.errors import CheckpointError, DeviceError
from slicewise.models.adapters.base import Adapter
from slicewise.models.precision import FP32, OnnxTwin, Precision, choose, runtime_module
from slicewise.models.registry import get_adapter
from slicewise.models.spec import ModelSpec

_BUILDING = threading.Lock()  # one thread builds a pending network; another that needs it waits


class _Network:
    """``LoadedModel.module``: the PyTorch network, built from the model's ``pending`` weights on first use.

    A model whose ONNX graph is cached predicts without it (``inference_module`` is the graph), so loading
    it neither imports the network's library (timm, MONAI) nor builds it; gradients (explanations, MC
    dropout, training) and float32 runs use it.
    """

    def __get__(self, model: LoadedModel | None, owner: type | None = None) -> nn.Module:
        if model is None:
            raise AttributeError("module")  # so the dataclass field has no default
        if model.__dict__.get("_module") is None:
            with _BUILDING:
                if model.__dict__.get("_module") is None:
                    model.__dict__["_module"] = _build(model.spec, model.pending, model.source, model.device)
                    model.pending = None  # the network holds the weights now
        return model.__dict__["_module"]

    def __set__(self, model: LoadedModel, module: nn.Module | None) -> None:
        model.__dict__["_module"] = module


@dataclass(eq=False, repr=False)
class LoadedModel:
    """A network in eval mode (or the weights it is built from on first use) plus what the core needs to run it."""

    spec: ModelSpec
    module: nn.Module = _Network()  # given as None with ``pending`` weights: built on first access
    adapter: Adapter
    device: torch.device
    source: str
    provenance: dict[str, Any] = field(default_factory=dict)
    precision: Precision = FP32  # chosen at load time (slicewise.models.precision)
    runtime: nn.Module | None = None  # what inference runs when it is not ``module`` (an ONNX Runtime twin)
    pending: dict[str, torch.Tensor] | None = None  # a checkpoint's tensors, until ``module`` is built from them

    def __repr__(self) -> str:  # the dataclass's own would build the network to print it
        built = "not built" if self.__dict__.get("_module") is None else "built"
        return f"LoadedModel({self.name!r}, {self.spec.arch}, {self.device}, {self.precision.name}, network {built})"

    @property
    def name(self) -> str:
        return self.spec.name or self.spec.arch

    @property
    def mixed_precision(self) -> bool:
        """Autocast to float16 on CUDA; full float32 on the CPU."""
        return self.device.type == "cuda"

    @property
    def inference_module(self) -> nn.Module:
        """The network gradient-free predictions run: ``runtime`` if set, else ``module``."""
        return self.module if self.runtime is None else self.runtime

    def autocast(self) -> Any:
        """The autocast context of this model's precision (float16 on CUDA, bfloat16 where chosen)."""
        return self.precision.autocast(self.device)

    def describe_device(self) -> str:
        """E.g. ``"CUDA (NVIDIA H100), mixed precision"`` or ``"CPU (2 threads)"``."""
        return describe_device(self.device)

    def describe_runtime(self) -> str:
        """Device and precision in a few words, for the widget's "runs on" line: ``"CPU (2 threads), float32"``."""
        return f"{describe_device(self.device).split(',')[0]}, {self.precision.describe()}"


@dataclass(eq=False)
class Ensemble:
    """Several checkpoints with the same classes and input channels, averaged as one model.

    Their spread (mutual information of the members' probabilities) is the ensemble's
    uncertainty; the slice is padded to the least common multiple of the members' divisors.
    """

    members: list[LoadedModel]

    def __post_init__(self) -> None:
        first = self.members[0].spec
        for member in self.members[1:]:
            if member.spec.output.class_names != first.output.class_names:
                raise CheckpointError(
                    f"Ensemble members must share their classes: {member.name} has "
                    f"{', '.join(member.spec.output.class_names)}, {self.members[0].name} has "
                    f"{', '.join(first.output.class_names)}."
                )
            if member.spec.input.size != first.input.size:
                raise CheckpointError(
                    f"Ensemble members must run at the same input size: {member.name} runs at "
                    f"{member.spec.input.size}, {self.members[0].name} at {first.input.size}."
                )
            if member.spec.input.channels != first.input.channels:
                raise CheckpointError(
                    f"Ensemble members must take the same input channels: {member.name} takes "
                    f"{member.spec.input.channels}, {self.members[0].name} takes {first.input.channels}."
                )

    @property
    def spec(self) -> ModelSpec:
        first = self.members[0].spec
        divisor = math.lcm(*(m.spec.input.divisor for m in self.members))
        return replace(first, input=replace(first.input, divisor=divisor), name=self.name)

    @property
    def name(self) -> str:
        return "ensemble(" + "+".join(m.name for m in self.members) + ")"

    @property
    def device(self) -> torch.device:
        return self.members[0].device

    def describe_device(self) -> str:
        return describe_device(self.device)

    def describe_runtime(self) -> str:
        return f"{describe_device(self.device).split(',')[0]}, {self.members[0].precision.describe()}"


def set_precision(model: LoadedModel | Ensemble, precision: str | None = "auto") -> LoadedModel | Ensemble:
    """Choose (or force, e.g. ``"fp32"``) how ``model`` runs on its device, in place; returns it.

    See ``slicewise.models.precision``: the choice follows what was measured for the model's
    architecture on this CPU class, and ``SLICEWISE_PRECISION`` applies when ``precision`` is "auto".
    A member whose whole network runs as a cached ONNX graph stays unbuilt; any other is built here,
    so weights that do not fit their spec fail at load time, not at the first prediction.
    """
    for member in model.members if isinstance(model, Ensemble) else [model]:
        chosen = choose(member.spec.arch, member.device, precision)
        try:
            member.runtime = runtime_module(member.spec, lambda m=member: m.module, chosen, state=member.pending)
        except (RuntimeError, OSError, ImportError) as error:  # an export or runtime that fails here: stay float32
            chosen, member.runtime = Precision("fp32", f"{chosen.name} failed ({type(error).__name__})"), None
        member.precision = chosen
        if not isinstance(member.runtime, OnnxTwin):
            _ = member.module  # PyTorch runs the network, or part of it: built now
    return model


def describe_device(device: torch.device) -> str:
    """What a prediction on ``device`` runs on, in words, for the widget and the CLI."""
    if device.type == "cuda":
        return f"CUDA ({torch.cuda.get_device_name(device)}), mixed precision"
    return f"CPU ({torch.get_num_threads()} threads)"


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` picks CUDA when available, else the CPU; an unavailable device is an error."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError as error:
        raise DeviceError(f"Unknown device {device!r}; use auto, cpu or cuda.") from error
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise DeviceError("CUDA was requested but this machine has no usable CUDA GPU; use --device cpu or auto.")
    if resolved.type not in ("cpu", "cuda"):
        raise DeviceError(f"Device {device!r} is not supported; use auto, cpu or cuda.")
    return resolved


def from_state(
    spec: ModelSpec,
    state_dict: dict[str, torch.Tensor],
    *,
    device: str | torch.device = "auto",
    source: str = "",
    provenance: dict[str, Any] | None = None,
    lazy: bool = False,
) -> LoadedModel:
    """Build the network for ``spec``, load ``state_dict`` strictly and move it to ``device``.

    lazy: keep ``state_dict`` as the model's ``pending`` weights instead, and build (and check) the
    network on first use of ``model.module``; ``set_precision`` builds it unless a cached ONNX graph runs it.
    """
    from slicewise.models.validate import warn_if_unfinished

    warn_if_unfinished(provenance or {}, source)
    model = LoadedModel(
        spec=spec,
        module=None,
        adapter=get_adapter(spec.arch),
        device=resolve_device(device),
        source=source,
        provenance=provenance or {},
        pending=state_dict,
    )
    if not lazy:
        _ = model.module
    return model


def _build(spec: ModelSpec, state_dict: dict[str, torch.Tensor] | None, source: str, device: torch.device) -> nn.Module:
    """The network for ``spec`` with ``state_dict`` loaded strictly, in eval mode on ``device``; weights that do
    not fit it are one ``CheckpointError`` (checked before the network is allocated)."""
    from slicewise.models.validate import build_checked, check_weights

    if state_dict is None:
        raise CheckpointError(f"{source or 'This model'} has neither a network nor the weights to build one.")
    adapter = get_adapter(spec.arch)
    check_weights(adapter, spec, state_dict, source)  # names, shapes, dtypes, finiteness: before allocating
    module = build_checked(adapter, spec, source)
    try:
        module.load_state_dict(state_dict, strict=True)
    except RuntimeError as error:
        first_line = str(error).splitlines()[1].strip() if len(str(error).splitlines()) > 1 else str(error)
        raise CheckpointError(
            f"The weights in {source or 'the checkpoint'} do not fit a {spec.arch} built from its own spec "
            f"({first_line}); the file was edited or saved by another version."
        ) from error
    module = module.to(device).eval()
    if adapter.channels_last:
        module = module.to(memory_format=torch.channels_last)
    return module
