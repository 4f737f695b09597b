"""Shared test settings."""

import pytest
import torch


@pytest.fixture
def one_thread():
    """Run torch on one thread: on a 2-core machine the tiny model is several times faster
    that way than with two threads competing with pytest and the kernel."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
