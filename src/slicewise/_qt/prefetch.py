"""Encoding ahead: the prompt panel encodes the slice a person rests on before their first prompt there.

While the person prompts an image (the panel says when: its boxes or points layer is shown and the
prompt model takes that kind of prompt), the slice they rest on for ``SETTLE_MS`` is encoded in the
worker, so the first box there costs only the decoder; the status says when a slice is ready. It runs
in the prompt lane, so a box on that slice waits for the run and reuses its embedding. Leaving the
slice, or a box on another slice (or with another model), stops the run: the runner drops its result
and ONNX Runtime ends the encoder within a few operators (``StopToken``; a PyTorch forward runs to its
end first). Slices scrolled past are never encoded. See docs/prompts.md, "Encoding ahead".
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Generator
from typing import Any

from magicgui.widgets import ComboBox, Label
from napari.layers import Image
from qtpy.QtCore import QTimer

from slicewise._qt.jobs import Failure, ModelCache, PromptRequest, model_key, prompt_job
from slicewise._qt.runner import Job, JobRunner
from slicewise._qt.state import DockState
from slicewise.core.types import Prediction, Progress, SliceRef
from slicewise.models.precision import StopToken, stopping

PROMPT, PROPAGATE = "prompt", "propagate"  # the prompt panel's lanes; prompts and the encoding ahead share one
SETTLE_MS = 250  # a slice the person rests on this long is encoded ahead; slices scrolled past are not


def where(image: Image, ref: SliceRef) -> str:
    """E.g. ``"slice 7"``, or the image's name for a 2D image, for status lines."""
    return ref.describe() if ref.index else image.name


def same_slice(one: PromptRequest, other: PromptRequest) -> bool:
    """Whether two requests need the same embedding: one image's slice, one model on one device."""
    return (one.layer, one.slice_ref, model_key(one)) == (other.layer, other.slice_ref, model_key(other))


def ahead_job(
    request: PromptRequest, models: ModelCache, token: StopToken
) -> Generator[Progress, None, Prediction | Failure | None]:
    """``prompt_job`` encoding a slice ahead of its first prompt; ``token.stop()`` ends its encoder run.

    The token holds only while the job's code runs, never across a yield: a job quit there is left
    suspended in its worker thread, which must not keep answering the token in later jobs.
    """
    steps = prompt_job(request, models)
    while True:
        with stopping(token):
            try:
                step = next(steps)
            except StopIteration as done:
                return done.value
        yield step


class Prefetch:
    """The encoding ahead of one prompt panel (see the module); ``request`` asks for the viewed slice."""

    def __init__(
        self,
        state: DockState,
        runner: JobRunner,
        model: ComboBox,
        status: Label,
        prompting: Callable[[Image], str | None],
    ) -> None:
        """``model`` is the panel's prompt model choice, ``status`` its status line, and ``prompting(image)``
        what the person prompts ``image`` with ("boxes", "points"), or None: no slice is worth encoding."""
        self._state, self._runner = state, runner
        self._model, self._status, self._prompting = model, status, prompting
        self._refused: set[str] = set()  # models that answered an encoding ahead with a failure
        self._ready: tuple[Any, ...] | None = None  # (image, model, device, slice) last known encoded
        self._settle = QTimer(status.native)  # lives as long as the panel's widgets
        self._settle.setSingleShot(True)
        self._settle.setInterval(SETTLE_MS)
        self._settle.timeout.connect(self.request)
        state.listen(state.viewer.dims.events.current_step, self._slice_changed)
        state.on_close(self._stop_timer)

    def _stop_timer(self) -> None:
        """Stop the rest timer when the dock closes; at interpreter exit Qt may have deleted it
        already, and an exception raised inside Qt's teardown would abort the process."""
        with contextlib.suppress(RuntimeError):
            self._settle.stop()

    @property
    def encoding(self) -> SliceRef | None:
        """The slice being encoded ahead now, if any."""
        running = self._running()
        return None if running is None else running[0].slice_ref

    def request(self, *_: Any) -> None:
        """Encode the viewed slice ahead of the first prompt there, unless it is the slice last encoded or
        a propagation runs. Superseded requests never run: the lane keeps only the newest, and a waiting
        box always goes first."""
        image, model = self._state.image, str(self._model.value)
        if image is None or model in self._refused or self._runner.running(PROPAGATE):
            return
        word = self._prompting(image)
        ref = None if word is None else self._state.viewed_slice(image, quiet=True)
        if ref is None or self._ready == (image, model, self._state.device, ref):
            return
        request = PromptRequest(image, ref, model, self._state.device)
        self.stop_for(request)  # one the person left before the rest, started since (it was waiting)
        job = Job(
            work=ahead_job,
            args=(request, self._state.models, StopToken()),
            on_result=lambda _none: self._on_result(request),
            on_failure=lambda failure: self._on_failure(request, failure),
            description=None,
            interrupt=False,
        )
        self._runner.submit(PROMPT, job)
        self._status.value = f"preparing {where(image, ref)} for {word}…"

    def stop_for(self, request: PromptRequest) -> None:
        """Stop the encoding ahead unless it encodes ``request``'s slice with its model, so a box (or the
        slice now rested on) need not wait for a slice the person left; a waiting job stays, for this
        newer one to replace."""
        running = self._running()
        if running is not None and not same_slice(running[0], request):
            self._stop(running[1])

    def encoded(self, request: PromptRequest) -> bool:
        """Note that ``request``'s job encoded its slice; whether that slice was not the one known already."""
        known, self._ready = self._ready, (request.layer, request.model, request.device, request.slice_ref)
        return known != self._ready

    def _running(self) -> tuple[PromptRequest, StopToken] | None:
        """The encoding ahead running in the prompt lane, with the token that stops it."""
        job = self._runner.current(PROMPT)
        if job is None or job.work is not ahead_job:
            return None
        request, _models, token = job.args
        return request, token

    def _stop(self, token: StopToken) -> None:
        """The one way an encoding ahead is stopped: cancelled in the lane, so what it returns — the
        ``RunStopped`` failure included — is dropped without a word, and its encoder run ended. A box
        waiting behind it stays; a waiting encoding ahead goes too (the caller asks for the slice now due)."""
        waiting = self._runner.pending(PROMPT)
        self._runner.cancel(PROMPT, keep_pending=waiting is not None and waiting.work is not ahead_job)
        token.stop()

    def _slice_changed(self) -> None:
        """The viewed slice changed: stop encoding a slice the person left; encode the new one once they
        rest on it (``SETTLE_MS``)."""
        running = self._running()
        if running is not None and self._state.viewed_slice(running[0].layer, quiet=True) != running[0].slice_ref:
            self._stop(running[1])
        self._settle.start()

    def _on_result(self, request: PromptRequest) -> None:
        """Say the slice is ready if the person still looks at it; then encode the slice they moved to."""
        image, ref = request.layer, request.slice_ref
        new = self.encoded(request)
        word = self._prompting(image) if image is self._state.image else None
        if word is not None and new and ref == self._state.viewed_slice(image, quiet=True):
            self._status.value = f"{where(image, ref)} ready for {word}: only the decoder runs"
        self.request()

    def _on_failure(self, request: PromptRequest, failure: Failure) -> None:
        self._status.value = failure.message
        self._refused.add(request.model)  # no more encoding ahead with this model: one notification is enough
