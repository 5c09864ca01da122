"""The whole study in one file: models × datasets, trained under one protocol, evaluated across datasets.

A protocol file is JSON::

    {"name": "...",
     "defaults": {TrainConfig fields shared by every run},
     "datasets": ["../shared/data/kvasir_seg", ...],
     "models": [{"name": "unet", "arch": "unet", "init_kwargs": {...}, ...TrainConfig overrides,
                 "datasets": ["kvasir_seg"]  (optional: train on these only)}]}

Each model trains on each dataset (``runs/<model>__<dataset>/``; a finished run is reused, an
interrupted one resumes) and is evaluated on the test split of every dataset of the same task
(the ``task`` of ``manifest.json``), which gives the cross-dataset matrix.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import slicewise
from slicewise.errors import SlicewiseError
from slicewise.io.autosave import READABLE, write_atomically
from slicewise_train.config import TrainConfig, read_json
from slicewise_train.data import manifest_entry
from slicewise_train.evaluate import Evaluation, evaluate
from slicewise_train.loop import LAST, fit, is_main_process, run_finished, write_text
from slicewise_train.report import RunResult, write_report


@dataclass(frozen=True)
class Run:
    """One model trained on one dataset."""

    model: str
    dataset: Path
    config: TrainConfig

    @property
    def folder(self) -> str:
        return f"{self.model}__{self.dataset.name}"


@dataclass(frozen=True)
class Protocol:
    name: str
    datasets: tuple[Path, ...]
    runs: tuple[Run, ...]

    def task_of(self, dataset: Path) -> str:
        """The dataset's task from the shared ``manifest.json``; unknown datasets are their own task."""
        return str(manifest_entry(dataset).get("task", dataset.name))

    def evaluation_sets(self, trained_on: Path) -> list[Path]:
        """The dataset a run trained on first, then every other dataset of the same task."""
        task = self.task_of(trained_on)
        return [trained_on] + [d for d in self.datasets if d != trained_on and self.task_of(d) == task]


def load_protocol(path: str | Path) -> Protocol:
    """Read and check a protocol file; every problem is one sentence."""
    path = Path(path)
    values = read_json(path)
    missing = [key for key in ("datasets", "models") if not values.get(key)]
    if missing:
        raise SlicewiseError(f"The protocol {path.name} needs a non-empty {' and '.join(missing)} list.")
    base = path.parent
    datasets = tuple((base / d).resolve() if not Path(d).is_absolute() else Path(d) for d in values["datasets"])
    for dataset in datasets:
        if not (dataset / "split.json").exists():
            raise SlicewiseError(f"The protocol's dataset {dataset} is missing or has no split.json.")
    defaults = dict(values.get("defaults", {}))
    runs = []
    names = set()
    for entry in values["models"]:
        entry = dict(entry)
        name = entry.pop("name", entry.get("arch", ""))
        if not name or "arch" not in entry:
            raise SlicewiseError(f"Every model in {path.name} needs an arch (a registry name); {entry} has none.")
        if name in names:
            raise SlicewiseError(f"The protocol {path.name} names the model {name!r} twice.")
        names.add(name)
        only = set(entry.pop("datasets", [d.name for d in datasets]))
        unknown = only - {d.name for d in datasets}
        if unknown:
            raise SlicewiseError(
                f"Model {name!r} trains on {', '.join(sorted(unknown))}, not in the protocol's datasets."
            )
        for dataset in datasets:
            if dataset.name in only:
                config = TrainConfig.from_dict({**defaults, **entry, "name": name, "data": (str(dataset),)})
                runs.append(Run(model=name, dataset=dataset, config=config))
    return Protocol(name=values.get("name", path.stem), datasets=datasets, runs=tuple(runs))


def fit_all(protocol: Protocol, out: Path) -> list[Path]:
    """Train every run that has not finished (an interrupted one resumes); the checkpoints, in order."""
    checkpoints = []
    for number, run in enumerate(protocol.runs, 1):
        folder = out / "runs" / run.folder
        if not run_finished(folder):
            print(f"[{number}/{len(protocol.runs)}] training {run.model} on {run.dataset.name}", flush=True)
            fit(run.config, folder, resume=(folder / LAST).exists())
        checkpoints.append(folder / "model.safetensors")
    return checkpoints


