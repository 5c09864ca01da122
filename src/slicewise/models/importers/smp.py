"""segmentation-models-pytorch folders: ``config.json`` + ``model.safetensors`` from smp's ``save_pretrained``.

smp writes its ``create_model`` kwargs to ``config.json`` with ``_model_class`` naming the
architecture; they become the ``smp`` architecture's init kwargs. The output ``activation``
has no weights: slicewise applies its own softmax (sigmoid for one output channel) to the
logits instead. smp records no class names or normalisation, so those come from the options.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from slicewise.errors import CheckpointError
from slicewise.models.importers import Imported, ImportOptions, read_config_json, read_tensors, registry_spec

_ACTIVATIONS = {None: None, "identity": None, "sigmoid": "sigmoid", "softmax": "softmax", "softmax2d": "softmax"}


def _config(path: Path) -> dict[str, Any] | None:
    config = read_config_json(path)
    return config if config is not None and "_model_class" in config else None


def detect(path: Path) -> bool:
    return _config(path) is not None and (path / "model.safetensors").is_file()


def read(path: Path, options: ImportOptions) -> Imported:
    config = dict(_config(path))
    arch = config.pop("_model_class")
    activation = config.pop("activation", None)
    if activation not in _ACTIVATIONS:
        raise CheckpointError(
            f"The smp model in {path.name} ends in the activation {activation!r}; slicewise imports smp models "
            "that output logits, sigmoid or softmax."
        )
    classes = int(config.pop("classes"))
    channels = int(config.pop("in_channels", 3))
    config.pop("encoder_weights", None)  # the weights are in the folder
    init_kwargs = {"architecture": arch, **config}
    spec, assumed = registry_spec(
        "smp",
        init_kwargs,
        name=path.name,
        outputs=classes,
        options=options,
        channels=channels,
        activation=_ACTIVATIONS[activation] or ("sigmoid" if classes == 1 else "softmax"),
    )
    state = read_tensors(path / "model.safetensors")
    details = {"architecture": f"smp.{arch}", "encoder": config.get("encoder_name")}
    return Imported("smp", path, spec, state_dict=state, details=details, assumed=assumed)
