"""Workarounds for mismatched third-party installs, applied only where they are needed.

CPU-only torch paired with PyPI's torchvision (a CUDA build, the only one that matches recent
torch releases) cannot load torchvision's compiled operators, and ``import torchvision`` then
fails with ``RuntimeError: operator torchvision::nms does not exist``. timm,
segmentation-models-pytorch and transformers all import torchvision when it is installed, so
the GP-VM adapters call ``ensure_torchvision_ops()`` before they import those libraries.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import threading
from pathlib import Path

import torch

_LIBRARY: torch.library.Library | None = None  # kept alive: a Library unregisters when collected
_LIBRARY_LOCK = threading.Lock()


def _nms(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Greedy non-maximum suppression with torchvision's semantics.

    boxes: (N, 4) as x1, y1, x2, y2; scores: (N,). Returns the indices of the kept boxes, by
    decreasing score; a box is dropped when its IoU with a kept, higher-scoring box exceeds
    ``iou_threshold``.
    """
    order = scores.argsort(descending=True)
    boxes = boxes[order].float()
    x1, y1, x2, y2 = boxes.unbind(1)
    areas = (x2 - x1) * (y2 - y1)
    width = (torch.minimum(x2[:, None], x2) - torch.maximum(x1[:, None], x1)).clamp(min=0)
    height = (torch.minimum(y2[:, None], y2) - torch.maximum(y1[:, None], y1)).clamp(min=0)
    intersection = width * height
    overlaps = intersection / (areas[:, None] + areas - intersection) > iou_threshold
    suppressed = torch.zeros(len(order), dtype=torch.bool, device=boxes.device)
    keep = []
    for index in range(len(order)):
        if not suppressed[index]:
            keep.append(index)
            suppressed |= overlaps[index]
    return order[torch.tensor(keep, dtype=torch.long, device=boxes.device)]


def _qnms(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """``_nms`` on quantized boxes and scores."""
    return _nms(boxes.dequantize(), scores.dequantize(), iou_threshold)


def _torchvision_extension_loads() -> bool:
    """Whether torchvision is absent or its compiled operators load into this torch."""
    spec = importlib.util.find_spec("torchvision")
    if spec is None or not spec.submodule_search_locations:
        return True
    package = Path(spec.submodule_search_locations[0])
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        extension = package / f"_C{suffix}"
        if extension.is_file():
            try:
                torch.ops.load_library(str(extension))
            except OSError:
                return False
            return True
    return False


def ensure_torchvision_ops() -> None:
    """Register pure-torch ``torchvision::nms`` and ``qnms`` when torchvision's own cannot load.

    Call before the first import of torchvision, timm, segmentation-models-pytorch or
    transformers. Where torchvision's compiled operators load (a matching torch build) this
    only loads them early, as ``import torchvision`` would; repeated calls do nothing.
    """
    global _LIBRARY
    with _LIBRARY_LOCK:  # two threads building models at once would register the operators twice
        if _LIBRARY is not None or hasattr(torch.ops.torchvision, "nms"):
            return
        if _torchvision_extension_loads():
            return
        library = torch.library.Library("torchvision", "FRAGMENT")
        library.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        library.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        library.impl("nms", _nms, "CPU")
        library.impl("nms", _nms, "CUDA")
        library.impl("qnms", _qnms, "QuantizedCPU")
        _LIBRARY = library
