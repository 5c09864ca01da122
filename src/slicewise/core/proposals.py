"""Accept and merge a model's proposal into a person's labels, with provenance and undo/redo.

Three arrays of one shape take part — (H, W) for a slice, or a whole (Z, H, W) stack for an act on
every slice: ``labels``, the person's label map (0 = unlabelled);
``provenance`` (uint8), who set each pixel (``UNLABELLED``, ``PERSON`` or ``MODEL``), or ``ERASED``:
unlabelled because the person erased it; and
``proposal``, a model's label map (0 = background). Every operation is pure: it reads the arrays
and returns an ``Edit`` listing only the pixels that change (flat index, old and new label, old and
new provenance), so it can be applied, reverted, kept in an ``EditHistory`` and handed to a napari
layer (``layer.data_setitem(edit.coords, edit.new_labels)``).

Which pixels a proposal may write, by who set them (the proposal's background never writes):

==================  ======  ==================  =====  =================
pixel               accept  accept(overwrite)   merge  merge(overwrite)
==================  ======  ==================  =====  =================
unlabelled          yes     yes                 yes    yes
set by model        yes     yes                 no     no
set by person       no      yes                 no     yes
erased by person    no      yes                 no     yes
==================  ======  ==================  =====  =================

``accept`` means "the proposal wins over anything the person did not draw"; ``merge`` means "keep
every label already there, the proposal only fills the gaps". An erasure is the person's decision
as much as a stroke is: a pixel they erased stays empty. ``overwrite_person`` lifts the person's
protection (strokes and erasures) and nothing else. A pixel whose label already equals the proposal is left alone, its
provenance included: agreeing with the person does not make their pixel the model's.

There is no ``reject``: rejecting a proposal is discarding it, and changes neither the labels,
nor the provenance, nor the history. To take back a proposal already accepted, undo it.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
from skimage.measure import label as connected_components

from slicewise.errors import NothingToUndoError, ProposalError

UNLABELLED = 0
PERSON = 1
MODEL = 2
ERASED = 3  # unlabelled by the person's eraser: protected like a stroke
PROVENANCE_NAMES = {UNLABELLED: "unlabelled", PERSON: "person", MODEL: "model", ERASED: "erased"}
PERSONS = (PERSON, ERASED)  # the person's decisions, which only overwrite_person lets a proposal change


@dataclass(frozen=True, eq=False)
class Edit:
    """The pixels one operation changes: flat indices into ``shape`` and their before/after values.

    Holds only pixels whose label or provenance changes; ``len(edit) == 0`` means nothing changes.
    The arrays are read-only so an edit kept in a history cannot be altered afterwards. An edit
    has the shape of the arrays it was made from: a slice, or a whole stack.
    """

    shape: tuple[int, ...]
    index: np.ndarray
    old_labels: np.ndarray
    new_labels: np.ndarray
    old_provenance: np.ndarray
    new_provenance: np.ndarray

    def __post_init__(self) -> None:
        for array in (self.index, self.old_labels, self.new_labels, self.old_provenance, self.new_provenance):
            array.setflags(write=False)

    def __len__(self) -> int:
        return int(self.index.size)

    @property
    def coords(self) -> tuple[np.ndarray, ...]:
        """One index array per axis ((rows, cols) in 2D), the form napari's ``data_setitem`` takes."""
        return tuple(np.unravel_index(self.index, self.shape))

    def inverse(self) -> Edit:
        """The edit that takes the after state back to the before state."""
        return Edit(self.shape, self.index, self.new_labels, self.old_labels, self.new_provenance, self.old_provenance)


def initial_provenance(labels: np.ndarray) -> np.ndarray:
    """Provenance for labels a person brings along: every labelled pixel counts as the person's."""
    return np.where(np.asarray(labels) != 0, PERSON, UNLABELLED).astype(np.uint8)


def reconcile_provenance(labels: np.ndarray, provenance: np.ndarray) -> np.ndarray:
    """New provenance that agrees with ``labels`` (any shape): 0 stays unlabelled or erased, other labels claimed.

    For labels changed in ways no edit recorded (e.g. undoing strokes made before provenance was
    kept): a labelled pixel not known to be the model's is the person's; an unlabelled one stays
    erased if it was. Inputs are not changed.
    """
    labelled = np.asarray(labels) != 0
    provenance = np.asarray(provenance)
    kept = np.where(provenance == ERASED, ERASED, UNLABELLED)
    reconciled = np.where(labelled, provenance, kept).astype(np.uint8)
    reconciled[labelled & np.isin(reconciled, (UNLABELLED, ERASED))] = PERSON
    return reconciled


