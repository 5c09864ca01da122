"""slicewise: annotation-assisted 2D medical image segmentation for napari.

Load any model (``load_model``), predict on a slice (``predict``), teach a new task from a few
labelled slices (``teach``, ``save_model``), fill the slices between labelled ones of a volume
(``fill_between``); the napari widget and the
``slicewise`` CLI call these same functions.

Importing ``slicewise`` (or its readers, ``slicewise.io``) is light: the names below load their
module — and torch, MONAI and the model libraries — the first time they are used.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# public name → the module that defines it, imported on first use (PEP 562)
_LAZY = {
    "DEFAULT_MODEL": "slicewise.api",
    "load_model": "slicewise.api",
    "predict": "slicewise.api",
    "save_model": "slicewise.api",
    "teach": "slicewise.api",
    "fill_between": "slicewise.core.interpolate",
    "Prediction": "slicewise.core.types",
    "PredictOptions": "slicewise.core.types",
    "Progress": "slicewise.core.types",
    "SliceRef": "slicewise.core.types",
    "SlicewiseError": "slicewise.errors",
    "Ensemble": "slicewise.models.loaded",
    "LoadedModel": "slicewise.models.loaded",
    "bundled_models": "slicewise.models.sources",
}

__all__ = [
    "DEFAULT_MODEL",
    "Ensemble",
    "LoadedModel",
    "PredictOptions",
    "Prediction",
    "Progress",
    "SliceRef",
    "SlicewiseError",
    "__version__",
    "bundled_models",
    "fill_between",
    "load_model",
    "predict",
    "save_model",
    "teach",
]

if TYPE_CHECKING:
    from slicewise.api import DEFAULT_MODEL, load_model, predict, save_model, teach
    from slicewise.core.interpolate import fill_between
    from slicewise.core.types import Prediction, PredictOptions, Progress, SliceRef
    from slicewise.errors import SlicewiseError
    from slicewise.models.loaded import Ensemble, LoadedModel
    from slicewise.models.sources import bundled_models


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'slicewise' has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})
