"""Accepting and merging model proposals into a person's labels: provenance, protection, undo/redo."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from slicewise.core import proposals
from slicewise.core.proposals import (
    ERASED,
    MODEL,
    PERSON,
    UNLABELLED,
    EditHistory,
    accept,
    apply,
    initial_provenance,
    merge,
    paint,
    provenance_counts,
    revert,
)

U, P, M, E = UNLABELLED, PERSON, MODEL, ERASED


def state(labels, provenance):
    return np.array(labels, np.uint8), np.array(provenance, np.uint8)


def test_paint_claims_pixels_for_the_person_and_erasing_unlabels_them():
    labels, provenance = state([[0, 2], [2, 0]], [[U, M], [M, U]])
    mask = np.array([[True, True], [False, False]])
    new_labels, new_provenance = apply(labels, provenance, paint(labels, provenance, mask, 3))
    np.testing.assert_array_equal(new_labels, [[3, 3], [2, 0]])
    np.testing.assert_array_equal(new_provenance, [[P, P], [M, U]])

    erase = paint(new_labels, new_provenance, np.array([[True, False], [True, True]]), 0)
    erased_labels, erased_provenance = apply(new_labels, new_provenance, erase)
    np.testing.assert_array_equal(erased_labels, [[0, 3], [0, 0]])
    np.testing.assert_array_equal(erased_provenance, [[E, P], [E, U]])  # the person's erasures are kept
    assert len(erase) == 2  # the already empty pixel (1, 1) is not part of the edit


def test_accept_and_merge_leave_the_persons_erasures_empty_unless_overwriting():
    labels, provenance = state([[0, 0, 0]], [[E, U, E]])
    proposal = np.array([[1, 1, 0]], np.uint8)
    for act in (accept, merge):
        np.testing.assert_array_equal(apply(labels, provenance, act(labels, provenance, proposal))[0], [[0, 1, 0]])
        overwritten = apply(labels, provenance, act(labels, provenance, proposal, overwrite_person=True))
        np.testing.assert_array_equal(overwritten[0], [[1, 1, 0]])
        np.testing.assert_array_equal(overwritten[1], [[M, M, E]])


def test_paint_with_the_same_value_still_makes_a_model_pixel_the_persons():
    labels, provenance = state([[2]], [[M]])
    edit = paint(labels, provenance, np.array([[True]]), 2)
    assert len(edit) == 1
    np.testing.assert_array_equal(apply(labels, provenance, edit)[1], [[P]])


def test_accept_replaces_unlabelled_and_model_pixels_but_protects_the_persons():
    labels, provenance = state([[0, 1, 1], [0, 0, 0]], [[U, M, P], [U, U, U]])
    proposal = np.array([[2, 2, 2], [0, 3, 0]])
    new_labels, new_provenance = apply(labels, provenance, accept(labels, provenance, proposal))
    np.testing.assert_array_equal(new_labels, [[2, 2, 1], [0, 3, 0]])
    np.testing.assert_array_equal(new_provenance, [[M, M, P], [U, M, U]])


def test_accept_overwrites_the_person_only_when_asked():
    labels, provenance = state([[1, 1], [1, 0]], [[P, P], [M, U]])
    proposal = np.array([[2, 1], [0, 0]])
    edit = accept(labels, provenance, proposal, overwrite_person=True)
    new_labels, new_provenance = apply(labels, provenance, edit)
    np.testing.assert_array_equal(new_labels, [[2, 1], [1, 0]])
    # (0, 1) already holds the proposal's label: the person keeps it; background never erases.
    np.testing.assert_array_equal(new_provenance, [[M, P], [M, U]])
    assert len(edit) == 1


def test_accept_one_class():
    labels, provenance = state(np.zeros((2, 3)), np.zeros((2, 3)))
    proposal = np.array([[1, 2, 3], [3, 2, 1]])
    new_labels, new_provenance = apply(labels, provenance, accept(labels, provenance, proposal, classes=[2]))
    np.testing.assert_array_equal(new_labels, [[0, 2, 0], [0, 2, 0]])
    np.testing.assert_array_equal(new_provenance, [[U, M, U], [U, M, U]])
    two_classes = accept(labels, provenance, proposal, classes={1, 3})
    np.testing.assert_array_equal(apply(labels, provenance, two_classes)[0], [[1, 0, 3], [3, 0, 1]])
    assert len(accept(labels, provenance, proposal, classes=[])) == 0


def test_accept_a_component_takes_the_8_connected_region_of_the_class_under_the_click():
    proposal = np.array(
        [
            [1, 0, 0, 1],
            [0, 1, 0, 1],
            [2, 0, 0, 0],
            [1, 1, 0, 1],
        ]
    )
    labels, provenance = state(np.zeros((4, 4)), np.zeros((4, 4)))
    edit = accept(labels, provenance, proposal, component_at=(1, 1))
    new_labels, _ = apply(labels, provenance, edit)
    # (0, 0) and (1, 1) touch diagonally; the 2 at (2, 0) splits them from the bottom-left 1s.
    np.testing.assert_array_equal(new_labels, [[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]])
    bottom = apply(labels, provenance, accept(labels, provenance, proposal, component_at=(3, 0)))[0]
    np.testing.assert_array_equal(bottom[3], [1, 1, 0, 0])
    assert bottom.sum() == 2
    other_class = accept(labels, provenance, proposal, component_at=(2, 0), classes=[1])
    assert len(other_class) == 0


def test_accept_a_component_on_background_changes_nothing():
    labels, provenance = state(np.zeros((3, 3)), np.zeros((3, 3)))
    proposal = np.ones((3, 3), np.int64)
    proposal[1, 1] = 0
    edit = accept(labels, provenance, proposal, component_at=(1, 1))
    assert len(edit) == 0
    new_labels, new_provenance = apply(labels, provenance, edit)
    np.testing.assert_array_equal(new_labels, labels)
    np.testing.assert_array_equal(new_provenance, provenance)
    with pytest.raises(ValueError, match="outside"):
        accept(labels, provenance, proposal, component_at=(-1, 0))


def test_merge_fills_only_unlabelled_pixels():
    labels, provenance = state([[0, 1, 1, 0]], [[U, M, P, U]])
    proposal = np.array([[2, 2, 2, 0]])
    new_labels, new_provenance = apply(labels, provenance, merge(labels, provenance, proposal))
    np.testing.assert_array_equal(new_labels, [[2, 1, 1, 0]])
    np.testing.assert_array_equal(new_provenance, [[M, M, P, U]])


def test_merge_overwriting_the_person_still_keeps_the_models_pixels():
    labels, provenance = state([[0, 1, 1, 0]], [[U, M, P, U]])
    proposal = np.array([[2, 2, 2, 0]])
    new_labels, new_provenance = apply(labels, provenance, merge(labels, provenance, proposal, overwrite_person=True))
    np.testing.assert_array_equal(new_labels, [[2, 1, 2, 0]])
    np.testing.assert_array_equal(new_provenance, [[M, M, M, U]])


def test_operations_never_mutate_their_inputs():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 4, (5, 6)).astype(np.uint8)
    provenance = np.where(labels > 0, rng.integers(1, 3, (5, 6)), 0).astype(np.uint8)
    proposal = rng.integers(0, 4, (5, 6))
    mask = rng.random((5, 6)) > 0.5
    copies = [a.copy() for a in (labels, provenance, proposal, mask)]
    edits = [
        paint(labels, provenance, mask, 2),
        accept(labels, provenance, proposal, overwrite_person=True),
        accept(labels, provenance, proposal, classes=[1, 2], component_at=(2, 3)),
        merge(labels, provenance, proposal, overwrite_person=True),
    ]
    for edit in edits:
        new_labels, new_provenance = apply(labels, provenance, edit)
        revert(new_labels, new_provenance, edit)
    for original, copy in zip((labels, provenance, proposal, mask), copies, strict=True):
        np.testing.assert_array_equal(original, copy)


def test_apply_and_revert_round_trip_and_refuse_a_stale_edit():
    labels, provenance = state([[0, 1], [2, 0]], [[U, P], [M, U]])
    edit = accept(labels, provenance, np.array([[3, 3], [3, 3]]), overwrite_person=True)
    new_labels, new_provenance = apply(labels, provenance, edit)
    assert new_labels.dtype == labels.dtype and new_provenance.dtype == np.uint8
    old_labels, old_provenance = revert(new_labels, new_provenance, edit)
    np.testing.assert_array_equal(old_labels, labels)
    np.testing.assert_array_equal(old_provenance, provenance)
    with pytest.raises(ValueError, match="changed since"):
        apply(new_labels, new_provenance, edit)
    with pytest.raises(ValueError, match="shape"):
        apply(labels[:1], provenance[:1], edit)


def test_an_edit_is_read_only_and_gives_napari_coordinates():
    labels, provenance = state(np.zeros((3, 4)), np.zeros((3, 4)))
    proposal = np.zeros((3, 4), np.int64)
    proposal[2, 1] = proposal[0, 3] = 5
    edit = accept(labels, provenance, proposal)
    rows, cols = edit.coords
    np.testing.assert_array_equal(rows, [0, 2])
    np.testing.assert_array_equal(cols, [3, 1])
    np.testing.assert_array_equal(edit.new_labels, [5, 5])
    with pytest.raises(ValueError, match="read-only"):
        edit.new_labels[0] = 1
    inverse = edit.inverse()
    np.testing.assert_array_equal(inverse.new_provenance, [U, U])
    np.testing.assert_array_equal(inverse.old_provenance, [M, M])


def test_bad_shapes_and_values_that_do_not_fit_the_labels_are_refused():
    labels, provenance = state(np.zeros((2, 2)), np.zeros((2, 2)))
    with pytest.raises(ValueError, match="one shape"):
        merge(labels, provenance, np.ones((2, 3)))
    with pytest.raises(ValueError, match="one shape"):
        paint(labels[None], provenance[None], np.ones((1, 2, 3), bool), 1)
    with pytest.raises(ValueError, match="one shape"):
        paint(labels[0], provenance[0], np.ones(2, bool), 1)
    with pytest.raises(ValueError, match="do not fit"):
        accept(labels, provenance, np.full((2, 2), 300))
    with pytest.raises(ValueError, match="do not fit"):
        paint(labels, provenance, np.ones((2, 2), bool), -1)


def test_history_undoes_and_redoes_several_levels():
    labels, provenance = state(np.zeros((2, 2)), np.zeros((2, 2)))
    history = EditHistory()
    assert not history.can_undo and not history.can_redo
    states = [(labels, provenance)]
    for value, row in ((1, 0), (2, 1)):
        mask = np.zeros((2, 2), bool)
        mask[row] = True
        edit = paint(*states[-1], mask, value)
        history.push(edit)
        states.append(apply(*states[-1], edit))
    history.push(accept(*states[-1], np.zeros((2, 2), np.uint8)))  # empty: not recorded

    current = history.undo(*states[2])
    np.testing.assert_array_equal(current[0], states[1][0])
    current = history.undo(*current)
    np.testing.assert_array_equal(current[0], states[0][0])
    np.testing.assert_array_equal(current[1], states[0][1])
    assert not history.can_undo and history.can_redo
    with pytest.raises(IndexError):
        history.undo(*current)
    current = history.redo(*current)
    np.testing.assert_array_equal(current[0], states[1][0])
    np.testing.assert_array_equal(current[1], states[1][1])
    assert history.can_undo and history.can_redo

    history.push(merge(*current, np.full((2, 2), 3)))  # a new edit drops what could be redone
    assert not history.can_redo
    with pytest.raises(IndexError):
        history.redo(*current)


def test_a_failed_undo_leaves_the_history_as_it_was():
    labels, provenance = state(np.zeros((1, 2)), np.zeros((1, 2)))
    history = EditHistory()
    edit = paint(labels, provenance, np.array([[True, False]]), 1)
    history.push(edit)
    painted = apply(labels, provenance, edit)
    with pytest.raises(ValueError, match="changed since"):
        history.undo(painted[0] * 2, painted[1])
    assert history.can_undo and not history.can_redo
    np.testing.assert_array_equal(history.undo(*painted)[0], labels)


def test_provenance_counts_and_initial_provenance():
    provenance = initial_provenance(np.array([[0, 4], [1, 0]]))
    assert provenance.dtype == np.uint8
    np.testing.assert_array_equal(provenance, [[U, P], [P, U]])
    provenance[0, 0] = MODEL
    assert provenance_counts(provenance) == {"unlabelled": 1, "person": 2, "model": 1, "erased": 0}
    assert provenance_counts(np.zeros((0, 0), np.uint8)) == {"unlabelled": 0, "person": 0, "model": 0, "erased": 0}
    with pytest.raises(ValueError, match="codes"):
        provenance_counts(np.array([[4]], np.uint8))


def test_reconcile_provenance_agrees_with_labels_and_keeps_known_owners():
    labels = np.array([[[0, 3], [3, 5]], [[0, 0], [2, 2]]], np.uint8)  # any shape, here a 2x2x2 stack
    provenance = np.array([[[M, M], [U, P]], [[P, U], [M, U]]], np.uint8)
    reconciled = proposals.reconcile_provenance(labels, provenance)
    np.testing.assert_array_equal(reconciled, [[[U, M], [P, P]], [[U, U], [M, P]]])
    erased = proposals.reconcile_provenance(np.array([[0, 4]]), np.array([[E, E]], np.uint8))
    np.testing.assert_array_equal(erased, [[E, P]])  # an erasure stays one until painted over
    np.testing.assert_array_equal(provenance[0, 0], [M, M])  # the input is left as it was
    np.testing.assert_array_equal(
        proposals.reconcile_provenance(labels, np.zeros_like(labels)), initial_provenance(labels)
    )


def test_the_core_module_imports_no_qt_or_napari():
    tree = ast.parse(Path(proposals.__file__).read_text())
    imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
    roots = {name.split(".")[0] for name in imported}
    assert roots <= {"__future__", "collections", "dataclasses", "numpy", "skimage", "slicewise"}, roots
    assert {name for name in imported if name.startswith("slicewise")} <= {"slicewise.errors"}, imported


# Property test: random sequences of operations against a per-pixel reference written independently.

HEIGHT, WIDTH, CLASSES = 6, 7, 3
label_maps = arrays(np.uint8, (HEIGHT, WIDTH), elements=st.integers(0, CLASSES))
pixels = st.tuples(st.integers(0, HEIGHT - 1), st.integers(0, WIDTH - 1))
operations = st.one_of(
    st.tuples(st.just("paint"), arrays(bool, (HEIGHT, WIDTH)), st.integers(0, CLASSES)),
    st.tuples(
        st.just("accept"),
        label_maps,
        st.none() | st.lists(st.integers(1, CLASSES), max_size=CLASSES),
        st.none() | pixels,
        st.booleans(),
    ),
    st.tuples(st.just("merge"), label_maps, st.booleans()),
    st.tuples(st.just("reject"), label_maps),
    st.tuples(st.just("undo")),
    st.tuples(st.just("redo")),
)


def sequences(length):
    """Exactly ``length`` operations: drawing the length first spreads it evenly up to 20."""
    return st.lists(operations, min_size=length, max_size=length)


def reference_component(proposal, at):
    """Flood fill, 8 neighbours, over the pixels of the class under ``at`` (empty on background)."""
    value = proposal[at]
    if value == 0:
        return set()
    seen, todo = {at}, [at]
    while todo:
        row, col = todo.pop()
        for dr in (-1, 0, 1):
            for dc in (-1, 0, 1):
                near = (row + dr, col + dc)
                inside = 0 <= near[0] < HEIGHT and 0 <= near[1] < WIDTH
                if inside and near not in seen and proposal[near] == value:
                    seen.add(near)
                    todo.append(near)
    return seen


def reference_step(labels, provenance, op):
    """The state after ``op``, pixel by pixel, written from the rules rather than from the module."""
    labels, provenance = labels.copy(), provenance.copy()
    kind = op[0]
    if kind == "paint":
        _, mask, value = op
        for at in zip(*np.nonzero(mask), strict=True):
            if value:
                labels[at], provenance[at] = value, PERSON
            elif labels[at]:
                labels[at], provenance[at] = 0, ERASED
        return labels, provenance
    if kind == "reject":
        return labels, provenance
    proposal = op[1]
    if kind == "accept":
        _, _, classes, component_at, overwrite = op
        region = reference_component(proposal, component_at) if component_at is not None else None
    else:
        _, _, overwrite = op
    for row in range(HEIGHT):
        for col in range(WIDTH):
            at, value = (row, col), proposal[row, col]
            if value == 0 or labels[at] == value:
                continue
            if provenance[at] in (PERSON, ERASED) and not overwrite:
                continue
            if kind == "merge" and provenance[at] == MODEL:
                continue
            if kind == "accept" and classes is not None and value not in classes:
                continue
            if kind == "accept" and region is not None and at not in region:
                continue
            labels[at], provenance[at] = value, MODEL
    return labels, provenance


def run(labels, provenance, op):
    kind = op[0]
    if kind == "paint":
        return paint(labels, provenance, op[1], op[2])
    if kind == "accept":
        return accept(labels, provenance, op[1], classes=op[2], component_at=op[3], overwrite_person=op[4])
    return merge(labels, provenance, op[1], overwrite_person=op[2])


@settings(
    max_examples=1000,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(start=label_maps, made_by_model=arrays(bool, (HEIGHT, WIDTH)), ops=st.integers(1, 20).flatmap(sequences))
def test_random_sequences_match_the_reference_and_undo_redo_exactly(start, made_by_model, ops):
    labels = start.copy()
    unlabelled = np.where(made_by_model, ERASED, UNLABELLED)  # some empty pixels start as the person's erasures
    provenance = np.where(start == 0, unlabelled, np.where(made_by_model, MODEL, PERSON)).astype(np.uint8)
    history = EditHistory()
    done, undone = [], []  # the reference history: whole states
    for op in ops:
        kind = op[0]
        before = (labels.copy(), provenance.copy())
        if kind == "undo":
            assert history.can_undo == bool(done)
            if done:
                labels, provenance = history.undo(labels, provenance)
                undone.append(before)
                expected = done.pop()
            else:
                expected = before
        elif kind == "redo":
            assert history.can_redo == bool(undone)
            if undone:
                labels, provenance = history.redo(labels, provenance)
                done.append(before)
                expected = undone.pop()
            else:
                expected = before
        else:
            expected = reference_step(labels, provenance, op)
            if kind != "reject":
                given_array = op[1].copy()
                edit = run(labels, provenance, op)
                for now, then in ((op[1], given_array), (labels, before[0]), (provenance, before[1])):
                    np.testing.assert_array_equal(now, then)  # the inputs are not mutated
                changed = (expected[0] != labels) | (expected[1] != provenance)
                assert len(edit) == changed.sum()
                history.push(edit)
                labels, provenance = apply(labels, provenance, edit)
                back = revert(labels, provenance, edit)
                np.testing.assert_array_equal(back[0], before[0])
                np.testing.assert_array_equal(back[1], before[1])
                if changed.any():
                    done.append(before)
                    undone.clear()

        np.testing.assert_array_equal(labels, expected[0])
        np.testing.assert_array_equal(provenance, expected[1])
        assert history.can_undo == bool(done) and history.can_redo == bool(undone)

        # The person's pixels move only under a paint, an explicit overwrite, or undo/redo of one.
        person_before = np.isin(before[1], (PERSON, ERASED))
        may_touch_person = kind in ("paint", "undo", "redo") or (kind in ("accept", "merge") and op[-1])
        if not may_touch_person:
            np.testing.assert_array_equal(labels[person_before], before[0][person_before])
            np.testing.assert_array_equal(provenance[person_before], before[1][person_before])
        # Provenance stays consistent with the labels: unlabelled or erased exactly where the label is 0.
        np.testing.assert_array_equal(np.isin(provenance, (UNLABELLED, ERASED)), labels == 0)


def test_accept_and_merge_take_a_whole_stack_at_once():
    """After propagation a person accepts every slice in one act; the same rules hold per pixel."""
    labels = np.zeros((3, 4, 4), np.uint8)
    labels[1, 0, 0] = 5  # the person's pixel on the middle slice
    provenance = proposals.initial_provenance(labels)
    proposal = np.zeros((3, 4, 4), np.uint8)
    proposal[:, 0, :2] = 1
    edit = proposals.accept(labels, provenance, proposal)
    new_labels, new_provenance = proposals.apply(labels, provenance, edit)
    assert new_labels[1, 0, 0] == 5 and new_provenance[1, 0, 0] == proposals.PERSON
    assert (new_labels[[0, 2], 0, :2] == 1).all() and new_labels[1, 0, 1] == 1
    assert len(proposals.merge(labels, provenance, proposal)) == 5
    with pytest.raises(ValueError, match="of one shape"):
        proposals.accept(labels, provenance, proposal[0])
