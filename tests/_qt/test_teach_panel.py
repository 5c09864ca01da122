"""The Teach panel in a real viewer: paint two slices, mark an empty one done, teach, get a proposal,
accept it and undo."""

from __future__ import annotations

import numpy as np
import pytest
from qtpy.QtWidgets import QLabel

from slicewise._qt.layers import DONE_KEY, META_KEY
from slicewise._qt.panels.edit import EditPanel
from slicewise._qt.panels.teach import COMPLETE, STROKES, TeachPanel
from slicewise._qt.runner import JobRunner
from slicewise._qt.state import DockState

TIMEOUT_MS = 180_000
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def stack(kvasir_test):
    height = min(image.shape[0] for _, image, _ in kvasir_test[:4])
    width = min(image.shape[1] for _, image, _ in kvasir_test[:4])
    images = np.stack([image[:height, :width] for _, image, _ in kvasir_test[:4]])
    masks = np.stack([mask[:height, :width] for _, _, mask in kvasir_test[:4]])
    blank = np.full_like(images[:1], 40)  # a dark frame without a polyp, as a scope shows between views
    return np.concatenate([images, blank]), np.concatenate([masks, np.zeros_like(masks[:1])])


def test_teach_on_two_painted_slices_proposes_and_an_accept_undoes(make_napari_viewer, qtbot, stack):
    images, masks = stack
    viewer = make_napari_viewer()
    state, runner = DockState(viewer), JobRunner()
    state.image = viewer.add_image(images, name="polyps", rgb=True)
    person = viewer.add_labels(np.zeros(masks.shape, np.uint8), name="my labels")
    person.data[0], person.data[2] = masks[0], masks[2]  # two slices painted completely
    painted = person.data.copy()
    teach, edit = TeachPanel(state, runner), EditPanel(state, runner)
    teach.encoder.value = "efficientnet_lite0"
    assert teach.teach_from.value is person and "0 = background" in teach.how.value
    viewer.dims.set_current_step(0, 4)
    teach.done_button.native.click()  # the blank slice holds no polyp: nothing to paint, but it is done
    assert teach.status.value.startswith("slice 4 is done (done: 4)") and person.metadata[DONE_KEY] == [4]
    viewer.dims.set_current_step(0, 3)

    teach.teach_button.native.click()
    qtbot.waitUntil(lambda: state.proposal is not None and not runner.running(), timeout=TIMEOUT_MS)
    assert teach.model is not None and "from 3 complete slices" in teach.status.value
    assert teach.status.value.endswith(". A proposal on slice 3.")  # after the round's line
    assert teach.model.provenance["teach"]["slice_names"] == ("polyps slice 0", "polyps slice 2", "polyps slice 4")
    assert state.proposal.metadata[META_KEY]["role"] == "labels"
    assert state.proposal.data[3].any() and not state.proposal.data[0].any()  # only the viewed slice
    np.testing.assert_array_equal(person.data, painted)  # teaching never writes the person's labels

    state.target = person
    edit.accept_button.native.click()
    assert person.data[3].any()
    np.testing.assert_array_equal(person.data[[0, 2]], painted[[0, 2]])
    person.undo()
    np.testing.assert_array_equal(person.data, painted)

    viewer.dims.set_current_step(0, 4)  # the blank frame it was taught is background: an empty proposal, said
    teach.propose_button.native.click()
    qtbot.waitUntil(lambda: "proposed on slice 4" in teach.status.value, timeout=TIMEOUT_MS)
    assert teach.status.value.endswith(
        "Nothing proposed on slice 4: label a slice showing the object, or use Fill between."
    )
    teach.propose_all_button.native.click()
    qtbot.waitUntil(lambda: "slices left to label" in teach.status.value, timeout=TIMEOUT_MS)
    assert "from 3 complete slices" in teach.status.value and "of the 2 slices left to label" in teach.status.value
    assert state.proposal.data[1].any() and not state.proposal.data[[0, 2]].any()  # painted slices are decided

    teach.next_button.native.click()
    qtbot.waitUntil(lambda: "label slice" in teach.status.value, timeout=TIMEOUT_MS)
    assert viewer.dims.current_step[0] in (1, 3)  # never a painted or a done slice
    runner.close()
    state.close()


def test_teach_says_what_is_missing_and_the_stroke_convention(make_napari_viewer, notifications):
    viewer = make_napari_viewer()
    state, runner = DockState(viewer), JobRunner()
    state.image = viewer.add_image(np.zeros((2, 32, 32), np.float32), name="scan")
    teach = TeachPanel(state, runner)
    shown = [label.text() for label in teach.native.findChildren(QLabel)]
    assert {"teach from", "encoder", "mode", "labels are"} <= set(shown)  # named even before any labels layer
    teach.teach_button.native.click()
    assert "labels layer" in notifications[-1]
    teach.painted.value = STROKES
    assert "1 = background" in teach.how.value
    empty = viewer.add_labels(np.zeros((2, 32, 32), np.uint8), name="empty")
    assert teach.teach_from.value is not None
    teach.done_button.native.click()
    assert "paint background (label 1)" in notifications[-1] and DONE_KEY not in empty.metadata
    teach.painted.value = COMPLETE
    teach.done_button.native.click()
    teach.done_button.native.click()  # a second press takes it back
    assert empty.metadata[DONE_KEY] == [] and "no longer done" in teach.status.value
    runner.close()
    state.close()


