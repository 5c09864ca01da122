"""The edit panel in a real viewer: accept, merge and reject proposals, napari undo/redo, provenance."""

from __future__ import annotations

import numpy as np
from app_model.types import KeyBinding

import slicewise
from slicewise._qt.dock import SlicewiseDock
from slicewise._qt.layers import META_KEY
from slicewise._qt.provenance import tracker_of
from slicewise.core import proposals
from slicewise.core.proposals import ERASED, MODEL, PERSON, UNLABELLED
from slicewise.core.types import SliceRef

TIMEOUT_MS = 60_000
SCALE = (2.0, 3.0)


def two_objects() -> np.ndarray:
    """A 12x12 proposal: two separate class-1 objects and one class-2 object."""
    proposal = np.zeros((12, 12), np.uint8)
    proposal[1:4, 1:4] = 1
    proposal[1:4, 8:11] = 1
    proposal[8:11, 2:10] = 2
    return proposal


def panel_with(viewer, proposal: np.ndarray, person: np.ndarray | None = None):
    """A docked widget on an image of the proposal's shape, a slicewise labels layer and (optionally) a person's."""
    image = viewer.add_image(np.zeros(proposal.shape, np.float32), name="img", scale=SCALE)
    widget = SlicewiseDock(viewer)
    viewer.window.add_dock_widget(widget)
    widget.source.image.value = image
    widget.edit.proposal = viewer.add_labels(
        proposal,
        name="m labels (2D)",
        scale=SCALE,
        metadata={META_KEY: {"image": "img", "model": "m", "role": "labels"}},
    )
    labels = None
    if person is not None:
        labels = viewer.add_labels(person, name="mine", scale=SCALE)
        widget.edit.target.value = labels
    return widget.edit, labels


def provenance_of(labels) -> np.ndarray:
    return tracker_of(labels).provenance


def world(viewer_point: tuple[int, int]) -> tuple[float, float]:
    return tuple(float(c * s) for c, s in zip(viewer_point, SCALE, strict=True))


def test_accept_writes_only_where_allowed_and_person_pixels_need_overwrite(make_napari_viewer):
    viewer = make_napari_viewer()
    panel, mine = panel_with(viewer, two_objects(), np.zeros((12, 12), np.uint8))
    mine.brush_size = 1
    mine.paint((2, 2), 5)  # napari's brush: one person pixel inside the first object
    mine.paint((0, 0), 5)  # and one outside every object
    panel.accept_button.native.click()

    expected = two_objects()
    expected[2, 2] = expected[0, 0] = 5
    np.testing.assert_array_equal(mine.data, expected)
    provenance = provenance_of(mine)
    assert provenance[2, 2] == provenance[0, 0] == PERSON
    assert (provenance[two_objects() != 0] == MODEL).sum() == (two_objects() != 0).sum() - 1
    layer = tracker_of(mine).layer
    assert layer.name == "mine provenance" and not layer.visible and not layer.editable
    assert layer.metadata[META_KEY]["role"] == "provenance" and layer not in panel.target.choices
    assert "person 2 px" in panel.status.value and f"model {(two_objects() != 0).sum() - 1} px" in panel.status.value

    panel.overwrite.value = True
    panel.accept_button.native.click()
    expected[2, 2] = 1
    np.testing.assert_array_equal(mine.data, expected)
    assert provenance[2, 2] == MODEL and provenance[0, 0] == PERSON


def test_undo_restores_exactly_the_labels_before_an_accept_and_redo_reapplies_it(make_napari_viewer):
    viewer = make_napari_viewer()
    panel, mine = panel_with(viewer, two_objects(), np.zeros((12, 12), np.uint8))
    panel.accept_button.native.click()  # the first act starts provenance
    mine.undo()
    mine.brush_size = 3
    with mine.block_history():  # one brush stroke of two dabs, as napari records a drag
        mine.paint((2, 9), 7)
        mine.paint((9, 5), 7)
    mine.fill((2, 9), 3)  # napari's fill bucket on the first dab
    stroke = mine.data.copy()
    mine.paint((9, 5), 0)  # and its eraser on the second, inside a proposed object
    before = mine.data.copy(), provenance_of(mine).copy()
    expected = proposals.initial_provenance(before[0])
    expected[(stroke != 0) & (before[0] == 0)] = ERASED  # the eraser's pixels stay the person's decision
    np.testing.assert_array_equal(before[1], expected)

    panel.accept_button.native.click()
    after = mine.data.copy(), provenance_of(mine).copy()
    assert not np.array_equal(after[0], before[0])
    assert set(np.unique(after[1][after[0] != before[0]])) == {MODEL}

    mine.undo()  # Ctrl+Z: one step takes the whole accept back
    np.testing.assert_array_equal(mine.data, before[0])
    np.testing.assert_array_equal(provenance_of(mine), before[1])
    mine.redo()
    np.testing.assert_array_equal(mine.data, after[0])
    np.testing.assert_array_equal(provenance_of(mine), after[1])

    for _ in range(4):  # the accept, then eraser, fill and stroke undo as before
        mine.undo()
    assert not mine.data.any() and not provenance_of(mine).any()
    mine.redo()  # the stroke again: the person's
    np.testing.assert_array_equal(provenance_of(mine), np.where(mine.data != 0, PERSON, UNLABELLED))

    mine.data = np.full((12, 12), 4, np.uint8)  # new data: provenance starts afresh, all the person's
    assert (provenance_of(mine) == PERSON).all()


