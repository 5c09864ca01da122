"""The dock's one job runner: generators in napari thread workers, the newest request winning.

Jobs run in *lanes* (``"predict"``, ``"rank"``, ``"prompt"``, …); one job runs per lane. A job
submitted while another runs in its lane waits as the lane's one pending job, replacing an older
pending one (unless that has a higher ``priority``); with ``interrupt`` it also stops the running
job at its next yield. ``current`` and ``pending`` are a lane's two jobs; ``cancel`` stops the
running one and drops what it still returns (and the pending one, unless told to keep it). A job
yields ``Progress`` (the bar shows ``step`` of ``total`` in ``stage``, as the core says) or
results (given to ``on_yield``, one bar step each out of ``total``); it returns its result or a
``Failure``, which becomes one notification. Any other exception a job raises becomes one
notification too (its traceback goes to the log) and the lane goes on: napari's worker would
otherwise swallow a ``RuntimeError`` as an "aborted thread" and never finish, leaving the lane
blocked for the session. The explainers' batches (``core.explain``)
show on the bar as they run, and Cancel stops them between two batches. Results of a cancelled
job, or after ``close``, are dropped.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any

from napari.qt.threading import GeneratorWorker
from napari.utils import progress
from napari.utils.notifications import show_error

from slicewise._qt.jobs import Failure
from slicewise.core import explain
from slicewise.core.types import Progress
from slicewise.errors import one_line

log = logging.getLogger(__name__)


class Stopped(Exception):
    """Raised inside a running job (between an explainer's batches) when its lane was cancelled."""


@dataclass(frozen=True, eq=False)
class Job:
    """One request: ``work(*args)``, a generator function, runs in the worker thread."""

    work: Callable[..., Generator[Any, None, Any]]
    args: tuple[Any, ...] = ()
    on_result: Callable[[Any], None] = lambda _result: None
    on_yield: Callable[[Any], None] | None = None
    on_failure: Callable[[Failure], None] | None = None
    on_finished: Callable[[], None] | None = None
    description: str | None = "slicewise"  # the progress bar's; None: no bar (a quick job ahead of time)
    total: int = 0  # bar steps when the job yields results rather than Progress
    interrupt: bool = True  # a newer request stops this one at its next yield
    priority: int = 0  # a pending job is replaced only by one of at least its priority


@dataclass(eq=False)
class _Lane:
    worker: GeneratorWorker | None = None
    job: Job | None = None  # the job the worker runs
    pending: Job | None = None
    cancelled: bool = False


class JobRunner:
    """Runs the panels' jobs (see the module); ``close`` quits every worker."""

    def __init__(self) -> None:
        self._lanes: dict[str, _Lane] = {}
        self.closed = False

    def running(self, lane: str | None = None) -> bool:
        """Whether a job runs in ``lane`` (any lane when None)."""
        lanes = self._lanes.values() if lane is None else [self._lanes.get(lane, _Lane())]
        return any(each.worker is not None for each in lanes)

    def current(self, lane: str) -> Job | None:
        """The job running in ``lane``, if any (a cancelled one until its worker ends)."""
        state = self._lanes.get(lane)
        return None if state is None else state.job

    def pending(self, lane: str) -> Job | None:
        """The job waiting in ``lane`` for the running one to end, if any."""
        state = self._lanes.get(lane)
        return None if state is None else state.pending

    def submit(self, lane: str, job: Job) -> None:
        """Run ``job`` now, or as the lane's pending job once the running one ends (see the module)."""
        if self.closed:
            return
        state = self._lanes.setdefault(lane, _Lane())
        if state.worker is None:
            self._start(lane, job)
            return
        if state.pending is None or job.priority >= state.pending.priority:
            state.pending = job
        if job.interrupt:
            state.worker.quit()

    def cancel(self, lane: str, *, keep_pending: bool = False) -> bool:
        """Stop the lane's running job at its next step, dropping what it still returns, and drop its
        pending one unless ``keep_pending`` (then that starts once the running one ends); whether one ran."""
        state = self._lanes.get(lane)
        if state is None or state.worker is None:
            return False
        if not keep_pending:
            state.pending = None
        state.cancelled = True
        state.worker.quit()
        return True

    def close(self) -> None:
        """The dock closed: drop pending jobs, quit running ones, ignore what they still return."""
        self.closed = True
        for lane in self._lanes:
            self.cancel(lane)

    def _start(self, lane: str, job: Job) -> None:
        state = self._lanes[lane]
        bar = None if job.description is None else progress(total=job.total, desc=job.description)
        box: list[GeneratorWorker] = []  # the worker, for the job to report to while it runs
        worker = GeneratorWorker(_guarded, job, box)
        box.append(worker)
        worker.yielded.connect(lambda item: self._on_yield(state, job, bar, item))
        worker.returned.connect(lambda result: self._on_result(state, job, result))
        if bar is not None:
            worker.finished.connect(bar.close)
        worker.finished.connect(lambda: self._on_finished(lane, job))
        state.worker, state.job = worker, job
        worker.start()

    def _on_yield(self, state: _Lane, job: Job, bar: progress | None, item: Any) -> None:
        if isinstance(item, Progress):
            if bar is None:
                return
            bar.total = item.total
            bar.n = item.step
            bar.set_description(f"slicewise: {item.stage}")
            return
        if job.on_yield is not None and not (self.closed or state.cancelled):
            job.on_yield(item)
        if bar is not None:
            bar.update(1)

    def _on_result(self, state: _Lane, job: Job, result: Any) -> None:
        if self.closed or state.cancelled:
            return
        if isinstance(result, Failure):
            show_error(result.message)
            if job.on_failure is not None:
                job.on_failure(result)
            return
        job.on_result(result)

    def _on_finished(self, lane: str, job: Job) -> None:
        state = self._lanes[lane]
        state.worker, state.job, state.cancelled = None, None, False
        if job.on_finished is not None and not self.closed:
            job.on_finished()
        if state.pending is not None and not self.closed:
            pending, state.pending = state.pending, None
            self._start(lane, pending)


def _guarded(job: Job, box: list[GeneratorWorker]) -> Generator[Any, None, Any]:
    """``job.work(*job.args)`` run to its end: every exception it raises returned as one ``Failure``.

    Inside, an explainer's batches are yielded as Progress (through the worker's signal, as its own
    yields are) and a quit worker stops it at the next batch.
    """

    def report(step: Progress) -> None:
        worker = box[0]
        if worker.abort_requested:
            raise Stopped
        worker.yielded.emit(step)

    try:
        with explain.reporting(report):
            return (yield from job.work(*job.args))
    except Stopped:
        return None
    except Exception as error:  # noqa: BLE001 - a bug in a job must not lock the lane: one sentence, a logged traceback
        log.exception("slicewise job %s failed", job.description)
        what = "this job" if job.description is None else job.description.removeprefix("slicewise").strip(": ") or "it"
        return Failure(
            one_line(
                f"slicewise could not finish {what}: {type(error).__name__}: {one_line(error, 160)}. "
                "The dock still works; the traceback is in the terminal (please report it)."
            )
        )
