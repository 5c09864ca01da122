"""The slicewise dock widget: choose image and model, predict the viewed slice.

It only reads controls, starts a worker and writes layers: loading and inference run in a
napari ``thread_worker`` (the GUI never blocks), a newer request supersedes an older one,
and a person's mistake ends in one notification sentence.
"""

from __future__ import annotations

from pathlib import Path

import napari
from magicgui.widgets import (
    CheckBox,
    ComboBox,
    Container,
    FileEdit,
    Label,
    LineEdit,
    PushButton,
    SpinBox,
    create_widget,
)
from napari.qt.threading import GeneratorWorker
from napari.utils import progress
from napari.utils.notifications import show_error

from slicewise._qt.autosave import Autosaver, RestorePanel
from slicewise._qt.edit import EditPanel
from slicewise._qt.jobs import Failure, ModelCache, Request, advance, model_key, predict_job
from slicewise._qt.layers import show_prediction
from slicewise._qt.prompts import PromptPanel
from slicewise._qt.review import ReviewPanel
from slicewise.api import DEFAULT_MODEL
from slicewise.core.slices import slice_ref_from_point
from slicewise.core.types import EXPLAIN_METHODS, UNCERTAINTY_METHODS, Prediction
from slicewise.errors import SlicewiseError
from slicewise.models.loaded import bundled_models, describe_device, resolve_device

# slicewise checkpoints and the foreign model files slicewise imports (folders: "model folder")
CHECKPOINT_FILTER = "*.safetensors *.onnx *.pt *.pth *.ts"


