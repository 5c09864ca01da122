"""Explanations for segmentation: which pixels and features made the model predict a class.

Every method explains one scalar, as pytorch-grad-cam's ``SemanticSegmentationTarget`` does:
the sum of the target class's logits over the pixels predicted as that class (over all
pixels when none is). The attributions themselves are captum's:

- ``gradcam``: class activation map on the adapter's ``cam_layer`` (the deepest feature
  map, chosen per family on evidence), ReLU, bilinearly upsampled to the slice: which regions'
  features support the class.
  It weights the activations by their gradients pixel by pixel (HiResCAM: captum's
  ``LayerGradientXActivation`` summed over channels), not by the spatially averaged gradients
  of ``LayerGradCam``: behind instance norm, which the bundled U-Nets use, those averages
  cancel to noise (``benchmarks/explain_quality.py``, ``docs/explanations.md``).
- ``saliency``: ``IntegratedGradients`` from a black (zero) input, absolute value, maximum
  over the channels: which pixels' values the target is sensitive to.
- ``occlusion``: ``Occlusion`` with zeroed windows of 1/6 of the slice, sliding by half a
  window: how much the target drops when a patch is blacked out (rises count as zero).

Each returns an (H, W) float32 map in [0, 1], min-max normalised over the padded batch.

Saliency and occlusion run many forward passes (``batches``); inside ``reporting(callback)`` each
one is announced as a ``Progress`` with the estimated time left, and the callback may raise to stop
the explanation between two of them (the dock's Cancel).
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch

from slicewise.core.types import EXPLAIN_METHODS, Progress
from slicewise.errors import SlicewiseError
from slicewise.models.loaded import LoadedModel

__all__ = ["EXPLAIN_METHODS", "attribution", "batches", "reporting"]

Target = Callable[[torch.Tensor], torch.Tensor]  # (N, C, H, W) input → (N,) target scores

_IG_STEPS = 16  # integral steps: ~1 s for a 256² slice through the bundled U-Net on one CPU thread
_OCCLUSION_FRACTION = 6  # windows of 1/6 of the slice (43 px of 256), 11 to 12 positions per axis
_BATCH_PIXELS = 2**18  # pixels in one batched forward of perturbed inputs: larger batches only cost memory on CPU
_REPORTING = threading.local()  # .callback: the Progress callback of ``reporting`` in this thread


@contextmanager
def reporting(callback: Callable[[Progress], None]) -> Iterator[None]:
    """Within this block (in this thread), every batch of an explanation calls ``callback(Progress)`` first.

    The Progress says ``step`` of ``total`` batches and, after the first, about how long the rest takes.
    An exception the callback raises ends the explanation there (a Cancel between two batches).
    """
    previous = getattr(_REPORTING, "callback", None)
    _REPORTING.callback = callback
    try:
        yield
    finally:
        _REPORTING.callback = previous


def batches(method: str, height: int, width: int) -> int:
    """How many forward passes explaining a (padded) ``height`` × ``width`` slice with ``method`` takes.

    Grad-CAM: one (with its backward). Saliency: the integral's steps in batches. Occlusion: one pass
    of the whole slice, then the occluded copies in batches (a window of 1/6 of a side, sliding by half).
    """
    per_batch = max(1, _BATCH_PIXELS // (height * width))
    if method == "saliency":
        return math.ceil(_IG_STEPS / per_batch)
    if method == "occlusion":
        positions = 1
        for side in (height, width):
            window = math.ceil(side / _OCCLUSION_FRACTION)
            positions *= 1 + math.ceil((side - window) / max(1, window // 2))  # as captum counts them
        return 1 + math.ceil(positions / per_batch)
    return 1


class _Batches:
    """Counts an explanation's forward passes and tells ``reporting``'s callback before each one."""

    def __init__(self, method: str, total: int) -> None:
        self.method, self.total, self.done = method, total, 0
        self.callback = getattr(_REPORTING, "callback", None)
        self.started = time.perf_counter()

    def next(self) -> None:
        if self.callback is None:
            return
        left = ""
        if self.done:
            seconds = (time.perf_counter() - self.started) / self.done * max(0, self.total - self.done)
            left = f", about {seconds:.0f} s left"
        step = min(self.done, self.total - 1)
        self.callback(Progress(step, self.total, f"explain ({self.method}): batch {step + 1} of {self.total}{left}"))
        self.done += 1


def attribution(
    method: str, model: LoadedModel, batch: torch.Tensor, labels: torch.Tensor, target_class: int
) -> torch.Tensor:
    """Explain ``target_class`` in a (1, C, H, W) prepared, padded batch → (H, W) float32 in [0, 1].

    labels: the (H, W) predicted labels of that batch; they fix the region whose logits are
    explained. The model stays in eval mode and its weights are untouched.
    """
    if method not in EXPLAIN_METHODS:
        raise SlicewiseError(f"Unknown explanation method {method!r}; choose one of: {', '.join(EXPLAIN_METHODS)}.")
    if tuple(labels.shape) != tuple(batch.shape[-2:]):
        raise SlicewiseError(
            f"The labels have shape {tuple(labels.shape)} but the batch is {tuple(batch.shape[-2:])}; "
            "pass the labels predicted for this padded batch."
        )
    with torch.inference_mode(False), torch.enable_grad():
        x = batch.detach().clone()  # a normal tensor, even if the batch was made under inference_mode
        if model.adapter.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        counter = _Batches(method, batches(method, *x.shape[-2:]))
        target = _target(model, labels.clone(), target_class, method, counter)
        raw = _METHODS[method](model, target, x)
    return _normalize(raw.detach().float())


def check_target_class(target_class: int, class_names: tuple[str, ...]) -> None:
    """The one check of a class to explain (prediction, CLI, widget): a foreground class of the model."""
    last = len(class_names) - 1
    if not 1 <= target_class <= last:
        raise SlicewiseError(
            f"Target class {target_class} is not a foreground class of this model, which predicts classes 0 to "
            f"{last} ({', '.join(class_names)}); pick a foreground class from 1 to {last}."
        )


def _target(model: LoadedModel, labels: torch.Tensor, target_class: int, method: str, counter: _Batches) -> Target:
    """The scalar to explain: the target class's logits summed over its predicted region."""
    check_target_class(target_class, model.spec.output.class_names)
    region = labels == target_class
    weight = (region if region.any() else torch.ones_like(region)).to(torch.float32)

    def target(x: torch.Tensor) -> torch.Tensor:
        counter.next()
        logits = model.adapter.logits(model.module, x)
        if torch.is_grad_enabled() and x.requires_grad and not logits.requires_grad:
            raise SlicewiseError(
                f"{model.name} runs outside torch (an ONNX graph runs in onnxruntime), so it gives no gradients "
                f"for {method}; explain it with occlusion, which needs only forward passes."
            )
        channel = 0 if logits.shape[1] == 1 else target_class  # a one-logit sigmoid output is class 1
        return (logits[:, channel].float() * weight).sum((-2, -1))

    return target