def evaluate_run(checkpoint: Path, data_root: Path, evaluation_sets: list[Path], model: str) -> RunResult:
    """Evaluate one trained checkpoint on the test split of each dataset (its own first).

    The evaluations are kept in ``evaluations.json`` beside the checkpoint, keyed by the
    checkpoint's size and modification time, so a protocol run again only evaluates what changed.
    """
    history = checkpoint.parent / "history.json"
    training = json.loads(history.read_text()) if history.exists() else {}
    cache_file = checkpoint.parent / "evaluations.json"
    stamp = f"{checkpoint.stat().st_size}:{checkpoint.stat().st_mtime_ns}"
    cache = json.loads(cache_file.read_text()) if cache_file.exists() else {}
    cached = cache.get("evaluations", {}) if cache.get("checkpoint") == stamp else {}
    loaded = None
    evaluations = []
    for dataset in evaluation_sets:
        if dataset.name in cached:
            evaluations.append(Evaluation.from_record(cached[dataset.name]))
            continue
        loaded = loaded or slicewise.load_model(checkpoint)
        evaluations.append(evaluate(loaded, dataset, "test"))
        cached[dataset.name] = evaluations[-1].record()
        write_text(cache_file, json.dumps({"checkpoint": stamp, "evaluations": cached}))
    return RunResult(
        model=model, data_root=data_root, checkpoint=checkpoint, evaluations=evaluations, training=training
    )


def fit_and_report(config: TrainConfig, out: str | Path, *, resume: bool = False) -> Path:
    """``slicewise-train fit``: train (every fold with ``folds``), evaluate on the test splits, report.

    With k folds each fold trains in ``out/fold_<k>``; ``out/model.safetensors`` is the fold
    with the best validation Dice, and the report lists every fold. Returns the checkpoint.
    """
    out = Path(out)
    roots = [Path(d) for d in config.data]
    folds = range(config.folds) if config.folds else [None]
    results = []
    for fold in folds:
        folder = out if fold is None else out / f"fold_{fold}"
        run_config = config if fold is None else dataclasses.replace(config, fold=fold)
        checkpoint = fit(run_config, folder, resume=resume)
        if not is_main_process():
            continue  # under torchrun, rank 0 evaluates and reports
        name = run_config.name or run_config.arch
        results.append(evaluate_run(checkpoint, roots[0], roots, name if fold is None else f"{name} fold {fold}"))
    if not results:
        return out / "model.safetensors"
    if config.folds:
        best = max(results, key=lambda r: r.training["val_dice"])
        write_atomically(
            out / "model.safetensors", lambda file: file.write(best.checkpoint.read_bytes()), mode=READABLE
        )
    write_report(
        out,
        results,
        title=f"{config.name or config.arch} on {', '.join(r.name for r in roots)}",
        settings=[_changed_settings(config)],
    )
    return out / "model.safetensors"


def run_protocol(path: str | Path, out: str | Path) -> Path:
    """Train what is not trained yet, evaluate across datasets, write one report; returns report.md."""
    protocol = load_protocol(path)
    out = Path(out)
    checkpoints = fit_all(protocol, out)
    results = []
    for run, checkpoint in zip(protocol.runs, checkpoints, strict=True):
        print(f"evaluating {run.model} trained on {run.dataset.name}", flush=True)
        results.append(evaluate_run(checkpoint, run.dataset, protocol.evaluation_sets(run.dataset), run.model))
    return write_report(out, results, title=protocol.name, settings=config_table(protocol))


def config_table(protocol: Protocol) -> list[dict[str, Any]]:
    """The settings each model ran with (for the report): the fields that differ from TrainConfig's defaults."""
    rows, seen = [], set()
    for run in protocol.runs:
        if run.model not in seen:
            seen.add(run.model)
            rows.append(_changed_settings(run.config))
    return rows


def _changed_settings(config: TrainConfig) -> dict[str, Any]:
    """The fields of ``config`` that differ from TrainConfig's defaults (the protocol's), as JSON values."""
    defaults = {
        f.name: f.default if f.default is not dataclasses.MISSING else f.default_factory()
        for f in dataclasses.fields(TrainConfig)
        if f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING
    }
    values = json.loads(config.to_json())
    changed = {k: v for k, v in values.items() if k != "data" and v != _json_default(defaults.get(k))}
    return {"name": config.name or config.arch, "arch": config.arch, **changed}


def _json_default(value: Any) -> Any:
    """A dataclass default as it reads back from JSON (tuples become lists, dataclasses dicts)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = dataclasses.asdict(value)
    return json.loads(json.dumps(value))