def paint(labels: np.ndarray, provenance: np.ndarray, mask: np.ndarray, value: int) -> Edit:
    """A person's brush stroke: ``mask`` pixels become ``value`` and the person's (0 erases them).

    An erased pixel that held a label becomes ``ERASED`` (a proposal leaves it empty); erasing an
    unlabelled pixel changes nothing.
    """
    mask = _check(labels, provenance, mask, "mask").astype(bool)
    if value == 0:
        mask &= labels != 0
    index = np.flatnonzero(mask)
    return _edit(labels, provenance, index, np.full(index.size, value), PERSON if value != 0 else ERASED)


def person_provenance(old_labels: np.ndarray, new_labels: np.ndarray) -> np.ndarray:
    """Provenance of pixels the person changed from ``old_labels`` to ``new_labels``: drawn or erased."""
    return np.where(new_labels != 0, PERSON, np.where(old_labels != 0, ERASED, UNLABELLED)).astype(np.uint8)


def accept(
    labels: np.ndarray,
    provenance: np.ndarray,
    proposal: np.ndarray,
    *,
    classes: Iterable[int] | None = None,
    component_at: tuple[int, int] | None = None,
    overwrite_person: bool = False,
) -> Edit:
    """Copy the proposal's foreground over unlabelled and model-made pixels (see the module table).

    ``classes`` keeps only those proposal values. ``component_at=(row, col)`` keeps only the
    8-connected region of the proposal's class under that pixel (nothing if it is background there).
    Person pixels (drawn or erased) change only with ``overwrite_person=True``. Written pixels become
    ``MODEL``'s.
    """
    proposal = _check(labels, provenance, proposal, "proposal")
    take = proposal != 0
    if classes is not None:
        take &= np.isin(proposal, np.fromiter(classes, dtype=np.int64))
    if component_at is not None:
        take &= _component(proposal, component_at)
    if not overwrite_person:
        take &= ~np.isin(provenance, PERSONS)
    return _take(labels, provenance, proposal, take)


def merge(labels: np.ndarray, provenance: np.ndarray, proposal: np.ndarray, *, overwrite_person: bool = False) -> Edit:
    """Fill only the unlabelled pixels with the proposal's foreground; model-made pixels are kept.

    Pixels the person erased stay empty. With ``overwrite_person=True`` the person's pixels (drawn or
    erased) are overwritten too (see the module table).
    """
    proposal = _check(labels, provenance, proposal, "proposal")
    writable = (labels == 0) & (provenance != ERASED)
    if overwrite_person:
        writable |= np.isin(provenance, PERSONS)
    return _take(labels, provenance, proposal, writable & (proposal != 0))


def apply(labels: np.ndarray, provenance: np.ndarray, edit: Edit) -> tuple[np.ndarray, np.ndarray]:
    """New (labels, provenance) with ``edit`` applied; the inputs are left as they are.

    Raises ValueError if the arrays do not hold the edit's old values at its pixels (a stale edit),
    so an undo can never silently overwrite a change made after it.
    """
    if tuple(labels.shape) != edit.shape or tuple(provenance.shape) != edit.shape:
        raise ProposalError(
            f"The edit is for shape {edit.shape}, the arrays are {labels.shape} and {provenance.shape}."
        )
    flat_labels = labels.reshape(-1).copy()
    flat_provenance = provenance.reshape(-1).copy()
    stale = not (
        np.array_equal(flat_labels[edit.index], edit.old_labels)
        and np.array_equal(flat_provenance[edit.index], edit.old_provenance)
    )
    if stale:
        raise ProposalError("The arrays changed since this edit was made; it cannot be applied to them.")
    flat_labels[edit.index] = edit.new_labels
    flat_provenance[edit.index] = edit.new_provenance
    return flat_labels.reshape(labels.shape), flat_provenance.reshape(provenance.shape)


def revert(labels: np.ndarray, provenance: np.ndarray, edit: Edit) -> tuple[np.ndarray, np.ndarray]:
    """New (labels, provenance) with ``edit`` taken back; the inputs are left as they are."""
    return apply(labels, provenance, edit.inverse())


def provenance_counts(provenance: np.ndarray) -> dict[str, int]:
    """Pixels per provenance, e.g. ``{"unlabelled": 10, "person": 5, "model": 3, "erased": 0}``, for export."""
    counts = np.bincount(np.asarray(provenance, dtype=np.int64).reshape(-1), minlength=len(PROVENANCE_NAMES))
    if counts.size > len(PROVENANCE_NAMES):
        raise ProposalError(f"Provenance holds codes other than {sorted(PROVENANCE_NAMES)}.")
    return {name: int(counts[code]) for code, name in PROVENANCE_NAMES.items()}