# captum is imported where it is used: importing it loads matplotlib and IPython (~0.4 s), which
# every ``import slicewise`` would otherwise pay.


def _gradcam(model: LoadedModel, target: Target, x: torch.Tensor) -> torch.Tensor:
    from captum.attr import LayerAttribution, LayerGradientXActivation

    name = model.adapter.cam_layer(model.spec)
    if name is None:
        # a network without torch parameters (an ONNX graph) gives no gradients: saliency would fail too
        instead = "saliency or occlusion" if any(True for _ in model.module.parameters()) else "occlusion"
        raise SlicewiseError(f"{model.spec.arch} declares no layer for Grad-CAM; explain it with {instead} instead.")
    try:
        layer = model.module.get_submodule(name)
    except AttributeError:
        raise SlicewiseError(
            f"{model.name} has no layer {name!r} for Grad-CAM (its init kwargs change the {model.spec.arch} "
            "layout); explain it with saliency or occlusion instead."
        ) from None
    weighted = LayerGradientXActivation(target, layer).attribute(x)
    if not isinstance(weighted, torch.Tensor) or weighted.ndim != 4:
        raise SlicewiseError(
            f"The Grad-CAM layer {name!r} of {model.name} does not output one (N, C, h, w) feature map; "
            "explain it with saliency or occlusion instead."
        )
    cam = weighted.sum(1, keepdim=True).clamp_min(0.0)
    return LayerAttribution.interpolate(cam, tuple(x.shape[-2:]), interpolate_mode="bilinear")[0, 0]


def _saliency(model: LoadedModel, target: Target, x: torch.Tensor) -> torch.Tensor:
    from captum.attr import IntegratedGradients

    gradients = IntegratedGradients(target).attribute(
        x, baselines=0.0, n_steps=_IG_STEPS, internal_batch_size=_batch_size(x)
    )
    return gradients.abs().amax(1)[0]


def _occlusion(model: LoadedModel, target: Target, x: torch.Tensor) -> torch.Tensor:
    from captum.attr import Occlusion

    channels, height, width = x.shape[1:]
    window = tuple(math.ceil(side / _OCCLUSION_FRACTION) for side in (height, width))
    strides = tuple(max(1, side // 2) for side in window)
    drops = Occlusion(target).attribute(
        x,
        sliding_window_shapes=(channels, *window),
        strides=(channels, *strides),
        baselines=0.0,
        perturbations_per_eval=_batch_size(x),
    )
    return drops[0, 0].clamp_min(0.0)  # every channel is occluded together, so all hold the same map


def _batch_size(x: torch.Tensor) -> int:
    """Perturbed copies of ``x`` per forward: 4 for a 256² slice, 1 from 512² on."""
    return max(1, _BATCH_PIXELS // (x.shape[-2] * x.shape[-1]))


def _normalize(raw: torch.Tensor) -> torch.Tensor:
    """Min-max to [0, 1]; a constant map (nothing to tell apart) becomes zeros."""
    low, high = raw.min(), raw.max()
    if not high > low:
        return torch.zeros_like(raw)
    return ((raw - low) / (high - low)).contiguous()


_METHODS: dict[str, Callable[[LoadedModel, Target, torch.Tensor], torch.Tensor]] = {
    "gradcam": _gradcam,
    "saliency": _saliency,
    "occlusion": _occlusion,
}
