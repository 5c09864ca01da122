"""Evaluate a model (or a labels layer) against reference labels, and compare two, in the dock.

The person picks a reference labels layer and a prediction source A — a model, which predicts
each slice it needs in a worker, or a labels layer (their own, another tool's) — and optionally
B to compare with. **Evaluate** scores the viewed slice or every slice (``core.evaluation``): a
sortable table (a click on a row moves the viewer there), a plot of per-slice Dice along the
stack and a box plot per source, the pooled and mean figures, and a labels layer of where A and
the reference differ (``errors: …``). With B, the Wilcoxon p-value over the slices, a
``disagreement: A vs B`` layer (A only / B only / both) and the table ordered by |Dice A − Dice B|.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from magicgui.widgets import ComboBox, Container, Label, PushButton
from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
from matplotlib.figure import Figure
from napari.layers import Labels
from napari.utils.colormaps import DirectLabelColormap
from napari.utils.notifications import show_error, show_info
from qtpy.QtCore import Qt
from qtpy.QtWidgets import QFileDialog, QSizePolicy, QTableWidget, QTableWidgetItem

from slicewise._qt.jobs import PERSON_ERRORS, Failure, cached_model, failure
from slicewise._qt.layers import META_KEY
from slicewise._qt.panels import row
from slicewise._qt.runner import Job, JobRunner
from slicewise._qt.state import DockState
from slicewise.core import evaluation as ev
from slicewise.core.slices import slice_ref_from_point
from slicewise.core.types import Progress, SliceRef
from slicewise.io.images import as_label_map
from slicewise.models.sources import model_names

LANE = "evaluate"
NONE, VIEWED, ALL = "none", "viewed slice", "all slices"
MAP_ROLES = ("errors", "disagreement")  # the layers this panel writes (metadata role); never a source


@dataclass(frozen=True)
class _Model:
    """A model choice as the shared cache keys it (what ``jobs.cached_model`` reads)."""

    model: str
    device: str
    classes: tuple[str, ...] = ()


@dataclass(frozen=True, eq=False)
class EvalRequest:
    """What to score: sources (model choices or labels arrays, with names) against one reference."""

    sources: tuple[tuple[str, _Model | np.ndarray], ...]
    reference: np.ndarray
    reference_name: str
    image: Any
    rgb: bool
    slices: tuple[SliceRef, ...] | None
    spacing: tuple[float, ...]
    unit: str


def evaluate_job(request: EvalRequest, models: dict) -> Generator[Progress, None, list[ev.Evaluation] | Failure]:
    """Score each source in turn (a model predicts the slices it needs); a person's mistake is a Failure."""
    try:
        results = []
        for name, source in request.sources:
            if isinstance(source, _Model):
                yield Progress(0, 1, f"loading {name}")
                source = cached_model(source, models)
            results.append(
                (
                    yield from ev.iter_evaluate(
                        source,
                        request.reference,
                        image=request.image,
                        rgb=request.rgb,
                        slices=request.slices,
                        spacing=request.spacing,
                        unit=request.unit,
                        name=name,
                        reference_name=request.reference_name,
                    )
                )
            )
        return results
    except PERSON_ERRORS as error:
        return failure(error)


def unit_of(layer: Labels) -> str:
    """The unit of a layer's scale: napari's own when set, else mm (what slicewise's readers give)."""
    unit = layer.units[-1]
    return "mm" if str(unit) == "pixel" else f"{unit:~}"


