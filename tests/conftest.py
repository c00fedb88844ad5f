import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def _single_thread_torch():
    """Tests share 2 cores; one torch thread keeps them from oversubscribing (and makes timings irrelevant)."""
    torch.set_num_threads(1)


TINY = dict(depth=1, aspect_ratio=32, head_dim=16, seq_len=64, batch_tokens=1024, tokens=8192, val_tokens=2048)


@pytest.fixture
def tiny():
    """Keyword arguments of a tiny RunConfig that trains in about a second."""
    return dict(TINY)
