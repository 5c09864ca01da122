"""Predict the viewed slice (or follow the slice), with uncertainty and an explanation."""

from __future__ import annotations

from magicgui.widgets import CheckBox, ComboBox, Container, Label, PushButton
from napari.utils.notifications import show_warning
from qtpy.QtWidgets import QWidget

from slicewise._qt.jobs import Request, modality_warning, model_key, predict_job
from slicewise._qt.layers import show_prediction, spatial_shape
from slicewise._qt.runner import Job, JobRunner
from slicewise._qt.state import DockState
from slicewise.core import explain
from slicewise.core.types import EXPLAIN_METHODS, UNCERTAINTY_METHODS, Prediction

LANE = "predict"
PREDICT_KEY = "Shift-P"
MOST_PREDICTED = "most predicted"


class PredictPanel(Container):
    """Uncertainty and explanation choices, Predict, Cancel, follow the slice, the last result."""

    def __init__(self, state: DockState, runner: JobRunner) -> None:
        super().__init__()
        self._state, self._runner = state, runner
        self._seconds: float | None = None  # the last prediction's, to say ahead how long an explanation takes
        self._warned: set[tuple[str, str]] = set()  # (model, image) pairs told they do not match
        choice = "none" if state.uncertainty is None else state.uncertainty
        self.uncertainty = ComboBox(label="uncertainty", choices=["none", *UNCERTAINTY_METHODS], value=choice)
        self.maps = CheckBox(text="probability maps", value=False, tooltip="add a P(class) layer per class")
        self.explain = ComboBox(label="explain", choices=["none", *EXPLAIN_METHODS], value="none")
        self.target_class = ComboBox(
            label="class", choices=self._classes, tooltip="the class to explain; most predicted: the largest one"
        )
        self.explain_info = Label(value="")
        self.explain_info.native.setWordWrap(True)
        self.follow = CheckBox(text="follow the slice", value=False)
        self.predict_button = PushButton(text=f"Predict ({PREDICT_KEY})")
        self.cancel_button = PushButton(text="Cancel")
        self.status = Label(label="last", value="")
        self.status.native.setWordWrap(True)
        self.extend(
            [
                self.uncertainty,
                self.maps,
                self.explain,
                self.target_class,
                self.explain_info,
                self.follow,
                self.predict_button,
                self.cancel_button,
            ]
        )
        self.append(self.status)
        self.uncertainty.changed.connect(lambda v: setattr(state, "uncertainty", None if v == "none" else str(v)))
        self.explain.changed.connect(self._say_how_long)
        self.predict_button.changed.connect(self.request_prediction)
        self.cancel_button.changed.connect(self.cancel)
        self.follow.changed.connect(lambda on: on and self.request_prediction())
        state.events.model.connect(lambda: self.target_class.reset_choices())
        state.listen(state.viewer.dims.events.current_step, self._on_slice_change)
        state.bind_key(PREDICT_KEY, self.request_prediction, "Predict the viewed slice")

    def _classes(self, _: ComboBox) -> list[tuple[str, int]]:
        """'most predicted', then the chosen model's classes by name once it is loaded."""
        names: tuple[str, ...] = ()
        for (model, _device, _given), loaded in self._state.models.items():
            if model == self._state.model:
                names = loaded.spec.output.class_names
        return [(MOST_PREDICTED, 0), *((name, k) for k, name in enumerate(names[1:], start=1))]

    def _say_how_long(self) -> None:
        """Before an explanation runs: how many forward passes it takes and, after a prediction, about how long."""
        method, image = str(self.explain.value), self._state.image
        if method == "none" or image is None:
            self.explain_info.value = ""
            return
        height, width = (-(-side // 16) * 16 for side in spatial_shape(image)[-2:])  # padded as most models are
        passes = explain.batches(method, height, width)
        text = f"{method}: {passes} forward pass{'es' if passes > 1 else ''}"
        if self._seconds is not None and passes > 1:
            slices = max(1, 2**18 // (height * width))  # perturbed copies per pass (core.explain)
            factor = 3 if method == "saliency" else 1  # a backward pass costs about two forwards
            text += f", about {passes * slices * factor * self._seconds:.0f} s here"
        self.explain_info.value = text

    def _on_slice_change(self) -> None:
        if self.follow.value:
            self.request_prediction(quiet=True)

    def request_prediction(self, *, quiet: bool = False) -> None:
        """Predict the viewed slice; while a job runs, the newest request waits and older ones drop.
        quiet: while following the slice, a view that shows no slice is not said again at every step."""
        explain_method = None if self.explain.value == "none" else str(self.explain.value)
        target_class = int(self.target_class.value or 0) or None
        request = self._state.request(quiet=quiet, explain=explain_method, target_class=target_class)
        if request is None:
            return
        loading = model_key(request) not in self._state.models
        # a quick prediction (cached model, no explanation, no sampled uncertainty) gets no progress bar:
        # a bar is a widget made and closed in the GUI thread, per slice while following the slice
        quick = not loading and explain_method is None and request.uncertainty in (None, "entropy")
        job = Job(
            work=predict_job,
            args=(request, self._state.models),
            on_result=lambda prediction: self._show(request, prediction),
            on_failure=lambda _failure: self._state.forget_model(request.model),
            description=None
            if quick
            else f"slicewise {request.slice_ref.describe()}" + (" (loading the model)" if loading else ""),
        )
        self._runner.submit(LANE, job)

    def cancel(self) -> None:
        """Stop the running prediction at its next step and drop the waiting one."""
        if self._runner.cancel(LANE):
            self._say("cancelled")

    def _show(self, request: Request, prediction: Prediction) -> None:
        if request.layer not in self._state.viewer.layers:
            return
        self._state.proposal = show_prediction(
            self._state.viewer,
            request.layer,
            prediction,
            probabilities=bool(self.maps.value),
            explain_method=request.explain or "explanation",
        )
        self._warn_once(request)
        if request.explain is None:
            self._seconds = prediction.seconds
        if len(self.target_class.choices) == 1:
            self.target_class.reset_choices()
        where = prediction.slice_ref.describe()
        score = "" if prediction.uncertainty_score is None else f" · uncertainty {prediction.uncertainty_score:.3f}"
        self._say(f"{prediction.model_name} · {where} · {prediction.seconds * 1000:.0f} ms{score}")
        self._say_how_long()

    def _say(self, text: str) -> None:
        """Show ``text`` as the last result, laid out at once (see ``settle_layouts``)."""
        self.status.value = text
        settle_layouts(self.status.native)

    def _warn_once(self, request: Request) -> None:
        """Say once per model and image when the image is not what the model was trained on (and go on)."""
        model = self._state.models.get(model_key(request))
        pair = (request.model, request.layer.name)
        message = None if model is None or pair in self._warned else modality_warning(model, request.layer)
        if message is not None:
            self._warned.add(pair)
            show_warning(message)


def settle_layouts(widget: QWidget | None) -> None:
    """Lay out ``widget``'s parents now, up to the main window, rather than in later event-loop passes.

    A wrapped label's new text relayouts its panel, the dock and the main window one posted event
    after another, each pass a repaint of the whole window after the frame already due: two more
    frames per followed slice, about 100 ms each with software OpenGL (profiled in docs/speed.md).
    Settled now, the new geometry joins the frame that shows the prediction.
    """
    while widget is not None:
        layout = widget.layout()
        if layout is not None:
            layout.activate()
        widget = widget.parentWidget()
