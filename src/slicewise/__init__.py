"""slicewise: annotation-assisted 2D medical image segmentation for napari.

Load any model (``load_model``), predict on a slice (``predict``); the napari widget and the
``slicewise`` CLI call these same functions.
"""

from slicewise.api import DEFAULT_MODEL, load_model, predict
from slicewise.core.types import Prediction, PredictOptions, Progress, SliceRef
from slicewise.errors import SlicewiseError
from slicewise.models.loaded import Ensemble, LoadedModel
from slicewise.models.sources import bundled_models

__version__ = "0.1.0"

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
    "load_model",
    "predict",
]