def test_fill_between_proposes_the_slices_between_two_painted_ones(make_napari_viewer, qtbot, data_dir, notifications):
    root = data_dir / "pyradiomics_3d"
    viewer = make_napari_viewer()
    state, runner = DockState(viewer), JobRunner()
    state.image = viewer.open(root / "brain2_image.nrrd", plugin="slicewise")[0]
    reference = viewer.open(root / "brain2_label.nrrd", plugin="slicewise")[0]  # the tumour: slices 8-10
    geometry = {"scale": state.image.scale, "translate": state.image.translate}  # as napari's new labels button
    person = viewer.add_labels(np.zeros(reference.data.shape, np.uint8), name="my labels", **geometry)
    teach, edit = TeachPanel(state, runner), EditPanel(state, runner)
    teach.teach_from.value = person
    teach.fill_button.native.click()
    qtbot.waitUntil(lambda: not runner.running(), timeout=TIMEOUT_MS)
    assert "two slices" in notifications[-1]  # nothing painted yet
    person.data[8] = reference.data[8]
    viewer.dims.set_current_step(0, 8)
    teach.fill_button.native.click()
    qtbot.waitUntil(lambda: not runner.running(), timeout=TIMEOUT_MS)
    assert "two slices" in notifications[-1] and state.proposal is None  # one slice: nothing to fill between

    person.data[10] = reference.data[10]
    viewer.dims.set_current_step(0, 3)
    teach.done_button.native.click()  # slice 3 holds no tumour: nothing is carried from 8 towards it
    painted = person.data.copy()
    teach.fill_button.native.click()
    qtbot.waitUntil(lambda: teach.status.value.startswith("filled"), timeout=TIMEOUT_MS)
    assert teach.status.value.startswith("filled between your labelled slices (5 slices, 4–9)")
    proposal = state.proposal
    assert proposal.metadata[META_KEY]["model"] == "fill between slices"
    assert not [layer for layer in viewer.layers if "P(" in layer.name]  # no model, so no probabilities
    assert not proposal.data[:9].any() and not proposal.data[10:].any()
    tumour, filled = reference.data[9] > 0, proposal.data[9] > 0
    assert 2 * np.sum(tumour & filled) / (tumour.sum() + filled.sum()) > 0.55
    np.testing.assert_array_equal(person.data, painted)  # filling never writes the person's labels

    viewer.dims.set_current_step(0, 9)
    state.target = person
    edit.accept_button.native.click()
    np.testing.assert_array_equal(person.data[9] > 0, filled)
    person.undo()
    np.testing.assert_array_equal(person.data, painted)

    teach.painted.value = STROKES
    teach.fill_button.native.click()
    assert "needs complete slices" in notifications[-1]
    teach.painted.value = COMPLETE
    objects = viewer.add_labels(np.zeros(reference.data.shape, np.uint16), name="one label per object", **geometry)
    objects.data[8, 100:110, 100:110], objects.data[10, 100:110, 100:110] = 300, 300
    teach.teach_from.value = objects
    teach.fill_button.native.click()
    qtbot.waitUntil(lambda: not runner.running(), timeout=TIMEOUT_MS)
    assert "use label 300" in notifications[-1]
    np.testing.assert_array_equal(person.data, painted)
    runner.close()
    state.close()


def test_a_view_of_another_plane_is_one_sentence_and_teaches_nothing(make_napari_viewer, stack, notifications):
    """Rolled to show a plane across the slices, the view's "slice" is not the one slicewise would
    segment, and a plane painted there is no complete slice: Teach, the predict request and Mark
    slice done each say so once, and nothing runs or changes; rolled back, they work again."""
    images, masks = stack
    viewer = make_napari_viewer()
    state, runner = DockState(viewer), JobRunner()
    state.image = viewer.add_image(images, name="polyps", rgb=True)
    person = viewer.add_labels(masks.astype(np.uint8), name="my labels")
    painted = person.data.copy()
    teach = TeachPanel(state, runner)
    viewer.dims.order = (1, 0, 2)  # rows against slices, as the roll button shows a stack
    teach.teach_button.native.click()
    assert notifications[-1].startswith("The view shows another plane of the stack") and not runner.running()
    assert state.request() is None and notifications[-1] == notifications[-2]
    assert state.request(quiet=True) is None and len(notifications) == 2  # following the slice: said once
    teach.done_button.native.click()
    assert notifications[-1].startswith("The view shows another plane") and DONE_KEY not in person.metadata
    np.testing.assert_array_equal(person.data, painted)
    viewer.dims.order = (0, 1, 2)
    assert state.viewed_slice(state.image) is not None and teach._inputs() is not None
    runner.close()
    state.close()