class EditHistory:
    """Multi-level undo/redo of edits. Empty edits are not kept; a new edit clears the redo stack.

    maxlen: how many steps each stack keeps (the oldest go first), as napari's layer history does;
    None keeps every step. The napari face keeps one per labels layer (``_qt/provenance.py``).
    """

    def __init__(self, maxlen: int | None = None) -> None:
        self._done: deque[Edit] = deque(maxlen=maxlen)
        self._undone: deque[Edit] = deque(maxlen=maxlen)

    @property
    def can_undo(self) -> bool:
        return bool(self._done)

    @property
    def can_redo(self) -> bool:
        return bool(self._undone)

    @property
    def next_undo(self) -> Edit | None:
        """The edit ``undo`` would take back, if any."""
        return self._done[-1] if self._done else None

    @property
    def next_redo(self) -> Edit | None:
        """The edit ``redo`` would apply again, if any."""
        return self._undone[-1] if self._undone else None

    def clear(self) -> None:
        """Forget every step (the arrays were replaced as a whole)."""
        self._done.clear()
        self._undone.clear()

    def push(self, edit: Edit) -> None:
        """Record an edit just applied; an empty edit changes nothing and is not recorded."""
        if len(edit):
            self._done.append(edit)
            self._undone.clear()

    def undo(self, labels: np.ndarray, provenance: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """New (labels, provenance) with the last edit taken back; the stacks move only if it succeeds."""
        if not self._done:
            raise NothingToUndoError("There is nothing to undo.")
        result = revert(labels, provenance, self._done[-1])
        self._undone.append(self._done.pop())
        return result

    def redo(self, labels: np.ndarray, provenance: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """New (labels, provenance) with the last undone edit applied again."""
        if not self._undone:
            raise NothingToUndoError("There is nothing to redo.")
        result = apply(labels, provenance, self._undone[-1])
        self._done.append(self._undone.pop())
        return result


def _check(labels: np.ndarray, provenance: np.ndarray, other: np.ndarray, name: str) -> np.ndarray:
    """``other`` as an array, after making sure all three have one shape of at least 2 axes."""
    other = np.asarray(other)
    if labels.ndim < 2 or provenance.shape != labels.shape or other.shape != labels.shape:
        raise ProposalError(
            f"labels, provenance and {name} must be slices or stacks of one shape, got "
            f"{labels.shape}, {provenance.shape} and {other.shape}."
        )
    return other


def _component(proposal: np.ndarray, at: tuple[int, int]) -> np.ndarray:
    """The 8-connected region of the proposal's class under ``at``; empty if that pixel is background."""
    row, col = at
    height, width = proposal.shape
    if not (0 <= row < height and 0 <= col < width):
        raise ProposalError(f"component_at={at} is outside the {height}x{width} slice.")
    value = proposal[row, col]
    if value == 0:
        return np.zeros(proposal.shape, dtype=bool)
    regions = connected_components(proposal == value, background=0, connectivity=2)
    return regions == regions[row, col]


def _take(labels: np.ndarray, provenance: np.ndarray, proposal: np.ndarray, take: np.ndarray) -> Edit:
    """Write the proposal at ``take`` as the model's, skipping pixels that already hold its label."""
    index = np.flatnonzero(take & (labels != proposal))
    return _edit(labels, provenance, index, proposal.reshape(-1)[index], MODEL)


def _edit(labels: np.ndarray, provenance: np.ndarray, index: np.ndarray, new_labels: np.ndarray, who: int) -> Edit:
    """The Edit that writes ``new_labels`` at flat ``index`` with provenance ``who``, minus no-op pixels."""
    cast = new_labels.astype(labels.dtype)
    if not np.array_equal(cast, new_labels):
        raise ProposalError(f"Label values {np.unique(new_labels).tolist()} do not fit the labels' {labels.dtype}.")
    old_labels = labels.reshape(-1)[index]
    old_provenance = provenance.reshape(-1)[index]
    changed = (old_labels != cast) | (old_provenance != who)
    return Edit(
        tuple(labels.shape),
        index[changed],
        old_labels[changed],
        cast[changed],
        old_provenance[changed],
        np.full(int(changed.sum()), who, dtype=provenance.dtype),
    )
