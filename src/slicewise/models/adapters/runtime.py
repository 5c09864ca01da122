"""Networks that arrive as a runnable file rather than as weights: ONNX graphs and TorchScript.

Neither can become the state dict of a registry architecture, so they are not in the registry:
the importers wrap them here so that the core runs them like any other ``LoadedModel``. An
ONNX graph runs in onnxruntime on the CPU (no gradients, so no Grad-CAM, saliency or MC
dropout); a TorchScript module is a normal ``nn.Module`` and supports everything.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import torch
from torch import nn

from slicewise.models.adapters.base import Adapter, resize_logits


class OnnxModule(nn.Module):
    """An onnxruntime session behind ``nn.Module.forward``: NCHW float32 in, the first output out."""

    def __init__(self, path: str | os.PathLike) -> None:
        super().__init__()
        import onnxruntime

        self.session = onnxruntime.InferenceSession(os.fspath(path), providers=["CPUExecutionProvider"])
        graph_input = self.session.get_inputs()[0]
        self.input_name = graph_input.name
        # torch.onnx.export fixes the batch axis at 1 unless told otherwise: such a graph runs image by image
        self.fixed_batch = graph_input.shape[0] if isinstance(graph_input.shape[0], int) else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch = x.detach().float().cpu().contiguous().numpy()
        step = self.fixed_batch or len(batch)
        outs = [self.session.run(None, {self.input_name: batch[i : i + step]})[0] for i in range(0, len(batch), step)]
        return torch.from_numpy(np.ascontiguousarray(np.concatenate(outs))).to(x.device)


class OnnxAdapter(Adapter):
    arch = "onnx"
    family = "onnx"
    kind = "SMA"
    description = "an ONNX graph run by onnxruntime (CPU)"
    channels_last = False

    def logits(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """The graph's first output, upsampled to the input when the graph predicts at a lower resolution."""
        return resize_logits(model(x), x.shape[-2:])

    def create(self, in_channels: int, num_classes: int, **kwargs: Any) -> nn.Module:
        raise NotImplementedError("ONNX graphs are opened by slicewise.models.importers, not built from a spec")


class TorchScriptAdapter(Adapter):
    arch = "torchscript"
    family = "torchscript"
    kind = "SMA"
    description = "a TorchScript module (runs code stored in the file)"
    channels_last = False

    def create(self, in_channels: int, num_classes: int, **kwargs: Any) -> nn.Module:
        raise NotImplementedError("TorchScript modules are opened by slicewise.models.importers, not built from a spec")

    def logits(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """The first tensor the module returns (tuples, lists and dicts unwrapped), at the input's size."""
        out = model(x)
        if isinstance(out, dict):
            out = next(iter(out.values()))
        return resize_logits(out[0] if isinstance(out, tuple | list) else out, x.shape[-2:])
