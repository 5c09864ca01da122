"""Fixtures of the napari-side tests."""

from collections.abc import Iterator
from pathlib import Path

import pytest
from napari.utils.notifications import notification_manager

from slicewise.io.autosave import ENV_DIR


@pytest.fixture
def notifications() -> Iterator[list[str]]:
    """The messages of every napari notification shown during the test."""
    messages: list[str] = []
    callback = lambda notification: messages.append(notification.message)  # noqa: E731
    notification_manager.notification_ready.connect(callback)
    yield messages
    notification_manager.notification_ready.disconnect(callback)


@pytest.fixture(autouse=True)
def autosave_dir(tmp_path, monkeypatch) -> Path:
    """Each test's autosaves go to its own temporary folder, never into the home directory."""
    folder = tmp_path / "autosave"
    monkeypatch.setenv(ENV_DIR, str(folder))
    return folder
