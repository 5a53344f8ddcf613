"""Fixtures of the training tests."""

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    """Keep every training test on one CPU thread (shared 2-core CI machines)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
