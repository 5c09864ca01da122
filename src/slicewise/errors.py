"""Errors that say what went wrong and what to do, in one sentence each.

Every failure a person can cause (a bad checkpoint, an image that does not fit the model)
raises a ``SlicewiseError`` subclass; the widget shows ``str(error)`` as a napari notification
and the CLI prints it on one stderr line.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from contextlib import contextmanager, suppress


class SlicewiseError(Exception):
    """Base class: the message is a complete sentence meant for the person at the screen.

    ``str(error)`` is always one line of at most ``MESSAGE_LIMIT`` characters without control
    characters, whatever file contents (a spec name with a newline or an ANSI escape) it quotes.
    """

    def __str__(self) -> str:
        text = printable(one_line(super().__str__(), 10**6))
        if len(text) <= MESSAGE_LIMIT:
            return text
        # too long (a long path, a quoted value): shorten the middle, keeping the start and what to do
        tail = MESSAGE_LIMIT // 2
        return text[: MESSAGE_LIMIT - tail - 1].rstrip() + "…" + text[-tail:].lstrip()


class CheckpointError(SlicewiseError):
    """A checkpoint file is missing, unsafe, truncated or not a slicewise checkpoint."""


class UnknownModelError(SlicewiseError):
    """A model or architecture name that is not in the registry or the bundled list."""


class ImageError(SlicewiseError):
    """An image that cannot be segmented: wrong rank, empty, non-finite or too large."""


class InputSpecError(SlicewiseError):
    """An image that does not fit the model's input spec (channels, dimensions)."""


class PretrainedWeightsError(SlicewiseError):
    """Pretrained encoder weights were asked for but are not available offline."""


class DeviceError(SlicewiseError):
    """A device was asked for that this machine does not have."""


class ModelRunError(SlicewiseError):
    """A loaded network that fails in its own forward pass on a valid slice (its settings are damaged)."""


class RunStopped(SlicewiseError):
    """A forward pass stopped while it ran, because a newer request made its result unneeded."""


class OptionError(SlicewiseError, ValueError):
    """A call's option that is not one of the accepted values (an unknown method, a bad tile size, a box
    of the wrong length). A ``ValueError`` too, so callers that catch the builtin keep working."""


class TrainingDataError(SlicewiseError):
    """A training or evaluation dataset folder that is incomplete or inconsistent."""


class UnfinishedRunWarning(UserWarning):
    """A checkpoint written by a training run that had not reached its end when the file was saved."""


MESSAGE_LIMIT = 300


def one_line(text: object, limit: int = MESSAGE_LIMIT) -> str:
    """``text`` as one short line: whitespace runs (newlines included) collapsed, cut at ``limit`` characters.

    Error messages quote third-party errors and file contents; this keeps each one a single readable line.
    """
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 1].rstrip() + "…"


def printable(text: object) -> str:
    """``text`` with control characters (newlines, ANSI escapes) shown as escapes, for printing names that
    come from files: a spec name cannot move the cursor or fake a line of output."""
    return "".join(char if char.isprintable() else char.encode("unicode_escape").decode("ascii") for char in str(text))


# --- the outer boundary of each face (CLI, widget workers, slicewise-train) ----------------------------

_OS_REASONS = {
    errno.ENOSPC: "the disk is full; free some space and run again",
    errno.EDQUOT: "the disk quota is used up; free some space and run again",
    errno.EACCES: "permission denied; choose a file or folder you may use",
    errno.EPERM: "permission denied; choose a file or folder you may use",
    errno.EROFS: "the file system is read-only; choose a writable folder",
    errno.ENOTDIR: "part of the path is a file where a folder is needed; choose another path",
    errno.EISDIR: "it is a folder where a file is needed; pass a file",
    errno.EEXIST: "a file is in the way where a folder is needed; choose another path",
    errno.ENAMETOOLONG: "the name is too long; choose a shorter path",
    errno.ENOENT: "it does not exist; check the path",
    errno.ELOOP: "its symbolic links loop; pass the real file",
    errno.EIO: "the disk reported an input/output error; check the drive",
}


@contextmanager
def working_on(subject: object) -> Iterator[None]:
    """Name the file (or thing) a block works on, so an unexpected error there names it too."""
    try:
        yield
    except Exception as error:
        if getattr(error, "slicewise_subject", None) is None:
            with suppress(AttributeError, TypeError):  # an exception type that refuses attributes
                error.slicewise_subject = str(subject)  # type: ignore[attr-defined]
        raise


def subject_of(error: BaseException, default: object = None) -> str | None:
    """The file an error happened on: its own ``filename``, what ``working_on`` recorded, or ``default``."""
    found = getattr(error, "slicewise_subject", None) or getattr(error, "filename", None) or default
    return None if found is None else printable(found)


def environment_error(error: BaseException, subject: object = None) -> SlicewiseError | None:
    """The sentence for a failure of the machine rather than of slicewise (memory, disk, permissions),
    or None when ``error`` is not one."""
    name = subject_of(error, subject) or "the input"
    if isinstance(error, MemoryError):
        return SlicewiseError(
            f"Ran out of memory on {name}; close other programs, or crop or downsample the image, and run again."
        )
    if isinstance(error, OSError) and error.errno in _OS_REASONS:
        return SlicewiseError(f"Cannot use {name}: {_OS_REASONS[error.errno]}.")
    if isinstance(error, OSError):
        return SlicewiseError(one_line(f"Cannot use {name}: {error.strerror or error}; check the file and the disk."))
    return None


def internal_errors_raise() -> bool:
    """Whether an unexpected error should surface as a traceback: under pytest or with SLICEWISE_DEBUG=1.

    The boundary turns surprises into a sentence for people; tests must still fail loudly on a bug.
    """
    return bool(os.environ.get("SLICEWISE_DEBUG") or os.environ.get("PYTEST_CURRENT_TEST"))


def unexpected_error(error: BaseException, subject: object = None) -> SlicewiseError:
    """One sentence for an error nobody anticipated: what failed, on which file, and what to do."""
    name = subject_of(error, subject) or "the input"
    detail = one_line(f"{type(error).__name__}: {error}", 120)
    return SlicewiseError(
        f"Unexpected failure on {name} ({detail}); check that the file is intact, and if it is, rerun with "
        "SLICEWISE_DEBUG=1 and report the traceback."
    )


def boundary_error(error: BaseException, subject: object = None) -> SlicewiseError:
    """What a face shows for any exception that reached it: a ``SlicewiseError`` as it is, the machine's
    failures as their sentence, anything else as ``unexpected_error`` (re-raised under tests and debug)."""
    if isinstance(error, SlicewiseError):
        return error
    found = environment_error(error, subject)
    if found is not None:
        return found
    if internal_errors_raise():
        raise error
    return unexpected_error(error, subject)


class ProposalError(SlicewiseError, ValueError):
    """An accept, reject, merge or undo that does not fit the arrays it is applied to."""


class NothingToUndoError(SlicewiseError, IndexError):
    """Undo or redo with an empty history."""
