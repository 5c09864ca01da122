"""Which image, which model, which device: the choices every other panel reads from the state."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from magicgui.widgets import ComboBox, Container, FileEdit, Label, LineEdit, SpinBox
from napari.layers import Image
from napari.utils.notifications import show_error, show_info

from slicewise._qt.layers import is_output
from slicewise._qt.panels import show_choice
from slicewise._qt.runner import JobRunner
from slicewise._qt.state import DockState, free_cores, use_threads
from slicewise.api import runs_as
from slicewise.errors import SlicewiseError
from slicewise.models.checkpoint import read_header
from slicewise.models.loaded import describe_device, resolve_device
from slicewise.models.sources import bundled_models, model_names, resolve

# slicewise checkpoints and the foreign model files slicewise imports (folders: "model folder")
CHECKPOINT_FILTER = "*.safetensors *.onnx *.pt *.pth *.ts"


class ModelPanel(Container):
    """Image, model (bundled or opened: checkpoint file, model folder), class names, device."""

    def __init__(self, state: DockState, runner: JobRunner) -> None:
        super().__init__()
        self._state = state
        self._clearing = False  # the file fields are being emptied: not a path the person chose
        # the person's images only (never slicewise's P(class), uncertainty or explanation layers)
        self.image = ComboBox(label="image", choices=self._images, nullable=True, value=None)
        # a callable, so napari's reset_choices on layer changes keeps the opened checkpoints
        self.model = ComboBox(label="model", choices=self._model_choices, value=state.model)
        self.checkpoint = FileEdit(label="checkpoint", filter=CHECKPOINT_FILTER, mode="r")
        self.model_folder = FileEdit(
            label="model folder", mode="d", tooltip="Hugging Face, smp, MONAI bundle or nnU-Net v2 folder"
        )
        self.classes = LineEdit(
            label="class names",
            tooltip="for an imported model whose files name no classes: background first, comma-separated",
        )
        self.device = ComboBox(label="device", choices=["auto", "cpu", "cuda"], value=state.device)
        self.threads = SpinBox(
            label="CPU threads",
            value=0,
            min=0,
            max=os_cores(),
            tooltip="0: the cores free when the dock opened or this was set (other programs' load counted)",
        )
        self.device_info = Label(label="runs on", value="")
        self.use = Label(label="use", value=model_use(state.model))  # fast or accurate, from the model's header
        self.extend([self.image, self.model, self.use, self.checkpoint, self.model_folder, self.classes, self.device])
        self.extend([self.threads, self.device_info])
        use_threads(0)
        self._show_device(self.device.value)
        self.threads.changed.connect(lambda count: (use_threads(int(count)), self._show_device(self.device.value)))

        self.image.changed.connect(lambda layer: setattr(state, "image", layer))
        self.model.changed.connect(lambda name: setattr(state, "model", None if name is None else str(name)))
        self.model.changed.connect(lambda _: self._show_device(self.device.value))  # its precision here
        self.model.changed.connect(lambda name: setattr(self.use, "value", model_use(name)))
        self.device.changed.connect(self._choose_device)
        self.classes.changed.connect(self._name_classes)
        self.checkpoint.changed.connect(self._open)
        self.model_folder.changed.connect(self._open)
        self._chosen: Image | None = None  # the image last chosen, to tell the person when it is removed
        state.events.image.connect(self._follow_image)
        state.events.model.connect(lambda name: show_choice(self.model, name))
        state.events.opened_models.connect(lambda: self.model.reset_choices())
        state.listen(state.viewer.layers.events.removed, self._on_removed)
        state.listen(state.viewer.layers.events.inserted, self._on_inserted)
        images = self._images(self.image)
        state.image = images[-1][1] if images else None  # the topmost of the person's images

    def _follow_image(self, layer: Image | None) -> None:
        show_choice(self.image, layer)
        if layer is not None:
            self._chosen = layer

    def _images(self, _: ComboBox) -> list[tuple[str, Image]]:
        """The viewer's image layers that are not slicewise's own outputs."""
        layers = self._state.viewer.layers
        return [(layer.name, layer) for layer in layers if isinstance(layer, Image) and not is_output(layer)]

    def _on_inserted(self, event: Any) -> None:
        """An image added while none is chosen becomes the choice (there was nothing to switch away from)."""
        if self._state.image is None and isinstance(event.value, Image) and not is_output(event.value):
            self.image.reset_choices()
            self._state.image = event.value

    def _on_removed(self, event: Any) -> None:
        """The chosen image was removed: nothing is chosen (and the person told), never another layer silently."""
        if event.value is self._chosen and self._state.image in (None, event.value):
            self._chosen = None
            self._state.image = None
            self.image.reset_choices()
            self.image.value = None
            show_info(f"The image '{event.value.name}' was removed; choose an image in the slicewise widget.")

    def _model_choices(self, _: ComboBox) -> list[str]:
        """The bundled models, then every checkpoint or model folder opened in this dock."""
        return [*model_names(), *self._state.opened_models]

    def _open(self, path: Path) -> None:
        """A checkpoint or model folder becomes a choice if slicewise can open it; the field is emptied either way."""
        if self._clearing or str(path) in ("", ".") or not Path(path).exists():
            return
        problem = self._cannot_open(Path(path))
        self._clearing = True
        try:
            for field in (self.checkpoint, self.model_folder):  # the model list holds the choice; no stale paths
                field.value = ""
        finally:
            self._clearing = False
        if problem is not None:
            show_error(problem)
            return
        self._state.open_model(str(path))

    @staticmethod
    def _cannot_open(path: Path) -> str | None:
        """Why ``path`` is no model slicewise opens (one sentence), or None."""
        try:
            source = resolve(path)
            if source.kind == "checkpoint" and path.is_dir():
                return (
                    f"{path.name} is not a model folder slicewise can open: choose a Hugging Face, "
                    "segmentation-models-pytorch, MONAI bundle or nnU-Net v2 folder, or a model file as 'checkpoint'."
                )
            if source.kind == "checkpoint":
                read_header(path)
        except SlicewiseError as error:
            return str(error)
        return None

    def _name_classes(self, text: str) -> None:
        self._state.classes = tuple(name.strip() for name in str(text).split(",") if name.strip())

    def _choose_device(self, choice: str) -> None:
        self._state.device = str(choice)
        self._show_device(choice)

    def _show_device(self, choice: str) -> None:
        try:
            self.device_info.value = f"{runs_on(resolve_device(choice))}, {runs_as(self._state.model, choice)}"
        except SlicewiseError as error:
            self.device_info.value = "unavailable"
            show_error(str(error))


def model_use(name: str | None) -> str:
    """A bundled model's line on when to choose it (its header's ``use``), or nothing."""
    bundled = bundled_models()
    if name not in bundled:
        return ""
    return str(read_header(bundled[name]).provenance.get("use", "")).split(" (")[0]


def os_cores() -> int:
    """The most CPU threads worth offering: the cores of this machine."""
    return max(free_cores(), torch.get_num_threads(), os.cpu_count() or 1)


def runs_on(device: torch.device) -> str:
    """What a prediction runs on, for the "runs on" line: ``CPU, 1 thread`` or the CUDA device's words."""
    if device.type != "cpu":
        return describe_device(device)
    threads = torch.get_num_threads()
    return f"CPU, {threads} thread{'s' if threads != 1 else ''}"
