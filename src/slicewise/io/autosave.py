"""Autosaves of a person's labels: one session folder per running slicewise, atomic files, recovery.

A ``Session`` is one process's folder under ``autosave_dir()``: ``session.json`` (pid, the process's
start time, host, whether it closed cleanly) and one compressed ``.npz`` per labels layer holding
``labels``, ``provenance`` (if any) and ``manifest`` (a JSON string: layer name, shape, dtype, scale,
translate, source image, save time, pid). Each file is written to a temporary file in the same folder,
fsynced and moved over the old one with ``os.replace``, so a process killed at any moment leaves the
previous or the new version, never half a file. Files load with ``allow_pickle=False``.

A session is *recoverable* when it was not closed cleanly and its process is gone (a pid that no longer
runs, runs as a zombie, or belongs to a later process). ``Throttle`` says when the next save may run:
at once after a quiet spell, then at most once every ``interval`` seconds.

Only numpy, psutil and platformdirs: the napari side (``slicewise._qt.autosave``) watches layers and
calls this module from a worker thread.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import tempfile
import threading
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import platformdirs
import psutil

from slicewise.errors import SlicewiseError

ENV_DIR = "SLICEWISE_AUTOSAVE_DIR"
DEFAULT_INTERVAL = 3.0  # seconds between two saves at most
KEEP_CLOSED_DAYS = 7  # cleanly closed sessions stay this long, for a person who closed without saving
SESSION_FILE = "session.json"
FORMAT_VERSION = 1


def autosave_dir() -> Path:
    """``$SLICEWISE_AUTOSAVE_DIR``, else the per-user data folder (``$XDG_DATA_HOME/slicewise/autosave`` on Linux)."""
    override = os.environ.get(ENV_DIR)
    return Path(override) if override else platformdirs.user_data_path("slicewise") / "autosave"


@dataclass(frozen=True, eq=False)
class SavedLabels:
    """One labels layer as autosaved: its arrays and what is needed to put it back in a viewer.

    ``labels`` has the layer's shape ((H, W) or (Z, H, W) ...), ``provenance`` (uint8) the same
    shape or None; ``scale`` and ``translate`` have one entry per axis; ``source`` names the image
    the labels belong to, if known; ``done`` the slices marked done for teach; ``saved_at`` is a
    ``time.time()`` stamp.
    """

    name: str
    labels: np.ndarray
    provenance: np.ndarray | None = None
    scale: tuple[float, ...] = ()
    translate: tuple[float, ...] = ()
    source: str | None = None
    done: tuple[int, ...] = ()
    saved_at: float = 0.0

    def same_content(self, other: SavedLabels) -> bool:
        """Whether both hold equal arrays, name and geometry (the save time aside)."""
        provenance_equal = (self.provenance is None and other.provenance is None) or (
            self.provenance is not None
            and other.provenance is not None
            and np.array_equal(self.provenance, other.provenance)
        )
        return (
            (self.name, self.scale, self.translate, self.source, self.done)
            == (other.name, other.scale, other.translate, other.source, other.done)
            and self.labels.dtype == other.labels.dtype
            and np.array_equal(self.labels, other.labels)
            and provenance_equal
        )


@dataclass(frozen=True)
class SessionInfo:
    """What a session folder holds, read without loading its arrays."""

    path: Path
    pid: int
    process_started: float
    host: str
    started: float
    closed: bool
    layers: tuple[str, ...]
    saved_at: float

    def describe(self) -> str:
        """E.g. ``2025-03-01 14:02:33 (mine, scan labels)``."""
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.saved_at))
        return f"{when} ({', '.join(self.layers)})"


READABLE = 0o644  # results a person shares (labels, maps, models): readable by others, as a plain write makes them


def write_atomically(path: Path, write: Callable[[BinaryIO], object], *, mode: int | None = None) -> None:
    """Call ``write(file)`` on a temporary file beside ``path``, fsync it, then move it over ``path``.

    The one atomic writer of slicewise and slicewise-train (autosaves, labels, maps, checkpoints): a
    killed process or a full disk leaves the old file or none, never a partial one under the name.
    mode: the file's permission bits (``READABLE`` for results); None keeps it private (0o600), as
    the temporary file is until then: autosaves of what a person drew stay theirs.
    """
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
            if mode is not None:
                os.fchmod(file.fileno(), mode)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    if hasattr(os, "O_DIRECTORY"):  # make the rename itself durable (POSIX)
        folder = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(folder)
        finally:
            os.close(folder)


class Session:
    """This process's autosave folder, made at the first write; ``write`` may be called from any thread.

    A layer is saved under a ``key`` the caller keeps for it (a renamed layer keeps its file). Each
    save carries a ``generation`` that grows with every snapshot the caller takes, so a slow save
    finishing after a newer one (the final save at close) never puts older labels back.
    """

    def __init__(self, root: Path | None = None) -> None:
        self.root = autosave_dir() if root is None else Path(root)
        self.path: Path | None = None
        self._started = time.time()
        self._lock = threading.Lock()
        self._written: dict[str, tuple[int, SavedLabels]] = {}
        self._removed: set[str] = set()
        self._closed = False

    def write(self, key: str, saved: SavedLabels, generation: int) -> bool:
        """Save one layer's snapshot unless a newer one is saved, nothing changed, or the session is closed.

        Returns whether it wrote. A layer once removed is never written again.
        """
        with self._lock:
            if self._closed or key in self._removed:
                return False
            previous = self._written.get(key)
            if previous is not None and (previous[0] >= generation or previous[1].same_content(saved)):
                return False
            folder = self._folder()
            manifest = {
                "name": saved.name,
                "shape": list(saved.labels.shape),
                "dtype": saved.labels.dtype.str,
                "scale": list(saved.scale),
                "translate": list(saved.translate),
                "source": saved.source,
                "done": list(saved.done),
                "saved_at": saved.saved_at,
                "pid": os.getpid(),
                "format_version": FORMAT_VERSION,
            }
            arrays = {"labels": saved.labels, "manifest": np.array(json.dumps(manifest))}
            if saved.provenance is not None:
                arrays["provenance"] = saved.provenance
            write_atomically(folder / f"{key}.npz", lambda file: np.savez_compressed(file, **arrays))
            self._written[key] = (generation, saved)
            return True

    def remove(self, key: str) -> None:
        """Drop a layer's file (the layer left the viewer)."""
        with self._lock:
            self._written.pop(key, None)
            self._removed.add(key)
            if self.path is not None:
                (self.path / f"{key}.npz").unlink(missing_ok=True)

    def close(self) -> None:
        """Mark the session cleanly closed (it is no longer offered for recovery); an empty one is removed."""
        with self._lock:
            self._closed = True
            if self.path is None:
                return
            if any(self.path.glob("*.npz")):
                self._write_manifest(closed=True)
            else:
                shutil.rmtree(self.path, ignore_errors=True)

    def _folder(self) -> Path:
        if self.path is None:
            self.root.mkdir(parents=True, exist_ok=True)
            stamp = time.strftime("%Y%m%d-%H%M%S")
            self.path = Path(tempfile.mkdtemp(prefix=f"{stamp}-{os.getpid()}-", dir=self.root))
            self._write_manifest(closed=False)
        return self.path

    def _write_manifest(self, *, closed: bool) -> None:
        manifest = {
            "pid": os.getpid(),
            "process_started": psutil.Process().create_time(),
            "host": socket.gethostname(),
            "started": self._started,
            "closed": closed,
            "format_version": FORMAT_VERSION,
        }
        text = json.dumps(manifest, indent=1).encode()
        write_atomically(self.path / SESSION_FILE, lambda file: file.write(text))


