"""Fixtures shared by the plugin's tests (tests/) and the training package's (training/tests/)."""

import pytest
import torch


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread: small models gain nothing from threads, and on a busy 2-core machine
    two threads run tiny models ~100x slower (OpenMP spinning)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
