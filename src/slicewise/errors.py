"""Errors that say what went wrong and what to do, in one sentence each.

Every failure a person can cause (a bad checkpoint, an image that does not fit the model)
raises a ``SlicewiseError`` subclass; the widget shows ``str(error)`` as a napari notification
and the CLI prints it on one stderr line.
"""

from __future__ import annotations


class SlicewiseError(Exception):
    """Base class: the message is a complete sentence meant for the person at the screen."""


class CheckpointError(SlicewiseError):
    """A checkpoint file is missing, unsafe, truncated or not a slicewise checkpoint."""


class UnknownModelError(SlicewiseError):
    """A model or architecture name that is not in the registry or the bundled list."""


class ImageError(SlicewiseError):
    """An image that cannot be segmented: wrong rank, empty, non-finite or too large."""


class InputSpecError(SlicewiseError):
    """An image that does not fit the model's input spec (channels, dimensions)."""


class PretrainedWeightsError(SlicewiseError):
    """Pretrained encoder weights were asked for but are not available offline."""


class DeviceError(SlicewiseError):
    """A device was asked for that this machine does not have."""
