"""The Triton Newton-Schulz kernel against the torch reference, run by Triton's CPU interpreter, and the
kernels' place under the trainer.

TRITON_INTERPRET must be set before triton is imported, so the check runs in a fresh interpreter.
"""

import os
import subprocess
import sys
import textwrap

import pytest

CHECK = textwrap.dedent("""
    import torch
    from hyperp.kernels.newton_schulz import mm_axpby, newton_schulz_triton
    from hyperp.trainer.optim import newton_schulz_torch
    torch.manual_seed(0)
    # the fused epilogue: alpha P Q + beta R, with ragged (non-multiple-of-block) shapes
    P, R = torch.randn(2, 40, 70), torch.randn(2, 40, 40)
    torch.testing.assert_close(mm_axpby(P, P.mT, alpha=0.5, R=R, beta=2.0), 0.5 * P @ P.mT + 2 * R)
    # symmetric mode computes half the tiles and mirrors them
    torch.testing.assert_close(mm_axpby(P, P.mT, symmetric=True), P @ P.mT, rtol=1e-5, atol=1e-4)
    for shape in [(64, 96), (96, 64), (3, 48, 80)]:
        for coeffs in ("per_iter", "quintic"):
            G = torch.randn(*shape)
            torch.testing.assert_close(newton_schulz_triton(G, coeffs), newton_schulz_torch(G, coeffs),
                                       rtol=1e-4, atol=1e-5)
    # low-precision storage, as close to the fp32 reference as torch's own iteration in that dtype: fp16 here, since
    # the interpreter multiplies bf16's raw bits in tl.dot (triton-lang/triton#11584); test_cuda.py checks bf16
    G = torch.randn(3, 48, 80)
    reference = newton_schulz_torch(G)
    error = lambda x: ((x.float() - reference).norm() / reference.norm()).item()
    low = newton_schulz_triton(G, dtype=torch.float16)
    assert error(low) <= 2 * error(newton_schulz_torch(G, dtype=torch.float16)) + 1e-3, error(low)
    print("kernel ok")
""")


def test_triton_newton_schulz_matches_torch_reference():
    pytest.importorskip("triton")
    env = dict(os.environ, TRITON_INTERPRET="1")
    proc = subprocess.run([sys.executable, "-c", CHECK], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "kernel ok" in proc.stdout


LAYERING = textwrap.dedent("""
    import sys
    import hyperp.kernels, hyperp.kernels.ns, hyperp.kernels.newton_schulz
    print(sorted(m for m in sys.modules if m.startswith("hyperp.trainer")))
""")


def test_kernels_import_nothing_from_the_trainer():
    """Imports run one way: the trainer uses kernels, never the reverse (fresh interpreter: nothing preloaded)."""
    proc = subprocess.run([sys.executable, "-c", LAYERING], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip() == "[]"


def test_optimizers_use_the_kernels_newton_schulz():
    """One implementation: the optimizers' Newton-Schulz is the kernels' object, not a copy."""
    from hyperp.kernels import ns
    from hyperp.trainer import optim

    assert optim.newton_schulz is ns.newton_schulz and optim.NS_COEFFS is ns.NS_COEFFS
