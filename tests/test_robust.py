"""Failure modes without Ray: lock probing, atomic writes (umask, full disk, stale temp files), checkpoints that
do not load, SIGTERM in the trainer, and every input a sweep checks before it writes a file or starts Ray."""

from __future__ import annotations

import errno
import logging
import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from hyperp import io
from hyperp.errors import InputError, Terminated, UnavailableError, first_line
from hyperp.signals import StopSignals
from hyperp.sweeps import ledger
from hyperp.sweeps import plan as plan_module
from hyperp.sweeps.runner import run_sweep
from hyperp.sweeps.plan import make_plan
from hyperp.sweeps.spec import SpecError, loads_spec
from hyperp.sweeps.stubs import TINY_BASE_TOML
from hyperp.trainer import checkpoint
from hyperp.config import RunConfig
from hyperp.trainer.data import DataError, load_corpus
from hyperp.trainer.checkpoint import LoopState
from hyperp.trainer.loop import build, train
from test_data import write_shard

STUB = "hyperp.sweeps.stubs:stub_run"


def tree(root: Path) -> dict[str, tuple[int, int, bytes]]:
    """Every path under root with its size, mtime and contents: equal snapshots mean nothing was written."""
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns, p.read_bytes() if p.is_file() else b"")
            for p in sorted(root.rglob("*"))}


def ray_running() -> bool:
    ray = sys.modules.get("ray")
    return ray is not None and ray.is_initialized()


# ---------------------------------------------------------------- lock probe


def test_is_running_reads_the_lock_without_writing_it(tmp_path):
    assert not ledger.is_running(tmp_path) and not (tmp_path / ledger.LOCK_FILE).exists()  # nothing created
    held = ledger.SweepLock(tmp_path)
    assert held.acquire()
    before = tree(tmp_path)
    assert ledger.is_running(tmp_path)
    assert tree(tmp_path) == before  # the probe neither truncated nor rewrote .lock
    held.release()  # the holder empties the file (it names no driver once let go)
    before = tree(tmp_path)
    assert not ledger.is_running(tmp_path) and ledger.lock_owner(tmp_path) is None
    assert tree(tmp_path) == before  # nor does the probe of a free lock
    assert ledger.SweepLock(tmp_path).acquire()  # and it left no lock behind


# ---------------------------------------------------------------- hyperp.io


def test_atomic_write_follows_the_umask(tmp_path):
    old = os.umask(0o027)
    io.umask.cache_clear()
    try:
        path = io.write_json(tmp_path / "a.json", {"x": 1})
        assert path.stat().st_mode & 0o777 == 0o640
        os.umask(0o002)
        io.umask.cache_clear()
        assert io.write_bytes(tmp_path / "b", b"x").stat().st_mode & 0o777 == 0o664
    finally:
        os.umask(old)
        io.umask.cache_clear()
    assert io.umask() == old


def test_full_disk_names_the_file_and_keeps_the_old_one(tmp_path):
    target = io.write_bytes(tmp_path / "runs.parquet", b"old")

    def full(p: Path) -> None:
        p.write_bytes(b"partial")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(p))

    with pytest.raises(UnavailableError) as e:
        io.atomic_write(target, full)
    assert str(e.value).startswith(f"{target}: disk full") and "\n" not in str(e.value)
    assert target.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["runs.parquet"]
    with pytest.raises(UnavailableError, match="quota"):  # EDQUOT, and pyarrow's errno-less text
        io.atomic_write(target, lambda p: (_ for _ in ()).throw(OSError(errno.EDQUOT, "Disk quota exceeded")))
    with pytest.raises(UnavailableError, match="disk full"):
        io.atomic_write(target, lambda p: (_ for _ in ()).throw(OSError("IOError: No space left on device")))
    with pytest.raises(PermissionError):  # other errors pass through as they are
        io.atomic_write(target, lambda p: (_ for _ in ()).throw(PermissionError(errno.EACCES, "denied")))


