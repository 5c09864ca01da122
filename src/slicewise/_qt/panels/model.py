"""Which image, which model, which device: the choices every other panel reads from the state."""

from __future__ import annotations

from pathlib import Path

import napari
from magicgui.widgets import ComboBox, Container, FileEdit, Label, LineEdit, create_widget
from napari.utils.notifications import show_error

from slicewise._qt.panels import show_choice
from slicewise._qt.runner import JobRunner
from slicewise._qt.state import DockState
from slicewise.errors import SlicewiseError
from slicewise.models.loaded import describe_device, resolve_device
from slicewise.models.sources import model_names

# slicewise checkpoints and the foreign model files slicewise imports (folders: "model folder")
CHECKPOINT_FILTER = "*.safetensors *.onnx *.pt *.pth *.ts"


class ModelPanel(Container):
    """Image, model (bundled or opened: checkpoint file, model folder), class names, device."""

    def __init__(self, state: DockState, runner: JobRunner) -> None:
        super().__init__()
        self._state = state
        self.image = create_widget(annotation=napari.layers.Image, label="image")
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
        self.device_info = Label(label="runs on", value="")
        self.extend([self.image, self.model, self.checkpoint, self.model_folder, self.classes, self.device])
        self.append(self.device_info)
        self._show_device(self.device.value)

        self.image.changed.connect(lambda layer: setattr(state, "image", layer))
        self.model.changed.connect(lambda name: setattr(state, "model", None if name is None else str(name)))
        self.device.changed.connect(self._choose_device)
        self.classes.changed.connect(self._name_classes)
        self.checkpoint.changed.connect(self._open)
        self.model_folder.changed.connect(self._open)
        state.events.image.connect(lambda layer: show_choice(self.image, layer))
        state.events.model.connect(lambda name: show_choice(self.model, name))
        state.events.opened_models.connect(lambda: self.model.reset_choices())
        state.image = self.image.value

    def _model_choices(self, _: ComboBox) -> list[str]:
        """The bundled models, then every checkpoint or model folder opened in this dock."""
        return [*model_names(), *self._state.opened_models]

    def _open(self, path: Path) -> None:
        if str(path) not in ("", ".") and Path(path).exists():
            self._state.open_model(str(path))

    def _name_classes(self, text: str) -> None:
        self._state.classes = tuple(name.strip() for name in str(text).split(",") if name.strip())

    def _choose_device(self, choice: str) -> None:
        self._state.device = str(choice)
        self._show_device(choice)

    def _show_device(self, choice: str) -> None:
        try:
            self.device_info.value = describe_device(resolve_device(choice))
        except SlicewiseError as error:
            self.device_info.value = "unavailable"
            show_error(str(error))