def test_accept_object_takes_the_object_under_the_cursor_with_shift_a(make_napari_viewer, notifications):
    viewer = make_napari_viewer()
    panel, mine = panel_with(viewer, two_objects(), np.zeros((12, 12), np.uint8))
    press = viewer.keymap[KeyBinding.from_str("Shift+A")]
    viewer.cursor.position = world((2, 9))
    press(viewer)
    expected = np.zeros((12, 12), np.uint8)
    expected[1:4, 8:11] = 1
    np.testing.assert_array_equal(mine.data, expected)
    assert "accepted the object: 9 px" in panel.status.value

    viewer.cursor.position = world((6, 6))
    press(viewer)
    viewer.cursor.position = world((40, 2))
    press(viewer)
    np.testing.assert_array_equal(mine.data, expected)
    assert notifications == [
        "There is no proposed object under the cursor; point at one and press Shift-A.",
        "The cursor is outside the proposal; point at an object and press Shift-A.",
    ]


def test_accept_class_and_merge_fill_only_what_they_should(make_napari_viewer):
    viewer = make_napari_viewer()
    panel, mine = panel_with(viewer, two_objects(), np.zeros((12, 12), np.uint8))
    panel.accepted_class.value = 2
    panel.accept_class_button.native.click()
    np.testing.assert_array_equal(mine.data, np.where(two_objects() == 2, 2, 0))

    panel.proposal.data = np.full((12, 12), 3, np.uint8)  # a new proposal over everything
    mine.brush_size = 1
    mine.paint((2, 2), 5)
    merged = np.where(mine.data != 0, mine.data, 3)
    panel.merge_button.native.click()
    np.testing.assert_array_equal(mine.data, merged)  # the model's class 2 and the person's 5 kept
    assert (provenance_of(mine)[merged == 3] == MODEL).all()


def test_reject_removes_the_proposal_layer_and_keeps_the_persons_labels(make_napari_viewer, notifications):
    viewer = make_napari_viewer()
    painted = np.zeros((12, 12), np.uint8)
    painted[4:8, 4:8] = 9
    panel, mine = panel_with(viewer, two_objects(), painted.copy())
    proposal = panel.proposal
    panel.reject_button.native.click()
    assert proposal not in viewer.layers
    assert mine.data.tobytes() == painted.tobytes() and mine.data.dtype == painted.dtype
    panel.accept_button.native.click()
    assert notifications == ["There is no proposal for this slice; press Predict first."]


def test_impossible_acts_are_one_notification_each_and_change_nothing(make_napari_viewer, notifications):
    viewer = make_napari_viewer()
    panel, _ = panel_with(viewer, two_objects())
    panel.accept_button.native.click()
    other = viewer.add_labels(np.zeros((5, 5), np.uint8), name="small")
    panel.target.value = other
    panel.merge_button.native.click()
    panel.proposal.data = np.zeros((5, 5), np.uint8)
    panel.accept_button.native.click()
    panel.accepted_class.value = 7
    panel.proposal.data[0, 0] = 1
    panel.accept_class_button.native.click()
    assert notifications == [
        "Choose a labels layer to accept into, or press New labels layer.",
        "'small' has shape (5, 5) but the proposal (12, 12); choose labels of the image's shape or press New labels "
        "layer.",
        "The proposal is empty on 2D; predict this slice first.",
        "The proposal has no class 7 on 2D.",
    ]
    assert not other.data.any() and tracker_of(other) is None


def test_new_labels_layer_takes_the_images_geometry_and_removing_it_restores_its_undo(make_napari_viewer):
    viewer = make_napari_viewer()
    panel, _ = panel_with(viewer, two_objects())
    assert panel.target.choices == (None,)  # nothing chosen; the person makes one
    panel.new_button.native.click()
    mine = panel.target.value
    assert mine.name == "img labels" and mine.data.shape == (12, 12) and tuple(mine.scale) == SCALE
    assert panel.target.choices == (None, mine)
    panel.accept_button.native.click()
    assert "undo" in vars(mine)
    viewer.layers.remove(mine)
    assert "undo" not in vars(mine) and tracker_of(mine) is None


