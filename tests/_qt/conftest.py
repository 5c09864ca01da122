"""Fixtures of the napari-side tests."""

from collections.abc import Iterator

import pytest
from napari.utils.notifications import notification_manager


@pytest.fixture
def notifications() -> Iterator[list[str]]:
    """The messages of every napari notification shown during the test."""
    messages: list[str] = []
    callback = lambda notification: messages.append(notification.message)  # noqa: E731
    notification_manager.notification_ready.connect(callback)
    yield messages
    notification_manager.notification_ready.disconnect(callback)