def _read_manifest(path: Path) -> dict:
    with np.load(path, allow_pickle=False) as npz:
        return json.loads(str(npz["manifest"][()]))


def read_session(path: Path) -> SessionInfo | None:
    """A session folder's description, or None if it holds no readable session."""
    try:
        manifest = json.loads((path / SESSION_FILE).read_text())
    except (OSError, ValueError):
        return None  # not a session, or one killed before its first manifest landed
    layers = []
    for file in sorted(path.glob("*.npz")):
        try:
            layers.append(_read_manifest(file))
        except (OSError, ValueError, KeyError, zipfile.BadZipFile):
            continue
    try:
        return SessionInfo(
            path=path,
            pid=int(manifest["pid"]),
            process_started=float(manifest["process_started"]),
            host=str(manifest["host"]),
            started=float(manifest["started"]),
            closed=bool(manifest["closed"]),
            layers=tuple(str(layer["name"]) for layer in layers),
            saved_at=max((float(layer["saved_at"]) for layer in layers), default=float(manifest["started"])),
        )
    except (KeyError, TypeError, ValueError):
        return None  # a manifest from another version, or edited by hand: not offered


def _sessions(root: Path) -> list[SessionInfo]:
    folders = sorted(folder for folder in root.iterdir() if folder.is_dir()) if root.is_dir() else []
    return [info for info in map(read_session, folders) if info is not None]


