"""Autosave sessions without Qt: atomic files, what counts as recoverable, restore, throttle."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from slicewise.errors import SlicewiseError
from slicewise.io import autosave
from slicewise.io.autosave import ENV_DIR, SESSION_FILE, SavedLabels, Session, Throttle


def stack(seed: int = 0) -> SavedLabels:
    """A (5, 32, 40) uint8 labels stack with provenance, scale and translate."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 4, (5, 32, 40), dtype=np.uint8)
    return SavedLabels(
        name="mine",
        labels=labels,
        provenance=(labels > 0).astype(np.uint8) * 2,
        scale=(2.5, 0.5, 0.5),
        translate=(0.0, 10.0, -3.0),
        source="/data/scan.nii.gz",
        done=(1, 4),
        saved_at=time.time(),
    )


def test_autosave_dir_honours_the_override_then_xdg(monkeypatch, tmp_path):
    monkeypatch.setenv(ENV_DIR, str(tmp_path / "here"))
    assert autosave.autosave_dir() == tmp_path / "here"
    monkeypatch.delenv(ENV_DIR)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    if sys.platform.startswith("linux"):
        assert autosave.autosave_dir() == tmp_path / "xdg" / "slicewise" / "autosave"


def test_a_session_round_trips_labels_provenance_and_geometry_without_pickles(tmp_path):
    session = Session(tmp_path)
    assert session.path is None  # nothing is written before the first save
    saved = stack()
    assert session.write("labels-1", saved, generation=1)
    files = sorted(p.name for p in session.path.iterdir())
    assert files == ["labels-1.npz", SESSION_FILE]  # no temporary file left behind

    with np.load(session.path / "labels-1.npz", allow_pickle=False) as npz:
        manifest = json.loads(str(npz["manifest"][()]))
    assert manifest["name"] == "mine" and manifest["shape"] == [5, 32, 40] and manifest["dtype"] == "|u1"
    assert manifest["pid"] == os.getpid() and manifest["source"] == "/data/scan.nii.gz"

    (restored,) = autosave.restore(session.path)
    np.testing.assert_array_equal(restored.labels, saved.labels)
    np.testing.assert_array_equal(restored.provenance, saved.provenance)
    assert restored.labels.dtype == np.uint8
    assert (restored.name, restored.scale, restored.translate, restored.source, restored.saved_at) == (
        saved.name,
        saved.scale,
        saved.translate,
        saved.source,
        saved.saved_at,
    )
    assert restored.done == (1, 4)  # the slices marked done for teach


def test_unchanged_older_and_removed_snapshots_are_not_written(tmp_path):
    session = Session(tmp_path)
    first = stack(0)
    assert session.write("labels-1", first, generation=2)
    same = dataclasses.replace(first, labels=first.labels.copy(), saved_at=first.saved_at + 5)
    assert not session.write("labels-1", same, generation=3)  # scrolling refreshes; the labels did not change
    assert not session.write("labels-1", stack(1), generation=1)  # a slow save finishing after a newer one
    assert session.write("labels-1", stack(1), generation=4)
    np.testing.assert_array_equal(autosave.restore(session.path)[0].labels, stack(1).labels)

    session.remove("labels-1")
    assert not session.write("labels-1", stack(2), generation=5)  # the layer left the viewer
    assert autosave.restore(session.path) == []


def test_a_failing_write_keeps_the_previous_file_and_leaves_no_temporary(tmp_path, monkeypatch):
    session = Session(tmp_path)
    session.write("labels-1", stack(0), generation=1)

    def disk_full(file, **arrays):
        file.write(b"PK\x03\x04 half a zip")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(np, "savez_compressed", disk_full)
    with pytest.raises(OSError, match="No space"):
        session.write("labels-1", stack(1), generation=2)
    assert sorted(p.name for p in session.path.iterdir()) == ["labels-1.npz", SESSION_FILE]
    np.testing.assert_array_equal(autosave.restore(session.path)[0].labels, stack(0).labels)


def test_only_sessions_of_dead_processes_not_closed_cleanly_are_recoverable(tmp_path):
    mine = Session(tmp_path)
    mine.write("labels-1", stack(0), generation=1)  # this process runs: not offered

    closed = Session(tmp_path)
    closed.write("labels-1", stack(1), generation=1)
    closed.close()

    empty = Session(tmp_path)
    empty.close()  # never wrote: leaves nothing behind
    assert empty.path is None

    code = (
        "import sys, numpy as np; from slicewise.io.autosave import Session, SavedLabels;"
        "s = Session(sys.argv[1]); s.write('labels-1', SavedLabels('theirs', np.ones((4, 4), np.uint8)), 1)"
    )
    subprocess.run([sys.executable, "-c", code, str(tmp_path)], check=True, timeout=60)  # it exits: a dead pid

    (found,) = autosave.recoverable_sessions(tmp_path)
    assert found.layers == ("theirs",) and found.pid != os.getpid() and not found.closed
    assert "theirs" in found.describe()
    assert {s.path for s in autosave.recoverable_sessions(tmp_path)} == {found.path}

    autosave.discard(found.path)
    assert autosave.recoverable_sessions(tmp_path) == []
    assert mine.path.exists() and closed.path.exists()


def test_prune_removes_old_closed_sessions_and_keeps_recent_ones(tmp_path):
    old, recent = Session(tmp_path), Session(tmp_path)
    old.write("labels-1", SavedLabels("old", np.ones((3, 3), np.uint8), saved_at=time.time() - 30 * 86400), 1)
    recent.write("labels-1", SavedLabels("recent", np.ones((3, 3), np.uint8), saved_at=time.time()), 1)
    old.close()
    recent.close()
    autosave.prune(tmp_path, keep_days=7)
    assert not old.path.exists() and recent.path.exists()


def test_an_unreadable_file_is_a_sentence_saying_what_to_do(tmp_path):
    session = Session(tmp_path)
    session.write("labels-1", stack(0), generation=1)
    (session.path / "labels-2.npz").write_bytes(b"not a zip")
    assert autosave.read_session(session.path).layers == ("mine",)  # listing skips it
    with pytest.raises(SlicewiseError, match="discard them"):
        autosave.restore(session.path)


def test_throttle_saves_at_once_after_a_quiet_spell_then_at_most_every_interval():
    throttle = Throttle(3.0)
    assert throttle.delay(100.0) == 0.0
    throttle.saved(100.0)
    assert throttle.delay(100.5) == pytest.approx(2.5)
    assert throttle.delay(103.0) == 0.0
    assert throttle.delay(200.0) == 0.0


def test_saving_a_50_slice_stack_stays_well_under_a_second(tmp_path):
    labels = np.zeros((50, 512, 512), np.uint8)
    labels[:, 100:300, 150:400] = 1
    labels[10:40, 200:260, 50:120] = 2
    saved = SavedLabels("stack", labels, provenance=(labels > 0).astype(np.uint8))
    session = Session(tmp_path)
    start = time.perf_counter()
    session.write("labels-1", saved, generation=1)
    seconds = time.perf_counter() - start
    assert seconds < 2.0, seconds  # about 0.15 s on one core; generous for a shared machine
    assert Path(session.path / "labels-1.npz").stat().st_size < 1_000_000
