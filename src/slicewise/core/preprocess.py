"""Turn one 2D slice of any dtype into the float32 CHW tensor a checkpoint expects.

The same functions run at training time (``slicewise_train``) and at prediction time, so
a model sees identically prepared pixels in both.
"""

from __future__ import annotations

import numpy as np
import torch

from slicewise.errors import ImageError, InputSpecError
from slicewise.models.spec import InputSpec

MAX_SLICE_PIXELS = 4096 * 4096
MIN_SLICE_SIDE = 8  # below this a slice holds too little to segment (and a U-Net's deepest map vanishes)
_MAX_CHANNELS = 4


def check_slice(image: np.ndarray) -> None:
    """Raise a one-sentence ``ImageError`` for slices no model can segment.

    image: (H, W) or (H, W, C) with C <= 4 (channel last, as napari's RGB layers hold it).
    """
    if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[-1] > _MAX_CHANNELS):
        raise ImageError(
            f"Expected a 2D slice of shape (H, W) or (H, W, C≤{_MAX_CHANNELS}), got shape {tuple(image.shape)}; "
            "pick one slice of a stack or split the channels."
        )
    height, width = image.shape[:2]
    if height == 0 or width == 0 or (image.ndim == 3 and image.shape[2] == 0):
        raise ImageError(f"The slice is empty (shape {tuple(image.shape)}); load an image with pixels.")
    if min(height, width) < MIN_SLICE_SIDE:
        raise ImageError(
            f"The slice is {width}×{height} px; slicewise segments slices of at least {MIN_SLICE_SIDE} px a side, "
            "so pick a larger region or check that the right axes are the image's."
        )
    if height * width > MAX_SLICE_PIXELS:
        raise ImageError(
            f"The slice is {width}×{height} px, more than slicewise's limit of {MAX_SLICE_PIXELS // 1_000_000} "
            "megapixels per slice; crop or downsample it first."
        )
    if image.dtype.kind not in "biuf":
        raise ImageError(f"Cannot segment {image.dtype} pixels; convert the image to an integer or float type.")


def match_channels(image: np.ndarray, channels: int) -> np.ndarray:
    """(H, W) or (H, W, C) → (C', H, W) with C' = ``channels``; gray repeats for RGB models."""
    have = 1 if image.ndim == 2 else image.shape[2]
    chw = image[np.newaxis] if image.ndim == 2 else np.moveaxis(image, -1, 0)
    if have == channels:
        return chw
    if have == 1:
        return np.repeat(chw, channels, axis=0)
    if have == 4 and channels == 3:
        return chw[:3]
    kind = {1: "grayscale", 3: "RGB"}.get(channels, f"{channels}-channel")
    raise InputSpecError(
        f"The model expects {kind} input ({channels} channel{'s' if channels > 1 else ''}) but the slice has "
        f"{have} channels; choose a {have}-channel model or convert the image."
    )


def normalize(chw: np.ndarray, spec: InputSpec) -> np.ndarray:
    """Intensity normalisation per ``spec`` → float32 (C, H, W); non-finite pixels take the minimum."""
    x = chw.astype(np.float32, copy=True)
    finite = np.isfinite(x) if chw.dtype.kind == "f" else None  # integer pixels are always finite
    if finite is not None and not finite.all():
        if not finite.any():
            raise ImageError("The slice has no finite pixel values (all NaN or infinite); nothing to segment.")
        x[~finite] = x[finite].min()
    del finite
    if spec.normalization == "percentile":
        sample = x[:, ::2, ::2] if x.shape[1] > 64 and x.shape[2] > 64 else x
        low, high = np.percentile(sample, spec.percentiles)
        scale = 1.0 / (high - low) if high > low else 0.0
        x -= low
        x *= scale
        np.clip(x, 0.0, 1.0, out=x)
    elif spec.normalization == "zscore":
        std = x.std()
        x -= x.mean()
        if std > 0:
            x /= std
    return x


def pad_to_divisor(chw: np.ndarray, divisor: int, minimum: int = 0) -> np.ndarray:
    """Zero-pad bottom and right so height and width are multiples of ``divisor`` and at least ``minimum``."""
    height, width = chw.shape[-2:]
    pad_h = max(-height % divisor, minimum - height)
    pad_w = max(-width % divisor, minimum - width)
    pad_h += -(height + pad_h) % divisor
    pad_w += -(width + pad_w) % divisor
    if pad_h == 0 and pad_w == 0:
        return chw
    return np.pad(chw, ((0, 0), (0, pad_h), (0, pad_w)))


def network_shape(height: int, width: int, size: int | None) -> tuple[int, int]:
    """The (H, W) a slice has inside the network: itself, or scaled so its long side is ``size``."""
    if size is None:
        return height, width
    scale = size / max(height, width)
    return max(1, round(height * scale)), max(1, round(width * scale))


def resize_long_side(array: np.ndarray, size: int | None, *, labels: bool = False) -> np.ndarray:
    """(C, H, W) → (C, H', W') with the long side ``size``: area-weighted for images, nearest for labels."""
    shape = network_shape(*array.shape[-2:], size)
    if shape == tuple(array.shape[-2:]):
        return array
    tensor = torch.from_numpy(np.require(array, requirements=["C", "W"])).unsqueeze(0)
    if labels:
        resized = torch.nn.functional.interpolate(tensor.float(), size=shape, mode="nearest-exact")
        return resized[0].numpy().astype(array.dtype)
    resized = torch.nn.functional.interpolate(tensor, size=shape, mode="bilinear", antialias=True, align_corners=False)
    return resized[0].numpy()


def to_network_frame(image: np.ndarray, spec: InputSpec) -> np.ndarray:
    """Check, match channels, normalise and resize one slice to ``spec.size`` → float32 (C, H', W'), unpadded.

    The one preparation shared by prediction (``prepare``) and training (``slicewise_train``).
    """
    check_slice(image)
    return resize_long_side(normalize(match_channels(image, spec.channels), spec), spec.size)


def prepare(image: np.ndarray, spec: InputSpec) -> np.ndarray:
    """``to_network_frame``, then padded to the divisor → float32 (C, H', W').

    Each side is padded to at least two divisors (at most ``spec.size``, which fixed-size networks
    need exactly), so the network's deepest feature map keeps more than one element per channel
    (instance normalisation needs two) however small the slice.
    """
    minimum = 2 * spec.divisor if spec.size is None else min(2 * spec.divisor, spec.size)
    return pad_to_divisor(to_network_frame(image, spec), spec.divisor, minimum=minimum)