def test_stale_tmp_files_are_removed_but_not_live_ones(tmp_path):
    old = [tmp_path / ".runs.parquet.ab12cd34.tmp", tmp_path / ".state.json.x_y9Qz0a.tmp",
           tmp_path / "checkpoint.pt.tmp"]
    keep = [tmp_path / "runs.parquet", tmp_path / "notes.tmp", tmp_path / ".hidden"]
    for p in old + keep:
        p.write_bytes(b"x")
        os.utime(p, (time.time() - 3600, time.time() - 3600))
    live = tmp_path / ".curves.parquet.q1w2e3r4.tmp"
    live.write_bytes(b"being written")
    removed = io.remove_stale_tmp(tmp_path, older_than=time.time() - 60)
    assert sorted(removed) == sorted(old)
    assert sorted(tmp_path.iterdir()) == sorted(keep + [live])


def test_train_removes_a_killed_writers_tmp_files(tmp_path, tiny):
    stale = tmp_path / ".checkpoint.pt.k1ll3d00.tmp"
    stale.write_bytes(b"torn")
    os.utime(stale, (time.time() - 10, time.time() - 10))
    train(RunConfig(**tiny), tmp_path)
    assert not stale.exists() and (tmp_path / "runs.parquet").exists()


def test_full_disk_while_checkpointing_names_the_file(tmp_path, tiny, monkeypatch):
    def no_space(obj, f):
        f.write(b"partial")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(checkpoint.torch, "save", no_space)
    with pytest.raises(UnavailableError) as e:
        train(RunConfig(**tiny | dict(checkpoint_every=2)), tmp_path)
    assert str(e.value).startswith(f"{tmp_path / checkpoint.CHECKPOINT}: disk full")
    assert list(tmp_path.iterdir()) == []  # no torn checkpoint, no temp file


def test_first_line_strips_ansi_and_keeps_one_line():
    text = "\x1b[31mRayTaskError\x1b[0m: \x1b[1mboom\x1b[0m\n  File \"x.py\", line 3\n" + "y" * 5000
    assert first_line(text) == "RayTaskError: boom"
    assert first_line("\n\n  second\nthird") == "second"
    assert len(first_line("z" * 5000)) <= 500


# ---------------------------------------------------------------- checkpoints that do not load


class Malicious:
    def __reduce__(self):
        return (os.system, ("touch /tmp/hyperp-pwned",))


def _bad_payloads(cfg: RunConfig, tmp: Path) -> dict[str, bytes]:
    """Checkpoint files that must not load into `cfg`'s model, each as bytes."""
    model, opt, _ = build(cfg, "cpu")
    good = tmp / "good.pt"
    checkpoint.save(tmp, cfg, model, opt, LoopState(step=3))
    (tmp / checkpoint.CHECKPOINT).rename(good)
    other_model, other_opt, _ = build(cfg.replace(aspect_ratio=64), "cpu")  # wider: every matrix differs
    wrong_shape = {"config": cfg.to_json(), "model": other_model.state_dict(), "optim": other_opt.state_dict(),
                   "loop": {"step": 3}}
    missing = torch.load(good, weights_only=True)
    del missing["optim"]
    bad_loop = torch.load(good, weights_only=True)
    bad_loop["loop"] = {"step": 3, "no_such_field": 1}

    def saved(obj) -> bytes:
        path = tmp / "x.pt"
        torch.save(obj, path)
        return path.read_bytes()

    data = good.read_bytes()
    return {"truncated": data[: len(data) // 2], "random": np.random.default_rng(0).bytes(4096), "empty": b"",
            "wrong_shape": saved(wrong_shape), "malicious": pickle.dumps(Malicious(), protocol=2),
            "missing_keys": saved(missing), "bad_loop": saved(bad_loop), "not_a_dict": saved([1, 2, 3])}


def test_bad_checkpoints_are_set_aside_and_never_loaded(tmp_path, tiny, caplog):
    cfg = RunConfig(**tiny)
    cases = _bad_payloads(cfg, tmp_path)
    for name, data in cases.items():
        out = tmp_path / name
        out.mkdir()
        (out / checkpoint.CHECKPOINT).write_bytes(data)
        (out / (checkpoint.CHECKPOINT + checkpoint.BAD_SUFFIX)).write_bytes(b"older bad file")
        model, opt, _ = build(cfg, "cpu")
        fresh = {k: v.clone() for k, v in model.state_dict().items()}
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="hyperp.trainer.checkpoint"):
            assert checkpoint.load(out, cfg, model, opt) is None, name
        assert all(torch.equal(v, fresh[k]) for k, v in model.state_dict().items()), name  # untouched
        assert opt.state_dict() == build(cfg, "cpu")[1].state_dict(), name
        assert not (out / checkpoint.CHECKPOINT).exists(), name
        assert (out / "checkpoint.pt.bad").read_bytes() == data, name  # kept aside, replacing the older one
        [record] = caplog.records
        assert str(out / checkpoint.CHECKPOINT) in record.getMessage() and "\n" not in record.getMessage(), name
    assert not Path("/tmp/hyperp-pwned").exists()