class PredictWidget(Container):
    """Dock widget: image, model, device, Predict, follow the slice."""

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        super().__init__()
        self._viewer = viewer
        self.image = create_widget(annotation=napari.layers.Image, label="image")
        names = list(bundled_models())
        self.opened_models: list[str] = []  # checkpoints and foreign models opened in this widget
        # a callable, so napari's reset_choices on layer changes keeps the opened checkpoints
        self.model = ComboBox(
            label="model", choices=self._model_choices, value=DEFAULT_MODEL if DEFAULT_MODEL in names else None
        )
        self.checkpoint = FileEdit(label="checkpoint", filter=CHECKPOINT_FILTER, mode="r")
        self.model_folder = FileEdit(
            label="model folder", mode="d", tooltip="Hugging Face, smp, MONAI bundle or nnU-Net v2 folder"
        )
        self.classes = LineEdit(
            label="class names",
            tooltip="for an imported model whose files name no classes: background first, comma-separated",
        )
        self.device = ComboBox(label="device", choices=["auto", "cpu", "cuda"], value="auto")
        self.device_info = Label(label="runs on", value="")
        self.uncertainty = ComboBox(label="uncertainty", choices=["none", *UNCERTAINTY_METHODS], value="entropy")
        self.explain = ComboBox(label="explain", choices=["none", *EXPLAIN_METHODS], value="none")
        self.target_class = SpinBox(
            label="class", value=0, min=0, max=255, tooltip="class to explain; 0 = most predicted"
        )
        self.follow = CheckBox(text="follow the slice", value=False)
        self.predict_button = PushButton(text="Predict")
        self.cancel_button = PushButton(text="Cancel")
        self.status = Label(label="last", value="")
        self.extend(
            [
                self.image,
                self.model,
                self.checkpoint,
                self.model_folder,
                self.classes,
                self.device,
                self.device_info,
                self.uncertainty,
                self.explain,
                self.target_class,
                self.follow,
                self.predict_button,
                self.cancel_button,
                self.status,
            ]
        )

        self.models: ModelCache = {}
        self.review = ReviewPanel(viewer, self)
        self.append(self.review)
        self.prompts = PromptPanel(viewer, self)
        self.append(self.prompts)
        self.edit = EditPanel(viewer, self)
        self.append(self.edit)
        self.autosaver = Autosaver(viewer, source=lambda: self.image.value)
        self.restore = RestorePanel(viewer, self.autosaver, self.edit.target)
        self.insert(0, self.restore)
        self._worker: GeneratorWorker | None = None
        self._pending: Request | None = None
        self._closed = False
        self._cancelled = False

        self._show_device(self.device.value)
        self.device.changed.connect(self._show_device)
        self.checkpoint.changed.connect(self._add_checkpoint)
        self.model_folder.changed.connect(self._add_checkpoint)
        self.predict_button.changed.connect(self.request_prediction)
        self.cancel_button.changed.connect(self.cancel)
        self.follow.changed.connect(lambda on: on and self.request_prediction())
        viewer.dims.events.current_step.connect(self._on_slice_change)
        self.native.destroyed.connect(self._shutdown)

    def _shutdown(self) -> None:
        """The dock widget was closed: stop following the viewer and drop running work."""
        self._closed = True
        self._pending = None
        self._viewer.dims.events.current_step.disconnect(self._on_slice_change)
        if self._worker is not None:
            self._worker.quit()
        self.autosaver.close()

    def _show_device(self, choice: str) -> None:
        try:
            self.device_info.value = describe_device(resolve_device(choice))
        except SlicewiseError as error:
            self.device_info.value = "unavailable"
            show_error(str(error))

    def _add_checkpoint(self, path: Path) -> None:
        """A checkpoint or foreign model the person opened becomes a model choice, and is chosen."""
        if str(path) in ("", ".") or not Path(path).exists():
            return
        key = str(path)
        if key not in self.opened_models:
            self.opened_models.append(key)
            self.model.reset_choices()
            self.prompts.prompt_model.reset_choices()
        self.model.value = key

    def _model_choices(self, _: ComboBox) -> list[str]:
        """The bundled models, then every checkpoint opened in this widget."""
        return [*bundled_models(), *self.opened_models]

    def _on_slice_change(self) -> None:
        if self.follow.value:
            self.request_prediction()

    def current_request(self) -> Request | None:
        """The request the controls describe now, or None (with a notification) if incomplete."""
        layer = self.image.value
        if layer is None:
            show_error("Add an image layer first, then choose it in the slicewise widget.")
            return None
        if self.model.value is None:
            show_error("Choose a bundled model or open a checkpoint file.")
            return None
        try:
            ref = slice_ref_from_point(layer.data.shape, layer.world_to_data(self._viewer.dims.point), layer.rgb)
        except SlicewiseError as error:
            show_error(str(error))
            return None
        return Request(
            layer=layer,
            slice_ref=ref,
            model=str(self.model.value),
            device=str(self.device.value),
            uncertainty=None if self.uncertainty.value == "none" else str(self.uncertainty.value),
            explain=None if self.explain.value == "none" else str(self.explain.value),
            target_class=int(self.target_class.value) or None,
            # names matter only to an opened foreign model; bundled models keep one cache entry
            classes=tuple(name.strip() for name in str(self.classes.value).split(",") if name.strip())
            if str(self.model.value) in self.opened_models
            else (),
        )

    def cancel(self) -> None:
        """Stop the running job at its next step and drop the waiting one."""
        self._pending = None
        if self._worker is not None:
            self._cancelled = True
            self._worker.quit()
            self.status.value = "cancelled"

    def request_prediction(self) -> None:
        """Predict the viewed slice; while a job runs, the newest request waits and older ones drop."""
        request = self.current_request()
        if request is None:
            return
        if self._worker is not None:
            self._pending = request
            self._worker.quit()
            return
        self._start(request)

    def _start(self, request: Request) -> None:
        loaded = model_key(request) in self.models
        steps = 3 + (not loaded) + (request.explain is not None)
        bar = progress(total=steps, desc=f"slicewise {request.slice_ref.describe()}")
        worker = predict_job(request, self.models)
        worker.yielded.connect(lambda step: advance(bar, step))
        worker.returned.connect(lambda result: self._on_result(request, result))
        worker.finished.connect(bar.close)
        worker.finished.connect(self._on_finished)
        self._worker = worker
        worker.start()

    def _on_result(self, request: Request, result: Prediction | Failure) -> None:
        if self._closed or self._cancelled:
            return
        if isinstance(result, Failure):
            show_error(result.message)
            return
        prediction = result
        if request.layer in self._viewer.layers:
            self.edit.proposal = show_prediction(self._viewer, request.layer, prediction)
            where = prediction.slice_ref.describe()
            score = "" if prediction.uncertainty_score is None else f" · uncertainty {prediction.uncertainty_score:.3f}"
            self.status.value = f"{prediction.model_name} · {where} · {prediction.seconds * 1000:.0f} ms{score}"

    def _on_finished(self) -> None:
        self._worker = None
        self._cancelled = False
        if self._pending is not None and not self._closed:
            request, self._pending = self._pending, None
            self._start(request)
