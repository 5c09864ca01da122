"""ONNX graphs (``.onnx``), run by onnxruntime on the CPU.

A graph is not the weights of a registry architecture, so it loads into a ``LoadedModel`` but
does not convert. Input channels and the output classes are read from the graph's static
shapes; a graph with a fixed square input size runs at that size. Class names and the
normalisation are not in an ONNX file: they come from the options (``--classes``,
``--normalization``) or are assumed.
"""

from __future__ import annotations

from pathlib import Path

from slicewise.errors import CheckpointError
from slicewise.models.adapters.runtime import OnnxAdapter, OnnxModule
from slicewise.models.importers import Imported, ImportOptions, resolve_io
from slicewise.models.spec import InputSpec, ModelSpec

DEFAULT_DIVISOR = 32  # what most encoder-decoder networks need when the graph does not fix its size


def detect(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() == ".onnx"


def _static(dim: object) -> int | None:
    return dim if isinstance(dim, int) and dim > 0 else None


def read(path: Path, options: ImportOptions) -> Imported:
    try:
        module = OnnxModule(path)
    except Exception as error:  # noqa: BLE001 - onnxruntime raises its own unexported exception types
        raise CheckpointError(
            f"onnxruntime cannot open {path.name} ({str(error).splitlines()[0]}); export the model again with "
            "torch.onnx.export."
        ) from error
    inputs, outputs = module.session.get_inputs(), module.session.get_outputs()
    if len(inputs) != 1 or len(inputs[0].shape) != 4:
        shapes = ", ".join(str(i.shape) for i in inputs)
        raise CheckpointError(
            f"{path.name} takes the inputs {shapes}; slicewise runs ONNX graphs with one (N, C, H, W) image input."
        )
    _, channels, height, width = (_static(d) for d in inputs[0].shape)
    if (height is None) != (width is None) or (height is not None and height != width):
        raise CheckpointError(
            f"{path.name} fixes its input to {inputs[0].shape[2:]} pixels; slicewise runs ONNX graphs of a dynamic "
            "or a square fixed size, so export it with dynamic_axes for height and width."
        )
    classes = _static(outputs[0].shape[1]) if len(outputs[0].shape) == 4 else None
    if classes is None:
        count = len(options.classes) if options.classes else None
        if count is None:
            raise CheckpointError(
                f"{path.name} does not fix its number of output classes; pass the class names (--classes)."
            )
        classes = count
    output, in_channels, normalization, assumed = resolve_io(
        outputs=classes, options=options, channels=channels, activation="sigmoid" if classes == 1 else "softmax"
    )
    spec = ModelSpec(
        arch="onnx",
        input=InputSpec(
            channels=in_channels,
            normalization=normalization,
            divisor=height or DEFAULT_DIVISOR,
            size=height,
        ),
        output=output,
        name=path.stem,
    )
    details = {"input": str(inputs[0].shape), "output": str(outputs[0].shape), "opset": _opset(module)}
    return Imported("onnx", path, spec, module=module, adapter=OnnxAdapter(), details=details, assumed=assumed)


def _opset(module: OnnxModule) -> str:
    meta = module.session.get_modelmeta()
    return f"{meta.producer_name} graph" if meta.producer_name else "graph"