def test_training_restarts_from_scratch_over_a_bad_checkpoint(tmp_path, tiny):
    cfg = RunConfig(**tiny)
    straight = train(cfg)
    (tmp_path / checkpoint.CHECKPOINT).write_bytes(b"\x00garbage")
    result = train(cfg, tmp_path)
    assert result.row["resumed_step"] == -1 and result.row["val_loss"] == straight.row["val_loss"]
    assert (tmp_path / "checkpoint.pt.bad").exists() and not (tmp_path / checkpoint.CHECKPOINT).exists()


def test_good_checkpoint_of_this_config_still_resumes(tmp_path, tiny):
    cfg = RunConfig(**tiny)
    model, opt, _ = build(cfg, "cpu")
    checkpoint.save(tmp_path, cfg, model, opt, LoopState(step=3, first_loss=5.0))
    model2, opt2, _ = build(cfg.replace(seed=1), "cpu")
    state = checkpoint.load(tmp_path, cfg, model2, opt2)
    assert state.step == 3 and all(torch.equal(a, b) for a, b in zip(model.state_dict().values(),
                                                                       model2.state_dict().values()))


# ---------------------------------------------------------------- SIGTERM


def test_stop_signals_raise_and_restore():
    previous_term, previous_int = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # as in a script started in the background
    try:
        with pytest.raises(Terminated):  # SIGTERM travels as KeyboardInterrupt, leaves the block as Terminated
            with StopSignals(sigint=True) as s:
                try:
                    os.kill(os.getpid(), signal.SIGTERM)
                    time.sleep(5)
                except KeyboardInterrupt:
                    assert s.terminated  # what a cleanup inside the block sees
                    raise
        with pytest.raises(KeyboardInterrupt) as e:  # SIGINT, though ignored before, interrupts
            with StopSignals(sigint=True) as s:
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(5)
        assert e.type is KeyboardInterrupt and not s.terminated
        with StopSignals() as s:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a library takes SIGTERM ...
            s.install()  # ... and it is taken back
            assert signal.getsignal(signal.SIGTERM) == s._on_sigterm
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
        assert signal.getsignal(signal.SIGTERM) == previous_term
    finally:
        signal.signal(signal.SIGINT, previous_int)


TRAIN_SCRIPT = """
import json, sys
from hyperp.errors import Terminated
from hyperp.config import RunConfig
from hyperp.trainer.loop import train
cfg = RunConfig.from_dict(json.loads(sys.argv[1]))
try:
    train(cfg, sys.argv[2], on_step=lambda i: print(i.step, flush=True))
except Terminated:
    sys.exit(143)
"""


