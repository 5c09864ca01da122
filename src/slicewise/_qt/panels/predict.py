"""Predict the viewed slice (or follow the slice), with uncertainty and an explanation."""

from __future__ import annotations

from magicgui.widgets import CheckBox, ComboBox, Container, Label, PushButton, SpinBox

from slicewise._qt.jobs import Request, model_key, predict_job
from slicewise._qt.layers import show_prediction
from slicewise._qt.runner import Job, JobRunner
from slicewise._qt.state import DockState
from slicewise.core.types import EXPLAIN_METHODS, UNCERTAINTY_METHODS, Prediction

LANE = "predict"


class PredictPanel(Container):
    """Uncertainty and explanation choices, Predict, Cancel, follow the slice, the last result."""

    def __init__(self, state: DockState, runner: JobRunner) -> None:
        super().__init__()
        self._state, self._runner = state, runner
        choice = "none" if state.uncertainty is None else state.uncertainty
        self.uncertainty = ComboBox(label="uncertainty", choices=["none", *UNCERTAINTY_METHODS], value=choice)
        self.explain = ComboBox(label="explain", choices=["none", *EXPLAIN_METHODS], value="none")
        self.target_class = SpinBox(
            label="class", value=0, min=0, max=255, tooltip="class to explain; 0 = most predicted"
        )
        self.follow = CheckBox(text="follow the slice", value=False)
        self.predict_button = PushButton(text="Predict")
        self.cancel_button = PushButton(text="Cancel")
        self.status = Label(label="last", value="")
        self.extend(
            [self.uncertainty, self.explain, self.target_class, self.follow, self.predict_button, self.cancel_button]
        )
        self.append(self.status)
        self.uncertainty.changed.connect(lambda v: setattr(state, "uncertainty", None if v == "none" else str(v)))
        self.predict_button.changed.connect(self.request_prediction)
        self.cancel_button.changed.connect(self.cancel)
        self.follow.changed.connect(lambda on: on and self.request_prediction())
        state.listen(state.viewer.dims.events.current_step, self._on_slice_change)

    def _on_slice_change(self) -> None:
        if self.follow.value:
            self.request_prediction()

    def request_prediction(self) -> None:
        """Predict the viewed slice; while a job runs, the newest request waits and older ones drop."""
        explain = None if self.explain.value == "none" else str(self.explain.value)
        request = self._state.request(explain=explain, target_class=int(self.target_class.value) or None)
        if request is None:
            return
        loading = model_key(request) not in self._state.models
        job = Job(
            work=predict_job,
            args=(request, self._state.models),
            on_result=lambda prediction: self._show(request, prediction),
            description=f"slicewise {request.slice_ref.describe()}" + (" (loading the model)" if loading else ""),
        )
        self._runner.submit(LANE, job)

    def cancel(self) -> None:
        """Stop the running prediction at its next step and drop the waiting one."""
        if self._runner.cancel(LANE):
            self.status.value = "cancelled"

    def _show(self, request: Request, prediction: Prediction) -> None:
        if request.layer not in self._state.viewer.layers:
            return
        self._state.proposal = show_prediction(self._state.viewer, request.layer, prediction)
        where = prediction.slice_ref.describe()
        score = "" if prediction.uncertainty_score is None else f" · uncertainty {prediction.uncertainty_score:.3f}"
        self.status.value = f"{prediction.model_name} · {where} · {prediction.seconds * 1000:.0f} ms{score}"
