import os
import signal

import pytest
import torch


def pytest_configure(config):
    """A shell starts background jobs (`nohup pytest &`, a script's `&`) with SIGINT ignored, and every child
    inherits that. Tests that deliver a Ctrl-C (to this process or to a subprocess they start) need what a
    terminal gives: the default handler. The product's own behaviour under an ignored SIGINT is tested where
    a test ignores it itself (test_robust.py, test_robust_sweep.py)."""
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture(autouse=True, scope="session")
def _single_thread_torch():
    """Tests share 2 cores; one torch thread keeps them from oversubscribing (and makes timings irrelevant)."""
    torch.set_num_threads(1)


TINY = dict(depth=1, aspect_ratio=32, head_dim=16, seq_len=64, batch_tokens=1024, tokens=8192, val_tokens=2048)


@pytest.fixture
def tiny():
    """Keyword arguments of a tiny RunConfig that trains in about a second."""
    return dict(TINY)


@pytest.fixture(scope="module")
def local_ray():
    """A local Ray of 2 CPUs shared by a module's sweeps (each `run_sweep` joins it instead of starting one)."""
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    import ray  # noqa: PLC0415 (only the modules that use it pay for the import)

    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    yield ray
    ray.shutdown()