def test_sigterm_in_train_checkpoints_and_the_rerun_resumes_bit_exact(tmp_path, tiny):
    cfg = RunConfig(**tiny | dict(tokens=64 * 1024, threads=1))  # 64 steps, no periodic checkpoint
    proc = subprocess.Popen([sys.executable, "-c", TRAIN_SCRIPT, cfg.to_json(), str(tmp_path)],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert int(proc.stdout.readline()) >= 1  # training has started
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 143
    finally:
        proc.kill()
        proc.stdout.close()
    assert (tmp_path / checkpoint.CHECKPOINT).exists() and not (tmp_path / "runs.parquet").exists()
    resumed = train(cfg, tmp_path)
    assert 1 <= resumed.row["resumed_step"] < cfg.total_steps
    straight = train(cfg)
    assert resumed.row["val_loss"] == straight.row["val_loss"]


# ---------------------------------------------------------------- data


def test_empty_shard_is_named(tmp_path):
    (tmp_path / "a.bin").write_bytes(b"")
    with pytest.raises(DataError, match=r"a\.bin is empty"):
        load_corpus(str(tmp_path / "a.bin"), 2.0)
    write_shard(tmp_path / "b.bin", np.zeros(0), header=True)
    with pytest.raises(DataError, match=r"b\.bin header says it holds 0 tokens"):
        load_corpus(str(tmp_path / "b.bin"), 2.0)


def test_token_past_vocab_anywhere_in_any_shard_is_refused_naming_it(tmp_path, tiny):
    rng = np.random.default_rng(0)
    write_shard(tmp_path / "s0.bin", rng.integers(0, 256, 50_000), header=True)
    late = rng.integers(0, 256, (1 << 20) + 5000)
    late[-10] = 300  # past the first 2^20 tokens, which is all a sample would see
    write_shard(tmp_path / "s1.bin", late, header=True)
    write_shard(tmp_path / "s2.bin", rng.integers(0, 256, 50_000), header=True)
    cfg = RunConfig(**tiny | dict(data=str(tmp_path / "s*.bin")))
    with pytest.raises(InputError) as e:
        train(cfg, tmp_path / "out")
    assert "vocab_size" in str(e.value) and "s1.bin" in str(e.value) and "token id 300" in str(e.value)
    assert not (tmp_path / "out").exists()
    assert train(cfg.replace(vocab_size=301)).status == "completed"


# ---------------------------------------------------------------- grid size


def test_huge_grid_is_refused_before_it_is_built(monkeypatch):
    axes = "\n".join(f"{k} = [{', '.join(str(i + 1) for i in range(100))}]"
                     for k in ("seed", "val_tokens", "log_every", "eval_every", "stats_every", "threads"))
    spec = loads_spec('name = "big"\n' + TINY_BASE_TOML + "[axes]\n" + axes)
    built = []
    monkeypatch.setattr(plan_module, "_put", lambda *a, **k: built.append(a))  # where a point gets its values
    with pytest.raises(SpecError) as e:
        make_plan(spec)
    assert e.value.field == "max_runs" and "1,000,000,000,000" in str(e.value)
    assert not built  # counted, not built (building 10^12 points would not end)


def test_grid_limit_counts_overrides_and_lr_grids_and_can_be_raised():
    spec = loads_spec('name = "g"\nmax_runs = 10\n' + TINY_BASE_TOML + "[axes]\nseed = [0, 1, 2]\n"
                      '[[override]]\nwhere = { seed = 0 }\nset = { lr = [0.01, 0.02, 0.03, 0.04] }\n')
    assert len(make_plan(spec).runs) == 6
    with pytest.raises(SpecError, match="6 points"):
        make_plan(spec, max_runs=5)
    spec = loads_spec('name = "g"\nmax_runs = 10\n' + TINY_BASE_TOML + "[axes]\nseed = [0, 1, 2]\n"
                      'lr = { search = "bracket", grid = [0.01, 0.02, 0.04, 0.08] }\n')
    with pytest.raises(SpecError, match="12 runs"):
        make_plan(spec)
    assert len(make_plan(spec, max_runs=12).runs) == 12
    with pytest.raises(SpecError, match="max_runs"):
        loads_spec('name = "g"\nmax_runs = 0\n' + TINY_BASE_TOML)


# ---------------------------------------------------------------- run_sweep refuses before writing or starting Ray


def refused(tmp_path: Path, spec_text: str, exc: type[BaseException], **kwargs) -> BaseException:
    spec = tmp_path / "s.toml"
    spec.write_text(spec_text)
    root = tmp_path / "sweeps"
    with pytest.raises(exc) as e:
        run_sweep(spec, root, run_fn=STUB, **kwargs)
    assert not root.exists() and not ray_running()  # nothing written, no Ray
    assert "\n" not in str(e.value)
    return e.value


SPEC = 'name = "r"\n' + TINY_BASE_TOML


def test_missing_and_empty_data_are_found_before_anything_runs(tmp_path):
    e = refused(tmp_path, SPEC + f'[axes]\ndata = ["stdlib", "{tmp_path / "nope"}"]\n', DataError)
    assert "nope" in str(e) and "does not exist" in str(e)
    (tmp_path / "empty").mkdir()
    e = refused(tmp_path, SPEC + f'data = "{tmp_path / "empty"}"\n', DataError)
    assert "empty" in str(e)
    (tmp_path / "e.bin").write_bytes(b"")
    assert "e.bin is empty" in str(refused(tmp_path, SPEC + f'data = "{tmp_path / "e.bin"}"\n', DataError))
    tokens = np.random.default_rng(0).integers(0, 256, 20_000)
    tokens[-1] = 299
    write_shard(tmp_path / "v.bin", tokens, header=True)
    e = refused(tmp_path, SPEC + f'data = "{tmp_path / "v.bin"}"\n[axes]\nvocab_size = [512, 256]\n', InputError)
    assert str(e).startswith("vocab_size:") and "v.bin holds token id 299" in str(e)


def test_run_too_big_for_this_machine_is_refused_without_ray(tmp_path, monkeypatch):
    cores = os.cpu_count()
    e = refused(tmp_path, SPEC + f"[resources]\ncpus = {cores + 1}\n", UnavailableError)
    assert str(e).startswith("resources.cpus:") and f"needs {cores + 1} CPUs" in str(e)
    e = refused(tmp_path, SPEC + "[resources]\ncpus = 2\n", UnavailableError, num_cpus=1)
    assert "offers 1 CPUs" in str(e)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")  # no GPU visible, whatever the machine has
    e = refused(tmp_path, SPEC + "[resources]\ngpus = 1\n", UnavailableError)
    assert str(e).startswith("resources.gpus:")


def test_local_gpus_are_counted_without_torch(tmp_path, monkeypatch):
    from hyperp.sweeps.cluster import local_gpus

    driver, dev = tmp_path / "gpus", tmp_path / "dev"
    dev.mkdir()
    for name in ("nvidia0", "nvidia1", "nvidiactl", "nvidia-uvm"):  # two GPUs and the driver's other devices
        (dev / name).touch()
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert local_gpus(driver, dev) == 2  # no driver list (a VM, a container): the device files
    driver.mkdir()
    (driver / "0000:00:04.0").mkdir()
    assert local_gpus(driver, dev) == 1  # the driver's list when there is one
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1,2")
    assert local_gpus(driver, dev) == 3  # what the user made visible


def test_long_ray_temp_dir_is_refused_naming_the_variable(tmp_path, monkeypatch):
    monkeypatch.setenv("RAY_TMPDIR", "/tmp/" + "d" * 60)
    e = refused(tmp_path, SPEC, InputError)
    assert str(e).startswith("RAY_TMPDIR:") and "shorter" in str(e)


def test_unreachable_address_fails_fast_and_leaves_no_lock(tmp_path):
    import socket

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    e = refused(tmp_path, SPEC, UnavailableError, address=f"127.0.0.1:{port}")  # by the preflight: no Ray started
    assert f"127.0.0.1:{port}" in str(e)
    assert "address" in str(refused(tmp_path, SPEC, InputError, address="ray://host:notaport"))


def test_locked_sweep_is_unavailable_and_untouched(tmp_path):
    spec = tmp_path / "s.toml"
    spec.write_text(SPEC)
    held = ledger.SweepLock(tmp_path / "sweeps" / "r")
    assert held.acquire()
    before = tree(tmp_path / "sweeps")
    with pytest.raises(UnavailableError, match="already being run by process"):
        run_sweep(spec, tmp_path / "sweeps", run_fn=STUB)
    assert tree(tmp_path / "sweeps") == before and not ray_running()
    held.release()


def test_grid_limit_argument_of_run_sweep(tmp_path):
    e = refused(tmp_path, SPEC + "[axes]\nseed = [0, 1, 2]\n", SpecError, max_runs=2)
    assert isinstance(e, InputError) and "3 points" in str(e)