def _alive(info: SessionInfo) -> bool:
    """Whether the process that wrote a session still runs (another host's process counts as alive)."""
    if info.host != socket.gethostname():
        return True
    try:
        process = psutil.Process(info.pid)
        return process.status() != psutil.STATUS_ZOMBIE and abs(process.create_time() - info.process_started) < 1.0
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return False


def recoverable_sessions(root: Path | None = None) -> list[SessionInfo]:
    """Sessions with labels, not closed cleanly, whose process is gone; the newest first."""
    root = autosave_dir() if root is None else Path(root)
    found = [info for info in _sessions(root) if info.layers and not info.closed and not _alive(info)]
    return sorted(found, key=lambda info: info.saved_at, reverse=True)


def restore(path: Path) -> list[SavedLabels]:
    """Every labels layer a session folder holds, in the order of their files."""
    restored = []
    for file in sorted(Path(path).glob("*.npz")):
        try:
            with np.load(file, allow_pickle=False) as npz:
                manifest = json.loads(str(npz["manifest"][()]))
                provenance = npz["provenance"] if "provenance" in npz.files else None
                labels = npz["labels"]
            done = tuple(int(z) for z in manifest.get("done", ()))  # files from before done marks have none
        except (OSError, ValueError, KeyError, TypeError, zipfile.BadZipFile) as error:
            raise SlicewiseError(
                f"Cannot read the autosaved labels {file} ({error}); discard them, or load the file with numpy.load."
            ) from error
        restored.append(
            SavedLabels(
                name=manifest["name"],
                labels=labels,
                provenance=provenance,
                scale=tuple(manifest["scale"]),
                translate=tuple(manifest["translate"]),
                source=manifest["source"],
                done=done,
                saved_at=float(manifest["saved_at"]),
            )
        )
    return restored


def discard(path: Path) -> None:
    """Delete a session folder and everything in it."""
    shutil.rmtree(path, ignore_errors=True)


def prune(root: Path | None = None, *, keep_days: float = KEEP_CLOSED_DAYS) -> None:
    """Delete cleanly closed sessions older than ``keep_days`` and finished sessions without labels."""
    root = autosave_dir() if root is None else Path(root)
    oldest = time.time() - keep_days * 86400
    for info in _sessions(root):
        gone = info.closed or not _alive(info)
        if gone and (not info.layers or (info.closed and info.saved_at < oldest)):
            discard(info.path)


class Throttle:
    """When the next save may run: at once after a quiet spell, then at most once every ``interval`` seconds.

    Times are ``time.monotonic()`` seconds; a change made right after a save waits at most ``interval``.
    """

    def __init__(self, interval: float = DEFAULT_INTERVAL) -> None:
        self.interval = interval
        self._last_save = -float("inf")

    def delay(self, now: float) -> float:
        """Seconds from ``now`` until a save may run (0: at once)."""
        return max(0.0, self._last_save + self.interval - now)

    def saved(self, now: float) -> None:
        """A save started at ``now``."""
        self._last_save = now
