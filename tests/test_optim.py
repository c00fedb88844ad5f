"""Optimizer invariants of method.md section 3, checked numerically against independent facts."""

import math

import pytest
import torch

from hyperp.trainer.optim import NS_COEFFS, AdamH, MuonH, newton_schulz_torch, ns_schedule, sphere_step


def polar_factor(G: torch.Tensor) -> torch.Tensor:
    U, _, Vh = torch.linalg.svd(G, full_matrices=False)
    return U @ Vh


def scalar_ns(s: torch.Tensor, coeffs: str, steps: int) -> torch.Tensor:
    """Newton-Schulz acts on each singular value through the odd polynomial a x + b x^3 + c x^5."""
    for a, b, c in ns_schedule(coeffs, steps):
        s = a * s + b * s**3 + c * s**5
    return s


@pytest.mark.parametrize("coeffs,band", [("quintic", (0.6, 1.25)), ("per_iter", (0.95, 1.05))])
@pytest.mark.parametrize("shape", [(64, 256), (256, 64)])
def test_newton_schulz_singular_values_and_direction(coeffs, band, shape):
    torch.manual_seed(0)
    G = torch.randn(*shape, dtype=torch.float64)  # aspect 4: condition number ~3, inside the design range
    X = newton_schulz_torch(G, coeffs, 5)
    s_out = torch.linalg.svdvals(X)
    # independent fact 1: the singular values are the scalar polynomial of the normalised input's
    s_in = torch.linalg.svdvals(G) / (G.norm() + 1e-7)
    torch.testing.assert_close(s_out.sort().values, scalar_ns(s_in, coeffs, 5).sort().values, rtol=1e-6, atol=1e-9)
    # independent fact 2: they lie in the band the coefficient set is designed for
    assert band[0] < s_out.min() and s_out.max() < band[1]
    # independent fact 3: the direction matches the SVD polar factor U V^T
    P = polar_factor(G)
    cos = (X * P).sum() / (X.norm() * P.norm())
    assert cos > (0.98 if coeffs == "quintic" else 0.999)


def test_newton_schulz_batched_equals_per_matrix():
    torch.manual_seed(1)
    bank = torch.randn(3, 32, 48, dtype=torch.float64)
    out = newton_schulz_torch(bank)
    for e in range(3):
        torch.testing.assert_close(out[e], newton_schulz_torch(bank[e]))


def test_coefficient_sets_are_method_md():
    assert NS_COEFFS["quintic"] == ((3.4445, -4.7750, 2.0315),)
    assert len(NS_COEFFS["per_iter"]) == 5 and NS_COEFFS["per_iter"][0] == (4.0848, -6.8946, 2.9270)


def run_muonh(W: torch.Tensor, lr: float, steps: int, seed: int = 0):
    """MuonH on a random quadratic objective; yields (W_before, W_after) each step."""
    torch.manual_seed(seed)
    p = torch.nn.Parameter(W.clone())
    target = torch.randn_like(W)
    opt = MuonH([p], lr=lr)
    for _ in range(steps):
        before = p.detach().clone()
        loss = ((p - target) ** 2).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
        yield before, p.detach().clone()


def test_muonh_stays_on_sphere_for_200_steps():
    torch.manual_seed(0)
    W = torch.nn.Linear(128, 64).weight.detach()  # PyTorch default init, fp32
    r = W.norm().item()
    drifts = [abs(after.norm().item() / r - 1) for _, after in run_muonh(W, lr=0.02, steps=200)]
    assert max(drifts) < 1e-5


def test_muonh_step_size_matches_lr_to_first_order():
    """Each step moves W by eta * r * |sin(W, O)| + O(eta^2): the retraction removes the normal part only."""
    torch.manual_seed(0)
    W = torch.nn.Linear(128, 64).weight.detach().double()
    r = W.norm().item()
    for lr in (1e-2, 1e-3):
        rel_errors = []
        for before, after in run_muonh(W, lr=lr, steps=5):
            rel_errors.append(abs((after - before).norm().item() / (lr * r) - 1))
        # O is nearly orthogonal to W in 8k dimensions, so the step is eta*r up to O(eta) corrections
        assert max(rel_errors) < 5 * lr + 0.02


def one_sphere_step(W, D, lr, wd):
    p = W.clone()
    sphere_step(p, D, W.norm(dim=(-2, -1), keepdim=True), lr, wd)
    return p


def test_weight_decay_is_second_order_on_the_sphere():
    torch.manual_seed(0)
    W = torch.randn(32, 48, dtype=torch.float64)
    D = newton_schulz_torch(torch.randn(32, 48, dtype=torch.float64))
    diffs = []
    for lr in (1e-1, 1e-2, 1e-3):
        diffs.append((one_sphere_step(W, D, lr, wd=0.5) - one_sphere_step(W, D, lr, wd=0.0)).norm().item())
    # O(eta^2): each 10x smaller eta shrinks the difference ~100x (a first-order effect would give 10x)
    assert diffs[1] / diffs[0] < 0.02 and diffs[2] / diffs[1] < 0.02
    # the full update is first order, so decay is a vanishing share of it
    step = (one_sphere_step(W, D, 1e-3, 0.0) - W).norm().item()
    assert diffs[2] / step < 1e-2


def test_adamh_keeps_radius_and_step_norm():
    torch.manual_seed(0)
    p = torch.nn.Parameter(torch.randn(16, 32, dtype=torch.float64) * 0.02)
    r = p.norm().item()
    opt = AdamH([p], lr=0.01)
    for _ in range(50):
        before = p.detach().clone()
        opt.zero_grad()
        (p.sum() ** 2 + (p**3).sum()).backward()
        opt.step()
        assert abs(p.norm().item() / r - 1) < 1e-10
        assert (p.detach() - before).norm().item() / r == pytest.approx(0.01, rel=0.05)


def test_muon_update_is_scaled_polar_factor():
    """Muon without momentum history: W1 = W0 - lr * sqrt(fan_out/fan_in) * NS(G (1 + mu)) (Nesterov)."""
    torch.manual_seed(0)
    p = torch.nn.Parameter(torch.randn(64, 16, dtype=torch.float64))
    W0 = p.detach().clone()
    G = torch.randn(64, 16, dtype=torch.float64)
    p.grad = G.clone()
    from hyperp.trainer.optim import Muon

    Muon([p], lr=0.1, momentum=0.95, nesterov=True, weight_decay=0.0).step()
    expected = W0 - 0.1 * math.sqrt(64 / 16) * newton_schulz_torch(G * 1.95)
    torch.testing.assert_close(p.detach(), expected)
