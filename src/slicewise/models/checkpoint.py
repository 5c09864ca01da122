"""The one slicewise checkpoint format: a single ``.safetensors`` file.

Weights are plain tensors; the ``ModelSpec`` and the provenance (training data, protocol,
metrics, versions) are JSON strings in the safetensors header metadata. Loading never
unpickles anything, so a checkpoint from a stranger cannot run code.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save

from slicewise.errors import CheckpointError, one_line
from slicewise.io.autosave import READABLE, write_atomically
from slicewise.models.spec import ModelSpec

FORMAT_VERSION = "1"
_SPEC_KEY = "slicewise.spec"
_PROVENANCE_KEY = "slicewise.provenance"
_VERSION_KEY = "slicewise.format_version"


@dataclass(frozen=True)
class CheckpointHeader:
    """What a checkpoint says about itself, read without touching its weights."""

    spec: ModelSpec
    provenance: dict[str, Any] = field(default_factory=dict)
    format_version: str = FORMAT_VERSION


def save_checkpoint(
    path: str | os.PathLike,
    state_dict: dict[str, torch.Tensor],
    spec: ModelSpec,
    provenance: dict[str, Any] | None = None,
) -> Path:
    """Write weights, spec and provenance to one safetensors file, atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # clone: safetensors refuses tensors that share memory (DynUNet aliases its skip layers)
    tensors = {key: value.detach().cpu().clone().contiguous() for key, value in state_dict.items()}
    metadata = {
        _VERSION_KEY: FORMAT_VERSION,
        _SPEC_KEY: spec.to_json(),
        _PROVENANCE_KEY: json.dumps(provenance or {}, sort_keys=True, default=str),
    }
    write_atomically(path, lambda file: file.write(save(tensors, metadata=metadata)), mode=READABLE)
    return path


def _not_safetensors_reason(path: Path) -> str:
    with path.open("rb") as handle:
        magic = handle.read(4)
    if magic.startswith(b"PK"):
        return "it is a PyTorch zip/pickle file"
    if magic[:1] == b"\x80":
        return "it is a Python pickle"
    return "it is truncated or not a safetensors file"


def _check_readable(path: Path) -> None:
    if not path.exists():
        raise CheckpointError(f"Checkpoint {path} does not exist; pass a .safetensors file or a bundled model name.")
    if path.is_dir():
        raise CheckpointError(f"Checkpoint {path} is a folder; pass the .safetensors file inside it.")
    if not path.is_file():  # a FIFO, socket or device would block or stream forever
        raise CheckpointError(
            f"Checkpoint {path} is not a regular file (a pipe or a device); pass a .safetensors file."
        )


def read_header(path: str | os.PathLike) -> CheckpointHeader:
    """Read spec and provenance from a checkpoint's header (no weights are loaded)."""
    path = Path(path)
    _check_readable(path)
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
    except (SafetensorError, OSError, ValueError) as error:
        raise CheckpointError(
            f"Cannot read checkpoint {path.name}: {_not_safetensors_reason(path)}; slicewise loads only "
            "safetensors files and never unpickles, so re-save the weights with safetensors."
        ) from error
    if _SPEC_KEY not in metadata:
        raise CheckpointError(
            f"{path.name} is a safetensors file without a slicewise model spec in its header; "
            "save it with slicewise.models.checkpoint.save_checkpoint or export it from slicewise-train."
        )
    try:
        spec = ModelSpec.from_json(metadata[_SPEC_KEY])
        provenance = json.loads(metadata.get(_PROVENANCE_KEY, "{}"))
        if not isinstance(provenance, dict):
            raise TypeError(f"the provenance is a JSON {type(provenance).__name__}, not an object")
    except (ValueError, KeyError, TypeError, AttributeError, RecursionError) as error:
        raise CheckpointError(
            one_line(f"The model spec in {path.name} is malformed ({error}); re-export the checkpoint.")
        ) from error
    return CheckpointHeader(spec=spec, provenance=provenance, format_version=metadata.get(_VERSION_KEY, "?"))


def load_checkpoint(path: str | os.PathLike) -> tuple[CheckpointHeader, dict[str, torch.Tensor]]:
    """Read a checkpoint's header and weights (CPU tensors); never unpickles."""
    header = read_header(path)
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as error:
        raise CheckpointError(
            f"The weights in {Path(path).name} cannot be read ({error}); the file is probably truncated."
        ) from error
    return header, tensors
