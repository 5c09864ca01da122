"""TorchScript archives (``torch.jit.save``), loaded only when the caller allows it.

A TorchScript file carries compiled code that ``torch.jit.load`` runs, so it is refused unless
``ImportOptions(allow_torchscript=True)`` (CLI ``--allow-torchscript``) says the person trusts
its author. It loads into a ``LoadedModel`` but does not convert. A TorchScript file records
neither classes nor normalisation: they come from the options or are assumed; the input
channels come from the options or from the first 4D convolution weight.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import torch

from slicewise.errors import CheckpointError
from slicewise.models.adapters.runtime import TorchScriptAdapter
from slicewise.models.importers import Imported, ImportOptions, resolve_io
from slicewise.models.spec import InputSpec, ModelSpec

DEFAULT_DIVISOR = 32
_PROBE_SIZE = 64


def _first_line(error: Exception) -> str:
    return (str(error).splitlines() or [type(error).__name__])[0]


def detect(path: Path) -> bool:
    if not (path.is_file() and zipfile.is_zipfile(path)):
        return False
    with zipfile.ZipFile(path) as archive:
        return any(name.endswith("/constants.pkl") or "/code/" in name for name in archive.namelist())


def read(path: Path, options: ImportOptions) -> Imported:
    if not options.allow_torchscript:
        raise CheckpointError(
            f"{path.name} is TorchScript, which runs code stored in the file; load it only if you trust its author, "
            "with slicewise.load_model(path, allow_torchscript=True) or --allow-torchscript on the command line."
        )
    try:
        module = torch.jit.load(str(path), map_location="cpu").eval()
    except RuntimeError as error:
        raise CheckpointError(f"torch.jit.load cannot read {path.name} ({_first_line(error)}).") from error
    convs = [value for value in module.state_dict().values() if value.ndim == 4]
    channels = options.channels or (int(convs[0].shape[1]) if convs else None)
    adapter = TorchScriptAdapter()
    try:
        with torch.inference_mode():
            probe = adapter.logits(module, torch.zeros(1, channels or 3, _PROBE_SIZE, _PROBE_SIZE))
    except RuntimeError as error:
        raise CheckpointError(
            f"{path.name} does not run on a {channels or 3}-channel {_PROBE_SIZE}² image ({_first_line(error)}); "
            "pass its input channels with --channels, or export it with a dynamic input size."
        ) from error
    outputs = int(probe.shape[1])
    output, in_channels, normalization, assumed = resolve_io(
        outputs=outputs, options=options, channels=channels, activation="sigmoid" if outputs == 1 else "softmax"
    )
    spec = ModelSpec(
        arch="torchscript",
        input=InputSpec(channels=in_channels, normalization=normalization, divisor=DEFAULT_DIVISOR),
        output=output,
        name=path.stem,
    )
    details = {"architecture": module.original_name}
    return Imported("torchscript", path, spec, module=module, adapter=adapter, details=details, assumed=assumed)