class EvaluatePanel(Container):
    """Reference, source A, compare with B, scope; Evaluate/Cancel; table, plot, exports."""

    def __init__(self, state: DockState, runner: JobRunner) -> None:
        super().__init__(labels=False)
        self._state, self._runner = state, runner
        self.reference = ComboBox(label="reference", choices=self._references, nullable=True)
        self.source_a = ComboBox(label="evaluate", choices=self._sources)
        self.source_b = ComboBox(label="compare with", choices=lambda _w: [(NONE, NONE), *self._sources(_w)])
        self.scope = ComboBox(label="slices", choices=[VIEWED, ALL], value=ALL)
        self.evaluate_button = PushButton(text="Evaluate")
        self.cancel_button = PushButton(text="Cancel")
        self.status = Label(value="")
        self.status.native.setWordWrap(True)
        self.status.native.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Preferred)
        self.legend = Label(value="")
        self.table = QTableWidget()  # Qt's own: numbers sort as numbers and show their decimals
        self.table.setSortingEnabled(True)
        self.table.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        self.table.setSelectionBehavior(QTableWidget.SelectionBehavior.SelectRows)
        self.table.verticalHeader().setVisible(False)
        self.table.setMinimumHeight(220)
        self.figure = Figure(figsize=(5, 2.3), dpi=90, layout="constrained")  # fits the dock as it resizes
        self.canvas = FigureCanvasQTAgg(self.figure)
        self.canvas.setMinimumHeight(190)
        self.csv_button = PushButton(text="Export CSV…")
        self.png_button = PushButton(text="Export plot PNG…")
        choices = Container(widgets=[self.reference, self.source_a, self.source_b, self.scope])
        self.extend([choices, row(self.evaluate_button, self.cancel_button), self.status, self.legend])
        self.exports = row(self.csv_button, self.png_button)
        for widget in (self.table, self.canvas, self.exports.native):  # Qt widgets after magicgui's, in order
            self.native.layout().addWidget(widget)
        self.results: list[ev.Evaluation] = []
        self.comparison: ev.Comparison | None = None
        self._geometry: Labels | None = None
        self.evaluate_button.changed.connect(self.evaluate)
        self.cancel_button.changed.connect(lambda: runner.cancel(LANE) and setattr(self.status, "value", "cancelled"))
        self.csv_button.changed.connect(lambda: self.export_csv())
        self.png_button.changed.connect(lambda: self.export_png())
        self.table.cellClicked.connect(self._go_to_row)
        layers = state.viewer.layers.events
        for event in (layers.inserted, layers.removed):
            state.listen(event, self._refresh)
        state.events.opened_models.connect(self._refresh)
        self.reference.value = self._default_reference()

    # -- choices ---------------------------------------------------------------------------------

    def _label_layers(self) -> list[Labels]:
        viewer = self._state.viewer
        return [lay for lay in viewer.layers if isinstance(lay, Labels) and self._role(lay) not in MAP_ROLES]

    @staticmethod
    def _role(layer: Labels) -> str | None:
        return (layer.metadata.get(META_KEY) or {}).get("role")

    def _references(self, _widget: Any = None) -> list[tuple[str, Labels]]:
        return [(layer.name, layer) for layer in self._label_layers()]

    def _sources(self, _widget: Any = None) -> list[Any]:
        names = [*model_names(), *self._state.opened_models]
        models = [(f"model: {Path(name).name if Path(name).suffix else name}", name) for name in names]
        return [*models, *((f"layer: {layer.name}", layer) for layer in self._label_layers())]

    def _default_reference(self) -> Labels | None:
        labels = self._label_layers()
        marked = [lay for lay in labels if (lay.metadata.get(META_KEY) or {}).get("role") == "reference"]
        return (marked or labels or [None])[0]

    def _refresh(self, *_: Any) -> None:
        for combo in (self.reference, self.source_a, self.source_b):
            combo.reset_choices()
        if self.reference.value is None:
            self.reference.value = self._default_reference()

    # -- evaluating ------------------------------------------------------------------------------

    def evaluate(self) -> None:
        """Score A (and B) against the reference in the ``evaluate`` lane; one sentence if something is missing."""
        reference, image = self.reference.value, self._state.image
        if reference is None:
            show_error("Choose a reference labels layer (open the reference masks, or paint your own) to evaluate.")
            return
        chosen = [self.source_a.value] + ([] if self.source_b.value == NONE else [self.source_b.value])
        sources = []
        for value in chosen:
            if isinstance(value, Labels):
                sources.append((value.name, np.array(value.data)))
            else:
                classes = self._state.model_classes() if value == self._state.model else ()
                name = Path(value).stem if Path(value).suffix else str(value)  # a checkpoint by its file name
                sources.append((name, _Model(str(value), self._state.device, classes)))
        if any(isinstance(s, _Model) for _, s in sources) and image is None:
            show_error("Choose the image to predict in the slicewise widget; the model predicts it to be evaluated.")
            return
        slices = None
        if self.scope.value == VIEWED:
            point = reference.world_to_data(self._state.viewer.dims.point)
            slices = (slice_ref_from_point(reference.data.shape, point, False),)
        request = EvalRequest(
            sources=tuple(sources),
            reference=as_label_map(np.array(reference.data)),  # a 0/255 mask picture made labels: 0/1
            reference_name=reference.name,
            image=None if image is None else image.data,
            rgb=bool(image is not None and image.rgb),
            slices=slices,
            spacing=tuple(reference.scale),
            unit=unit_of(reference),
        )
        self._geometry = reference
        self.status.value = f"evaluating {' and '.join(name for name, _ in sources)}…"
        job = Job(
            work=evaluate_job,
            args=(request, self._state.models),
            on_result=self._show,
            on_failure=lambda failure: setattr(self.status, "value", failure.message),
        )
        self._runner.submit(LANE, job)

    def _show(self, results: list[ev.Evaluation]) -> None:
        self.results = results
        self.comparison = ev.compare(*results) if len(results) == 2 else None
        first = results[0]
        lines = [r.sentence() for r in results]
        if self.comparison is not None:
            lines.append(self.comparison.sentence())
            a, b = results
            legend = ev.map_legend(a.name, b.name)
            self._map(
                "disagreement", f"disagreement: {a.name} (A) vs {b.name} (B)", self.comparison.disagreement, legend
            )
        else:
            where = ev.disagreement_on(first.labels, self._geometry.data, first.slices)
            legend = ev.map_legend(first.name)
            self._map("errors", f"errors: {first.name} vs {first.reference}", where, legend)
        shown = (ev.A_ONLY, ev.B_ONLY, ev.BOTH)
        swatches = [f"<span style='color:{ev.DISAGREEMENT_COLOURS[k]}'>■</span> {legend[k]}" for k in shown]
        self.legend.value = " &nbsp; ".join(swatches)
        self.status.value = "\n".join(lines)
        self._fill_table()
        ev.plot(self.figure, results)
        self.canvas.draw_idle()

    def _map(self, role: str, name: str, values: np.ndarray, legend: dict[int, str]) -> None:
        """Write a comparison map into its own labels layer (found again by its metadata), over the reference."""
        viewer, geometry = self._state.viewer, self._geometry
        identity = {"image": geometry.name, "role": role}
        layer = next((lay for lay in viewer.layers if lay.metadata.get(META_KEY) == identity), None)
        if layer is None or layer.data.shape != values.shape:
            if layer is not None:
                viewer.layers.remove(layer)
            colours = {None: "transparent", 0: "transparent", **ev.DISAGREEMENT_COLOURS}
            layer = Labels(values, name=name, scale=geometry.scale, translate=geometry.translate, opacity=0.6)
            layer.colormap = DirectLabelColormap(color_dict=colours)
            layer.metadata[META_KEY] = identity
            active = viewer.layers.selection.active
            viewer.add_layer(layer)
            if active is not None:
                viewer.layers.selection.active = active
        else:
            layer.data = values
        layer.name = name
        layer.features = {"index": [0, *legend], "where": ["neither", *legend.values()]}

    def _fill_table(self) -> None:
        """Per slice and class (one source), or per slice A vs B ordered by |ΔDice| (two)."""
        native = self.table
        native.setSortingEnabled(False)
        columns, rows = (self.comparison or self.results[0]).table()
        native.clear()
        native.setColumnCount(len(columns))
        native.setHorizontalHeaderLabels(columns)
        native.setRowCount(len(rows))
        for r, (ref, values) in enumerate(rows):
            for c_, value in enumerate(values):
                item = QTableWidgetItem()
                number = int(value) if c_ == 0 and str(value).isdigit() else value
                item.setData(Qt.ItemDataRole.DisplayRole, number)
                item.setData(Qt.ItemDataRole.UserRole, ref.index)
                native.setItem(r, c_, item)
        native.resizeColumnsToContents()
        native.setSortingEnabled(True)  # a new result starts in its own order: by slice, or by |ΔDice|
        ascending, descending = Qt.SortOrder.AscendingOrder, Qt.SortOrder.DescendingOrder
        native.sortByColumn(0 if self.comparison is None else 3, ascending if self.comparison is None else descending)

    def _go_to_row(self, row: int, _column: int = 0) -> None:
        """Move the viewer to the slice of a table row."""
        item, layer = self.table.item(row, 0), self._geometry
        index = item.data(Qt.ItemDataRole.UserRole) if item is not None else None
        if not index or layer is None or layer not in self._state.viewer.layers:
            return
        leading = list(index) + [0] * (layer.ndim - len(index))
        world = layer.data_to_world(leading)
        viewer = self._state.viewer
        for axis, value in enumerate(world[: len(index)]):
            viewer.dims.set_point(viewer.dims.ndim - layer.ndim + axis, value)

    # -- exports ---------------------------------------------------------------------------------

    def _path(self, caption: str, pattern: str, path: str | None) -> str | None:
        if not self.results:
            show_info("Evaluate first; then the table and the plot can be exported.")
            return None
        return path or QFileDialog.getSaveFileName(self.native, caption, "", pattern)[0] or None

    def export_csv(self, path: str | None = None) -> None:
        """Write every row of the table (and the pooled and mean figures) as CSV."""
        path = self._path("Export the table", "CSV (*.csv)", path)
        if path:
            with open(path, "w", encoding="utf-8", newline="") as file:
                file.write(ev.to_csv(self.results))
            self.status.value = f"table written to {path}"

    def export_png(self, path: str | None = None) -> None:
        """Save the plot as PNG."""
        path = self._path("Export the plot", "PNG (*.png)", path)
        if path:
            self.figure.savefig(path, dpi=150)
            self.status.value = f"plot written to {path}"
