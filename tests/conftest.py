"""Fixtures shared by the test modules."""

import pytest


@pytest.fixture
def one_torch_thread():
    """Tiny tensors gain nothing from threads; two threads on a busy two-core machine wait on each other (an
    overfitting test took 90 s instead of 2 s while another process used a core)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