def test_provenance_follows_while_the_widget_is_closed_and_a_reopened_one_goes_on(make_napari_viewer):
    viewer = make_napari_viewer()
    panel, mine = panel_with(viewer, two_objects(), np.zeros((12, 12), np.uint8))
    panel.accept_button.native.click()
    viewer.window.remove_dock_widget("all")  # the person closes the slicewise dock widget
    mine.brush_size = 1
    mine.paint((2, 2), 0)  # and erases a model pixel with napari's eraser
    assert provenance_of(mine)[2, 2] == ERASED

    widget = SlicewiseDock(viewer)
    viewer.window.add_dock_widget(widget)
    widget.edit.target.value = mine
    widget.edit.proposal = panel.proposal
    widget.edit.merge_button.native.click()
    assert [layer.name for layer in viewer.layers].count("mine provenance") == 1
    assert provenance_of(mine)[2, 2] == ERASED and mine.data[2, 2] == 0  # the erasure is the person's decision
    assert widget.edit.status.value == (
        "merged: 0 px on 2D · person 0 px · model 41 px · erased by person 1 px (kept empty)"
    )
    mine.undo()  # the erasure (the merge wrote nothing): one step, not one per widget ever opened
    assert mine.data[2, 2] == 1 and provenance_of(mine)[2, 2] == MODEL


def test_accept_on_a_predicted_stack_changes_only_the_viewed_slice(make_napari_viewer, qtbot, kvasir_test):
    viewer = make_napari_viewer()
    stack = np.stack([kvasir_test[i][1][:128, :160] for i in range(4)])
    image = viewer.add_image(stack, name="stack", rgb=True, scale=(2.5, 1, 1))
    widget = SlicewiseDock(viewer)
    viewer.window.add_dock_widget(widget)
    widget.source.image.value = image
    viewer.dims.set_current_step(0, 2)
    widget.predict.predict_button.native.click()
    qtbot.waitUntil(lambda: widget.edit.proposal is not None and not widget.runner.running(), timeout=TIMEOUT_MS)
    panel = widget.edit
    panel.new_button.native.click()
    mine = panel.target.value
    assert mine.data.shape == (4, 128, 160) and tuple(mine.scale) == (2.5, 1, 1)
    mine.paint((1, 64, 80), 3)  # a person's stroke on another slice

    panel.accept_button.native.click()
    expected = slicewise.predict(
        widget.state.models[(slicewise.DEFAULT_MODEL, "auto", ())], stack, slice_ref=SliceRef((2,))
    )
    assert expected.labels.any()
    np.testing.assert_array_equal(mine.data[2], expected.labels)
    assert not mine.data[[0, 3]].any() and set(np.unique(mine.data[1])) == {0, 3}
    provenance = provenance_of(mine)
    np.testing.assert_array_equal(provenance[2], np.where(expected.labels != 0, MODEL, UNLABELLED))
    np.testing.assert_array_equal(provenance[1], np.where(mine.data[1] != 0, PERSON, UNLABELLED))

    mine.undo()
    assert not mine.data[2].any() and not provenance[2].any() and mine.data[1].any()
    mine.redo()
    np.testing.assert_array_equal(mine.data[2], expected.labels)
    assert (provenance[2][expected.labels != 0] == MODEL).all()


def test_provenance_follows_a_random_mix_of_brush_fill_eraser_accepts_merges_undo_and_redo(make_napari_viewer):
    """Against a reference that keeps every (labels, provenance) state: a step is whatever changed labels."""
    rng = np.random.default_rng(7)
    viewer = make_napari_viewer()
    panel, mine = panel_with(viewer, two_objects(), np.zeros((12, 12), np.uint8))
    panel.accept_button.native.click()  # provenance is kept from here on
    accepted = mine.data.copy(), provenance_of(mine).copy()
    mine.undo()
    state = mine.data.copy(), provenance_of(mine).copy()
    done: list[tuple[np.ndarray, np.ndarray]] = []
    undone = [accepted]
    for _ in range(80):
        act = rng.choice(["brush", "fill", "eraser", "accept", "merge", "object", "undo", "redo"])
        point = tuple(int(c) for c in rng.integers(0, 12, 2))
        if act in ("undo", "redo"):
            source, target = (done, undone) if act == "undo" else (undone, done)
            getattr(mine, act)()
            if source:
                target.append(state)
                state = source.pop()
        else:
            panel.overwrite.value = bool(rng.integers(2))
            if act == "brush":
                mine.brush_size = int(rng.integers(1, 5))
                mine.paint(point, int(rng.integers(1, 4)))
            elif act == "eraser":
                mine.paint(point, 0)
            elif act == "fill":
                mine.fill(point, int(rng.integers(0, 4)))
            elif act == "object":
                viewer.cursor.position = world(point)
                panel.accept_object()
            else:
                getattr(panel, act)()
            labels = mine.data.copy()
            changed = labels != state[0]
            if changed.any():
                provenance = state[1].copy()
                person = np.where(labels != 0, PERSON, ERASED)  # a changed pixel now 0 was erased by the person
                provenance[changed] = MODEL if act in ("accept", "merge", "object") else person[changed]
                done.append(state)
                undone.clear()
                state = labels, provenance
        np.testing.assert_array_equal(mine.data, state[0], err_msg=act)
        np.testing.assert_array_equal(provenance_of(mine), state[1], err_msg=act)
