"""The CUDA paths: bf16 autocast training, torch.compile, the Triton Newton-Schulz compiled for the GPU.

Skipped on machines without CUDA (CI has none); `benchmarks/cuda_checks.sh` runs them on a GPU machine. Each
compares the GPU path with an independent reference: the same model in fp32 on the CPU, the eager model, the
torch Newton-Schulz in fp32.
"""

import math

import pytest
import torch

from hyperp.config import RunConfig
from hyperp.trainer.loop import build, train
from hyperp.trainer.metrics import matmul_flops

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

BF16_LOSS_RTOL = 1e-2  # bf16 keeps 8 significant bits (2^-8 = 0.4%); a loss averages many such roundings
GRAD_COSINE = 0.99  # bf16 gradients point where the fp32 ones do; a wrong kernel or layout gives far less


def batch(cfg: RunConfig, device: str) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    x, y = (torch.randint(0, cfg.vocab_size, (cfg.batch_size, cfg.seq_len), generator=g) for _ in range(2))
    return x.to(device), y.to(device)


def loss_and_grads(cfg: RunConfig, device: str, autocast: bool = False, compile: bool = False):
    model, _, _ = build(cfg, device)  # the same seed and CPU init on both devices: the same weights
    run = torch.compile(model) if compile else model
    x, y = batch(cfg, device)
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=autocast):
        _, loss = run(x, y)
    loss.backward()
    return loss.item(), {n: p.grad.float().cpu() for n, p in model.named_parameters() if p.grad is not None}


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return torch.nn.functional.cosine_similarity(a.flatten(), b.flatten(), dim=0).item()


@pytest.mark.parametrize("param", ["hyperp", "adamw"])
def test_bf16_autocast_step_matches_the_fp32_cpu_step(tiny, param):
    cfg = RunConfig(**tiny | dict(param=param, depth=2, n_kv_heads=2, attn_gate=True))
    cpu_loss, cpu_grads = loss_and_grads(cfg, "cpu")
    gpu_loss, gpu_grads = loss_and_grads(cfg, "cuda", autocast=True)
    assert gpu_loss == pytest.approx(cpu_loss, rel=BF16_LOSS_RTOL)
    assert cpu_grads.keys() == gpu_grads.keys()
    low = {n: c for n in cpu_grads if (c := cosine(cpu_grads[n], gpu_grads[n])) < GRAD_COSINE}
    assert not low, f"gradients off their fp32 direction: {low}"


def test_moe_bf16_autocast_step_matches_the_fp32_cpu_step(tiny):
    cfg = RunConfig(**tiny | dict(param="hyperp", depth=2, moe_every=1, top_k=2, sparsity=2))
    cpu_loss, _ = loss_and_grads(cfg, "cpu")
    gpu_loss, _ = loss_and_grads(cfg, "cuda", autocast=True)
    assert gpu_loss == pytest.approx(cpu_loss, rel=BF16_LOSS_RTOL)


def test_compiled_model_matches_the_eager_one_on_cuda(tiny):
    cfg = RunConfig(**tiny | dict(param="hyperp", depth=2))
    eager_loss, eager_grads = loss_and_grads(cfg, "cuda")
    compiled_loss, compiled_grads = loss_and_grads(cfg, "cuda", compile=True)
    assert compiled_loss == pytest.approx(eager_loss, rel=1e-4)
    for name, g in eager_grads.items():
        torch.testing.assert_close(compiled_grads[name], g, rtol=1e-3, atol=1e-5, msg=name)


def test_training_on_cuda_compiled_with_autocast_learns(tiny):
    cfg = RunConfig(**tiny | dict(param="hyperp", device="cuda", compile=True, tokens=32 * 1024))
    row = train(cfg).row
    assert row["device_type"] == "cuda" and torch.cuda.get_device_name(0) in row["hardware"]
    # MFU against the bf16 peak the autocast matmuls run at: on tensor cores far above fp32's (no TF32)
    assert row["peak_flops"] > 2 * matmul_flops(2048, "cuda", torch.float32, seconds=0.2)
    assert math.isfinite(row["val_loss"]) and row["val_loss"] < math.log(cfg.vocab_size) - 0.5


@pytest.mark.parametrize("shape", [(256, 384), (384, 256), (4, 128, 320)])
def test_triton_newton_schulz_on_cuda_is_as_close_to_fp32_as_torch_bf16(shape):
    """The compiled kernel's bf16 result is as close to the fp32 reference as torch's own bf16 iteration."""
    pytest.importorskip("triton")
    from hyperp.kernels.newton_schulz import newton_schulz_triton
    from hyperp.kernels.ns import newton_schulz, newton_schulz_torch

    G = torch.randn(*shape, device="cuda", generator=torch.Generator("cuda").manual_seed(0))
    reference = newton_schulz_torch(G)  # fp32
    torch_bf16 = newton_schulz_torch(G, dtype=torch.bfloat16)
    triton_bf16 = newton_schulz_triton(G, dtype=torch.bfloat16)

    def error(x: torch.Tensor) -> float:
        return ((x.float() - reference).norm() / reference.norm()).item()

    assert error(triton_bf16) <= 2 * error(torch_bf16) + 1e-3
    assert torch.equal(newton_schulz(G), triton_bf16)  # the optimizers' dispatch takes the kernel on CUDA


def test_muonh_trains_alike_with_triton_and_torch_newton_schulz(tiny):
    pytest.importorskip("triton")
    losses = {}
    for backend in ("triton", "torch"):
        cfg = RunConfig(**tiny | dict(param="hyperp", device="cuda", ns_backend=backend, tokens=16 * 1024))
        losses[backend] = train(cfg).curves["train_loss"].tolist()
    assert len(losses["triton"]) == len(losses["torch"])
    for a, b in zip(losses["triton"], losses["torch"]):
        assert a == pytest.approx(b, rel=2e-2)
