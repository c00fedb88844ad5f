"""Ray for a sweep: preflight before Ray starts, connecting, the cluster's capacity, cancelling runs.

`check_cluster` tells what can be known before Ray starts (one run fits this machine, Ray's socket paths fit
the Unix limit, a cluster address answers) so that bad input fails before anything is written. `connect_ray`
starts a local Ray sized to the machine (`address=None`) or joins a cluster (`"auto"`, `"ray://host:port"`);
the workers get the working directory importable (`worker_env`). `capacity` is how many runs fit at once,
`cancel_in_flight` stops runs (a KeyboardInterrupt in each, then their workers killed after a grace period).
`train_data_parallel` trains one run of several workers on a local Ray (`hyperp train --workers N`).
Ray itself is imported only by the functions that need it.
"""

from __future__ import annotations

import functools
import logging
import math
import os
import socket
import sys
from pathlib import Path
from typing import Any

from hyperp.config import RunConfig
from hyperp.errors import InputError, UnavailableError, first_line
from hyperp.sweeps.spec import Resources, SpecError, SweepSpec

log = logging.getLogger(__name__)

# Longest path Ray appends to its temp dir for a session socket: "/ray/session_<date 26>_<pid 7>" +
# "/sockets/plasma_store" and a ".N" Ray may add; the kernel's limit for a Unix socket path is 107 bytes.
RAY_SOCKET_SUFFIX = len("/ray/session_2026-01-01_00-00-00_000000_4194304/sockets/plasma_store.1")
UNIX_SOCKET_MAX = 107
ADDRESS_TIMEOUT_S = 10.0  # a cluster address that does not answer a TCP connect within this is refused
RAY_AUTH_NOTICE_LOGGER = "ray._private.authentication.authentication_token_setup"
CANCEL_GRACE_S = 5.0  # seconds a cancelled run gets to write its checkpoint before its worker is killed


# ---------------------------------------------------------------- preflight (Ray not started)


def ray_temp_dir() -> tuple[str, str]:
    """(variable, directory) Ray will put its session in: RAY_TMPDIR, else TMPDIR on Linux, else /tmp."""
    for var in ("RAY_TMPDIR", "TMPDIR") if sys.platform.startswith("linux") else ("RAY_TMPDIR",):
        if os.environ.get(var):
            return var, os.environ[var]
    return "", "/tmp"


def local_gpus(driver: Path = Path("/proc/driver/nvidia/gpus"), dev: Path = Path("/dev")) -> int:
    """GPUs a local Ray would see, without torch: CUDA_VISIBLE_DEVICES if set, else the NVIDIA driver's list,
    else the device files nvidia0, nvidia1, ... (some containers and VMs have no /proc/driver/nvidia)."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return len([d for d in visible.split(",") if d.strip() and d.strip() != "-1"])
    try:
        return len(os.listdir(driver))
    except OSError:
        return len([p for p in dev.glob("nvidia*") if p.name.removeprefix("nvidia").isdigit()])


def check_cluster(resources: Resources, address: str | None, num_cpus: int | None, workers: int = 1) -> None:
    """What can be known before Ray starts: for a local Ray, that one run (of `workers` workers of `resources`
    each, the plan's largest) fits this machine and that Ray's socket paths fit the Unix limit; for a cluster
    address, that it answers. Raises UnavailableError (InputError for a temp dir that is too long); starts and
    writes nothing."""
    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        return  # joined as is; `capacity` checks it
    if address:
        check_address(address)
        return
    cpus, gpus = num_cpus or os.cpu_count() or 1, local_gpus()
    if resources.cpus * workers > cpus or resources.gpus * workers > gpus:
        if resources.cpus <= cpus and resources.gpus <= gpus:  # one worker fits, not all of them
            key, each = "workers", f" ({workers} workers of {resources.cpus:g} CPUs and {resources.gpus:g} GPUs)"
        else:
            key, each = ("resources.gpus" if resources.gpus > gpus else "resources.cpus"), ""
        raise UnavailableError(f"{key}: one run needs {resources.cpus * workers:g} CPUs and "
                               f"{resources.gpus * workers:g} GPUs{each} but this machine offers {cpus:g} CPUs "
                               f"and {gpus:g} GPUs; lower it, or give --address to run on a cluster")
    var, tmp = ray_temp_dir()
    if len(tmp.encode()) + RAY_SOCKET_SUFFIX > UNIX_SOCKET_MAX:
        raise InputError(f"{var or 'temp dir'}: {tmp!r} is too long for Ray's session sockets ({len(tmp.encode())} "
                         f"+ {RAY_SOCKET_SUFFIX} bytes > {UNIX_SOCKET_MAX}); set RAY_TMPDIR to a shorter directory, "
                         "e.g. RAY_TMPDIR=/tmp")


def check_address(address: str) -> None:
    """A `host:port` or `ray://host:port` address must accept a TCP connection within ADDRESS_TIMEOUT_S
    (`ray.init` to a wrong address hangs for minutes); "auto" and "local" are left to Ray."""
    hostport = address.removeprefix("ray://")
    host, sep, port = hostport.rpartition(":")
    if address in ("auto", "local") or not sep:
        return
    if not port.isdigit():
        raise InputError(f"address: expected auto, host:port or ray://host:port, got {address!r}")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=ADDRESS_TIMEOUT_S).close()
    except OSError as e:
        reason = first_line(str(e)) or "timed out"
        raise UnavailableError(f"address: cannot reach the Ray cluster at {address} ({reason}); "
                               "is it running and is the port open?") from None


def worker_env(address: str | None) -> dict[str, Any]:
    """Ray's runtime environment: the working directory importable by the workers (`--run-fn module:fn`).

    A remote cluster (`ray://`) gets the directory itself shipped (`working_dir`); local Ray and `auto` (this
    node's cluster) get it on PYTHONPATH. `ray://` needs Ray's client (`pip install 'hyperp[cluster]'`).
    """
    cwd = os.getcwd()
    if address and address.startswith("ray://"):
        import importlib.util  # noqa: PLC0415

        if importlib.util.find_spec("grpc") is None:
            raise SpecError("address", f"{address} needs Ray's client, which is not installed: "
                                       "pip install 'hyperp[cluster]' (ray[client,default])")
        return {"working_dir": cwd}
    path = os.pathsep.join(p for p in (cwd, os.environ.get("PYTHONPATH", "")) if p)
    return {"env_vars": {"PYTHONPATH": path}}


# ---------------------------------------------------------------- Ray started


def connect_ray(address: str | None, num_cpus: int | None):
    """Join `address`, or start a local Ray with `num_cpus` (default: every core). Returns (ray, started).
    A failure to connect raises UnavailableError naming the address."""
    import ray  # noqa: PLC0415

    if ray.is_initialized():
        return ray, False
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    quiet = {"log_to_driver": False, "logging_level": logging.WARNING, "runtime_env": worker_env(address)}
    try:
        if address:
            ray.init(address=address, **quiet)
        else:
            # Ray (2.5x on) announces at every local start that it turned token authentication on, and how to turn
            # it off: the local Ray is the sweep's own, so the notice is noise to its user (the token stays on)
            logging.getLogger(RAY_AUTH_NOTICE_LOGGER).setLevel(logging.ERROR)
            ray.init(address="local", num_cpus=num_cpus or os.cpu_count() or 1, include_dashboard=False, **quiet)
    except (ConnectionError, TimeoutError, RuntimeError, OSError) as e:
        raise UnavailableError(f"address: cannot start or join Ray at {address or 'a local Ray'}: "
                               f"{first_line(str(e))}") from None
    return ray, True


def capacity(ray, spec: SweepSpec, local: bool) -> int:
    """How many runs fit on the cluster at once; errors when one run cannot fit on a local cluster."""
    total = ray.cluster_resources()
    cpus, gpus = total.get("CPU", 0.0), total.get("GPU", 0.0)
    fits = math.floor(cpus / spec.resources.cpus + 1e-9)
    if spec.resources.gpus:
        fits = min(fits, math.floor(gpus / spec.resources.gpus + 1e-9))
    if fits < 1:
        msg = (f"one run needs {spec.resources.cpus} CPUs and {spec.resources.gpus} GPUs but the cluster has "
               f"{cpus:g} CPUs and {gpus:g} GPUs")
        if local:
            key = "resources.gpus" if spec.resources.gpus and gpus < spec.resources.gpus else "resources.cpus"
            raise UnavailableError(f"{key}: {msg}")
        log.warning("%s; waiting for the autoscaler", msg)
        fits = 1
    return min(fits, spec.max_concurrent) if spec.max_concurrent else fits


def cancel_in_flight(ray, refs: list) -> None:
    """Cancel runs: first a KeyboardInterrupt in each task (the trainer then checkpoints between updates),
    then, after CANCEL_GRACE_S, kill the workers of those still running."""
    for ref in refs:
        try:
            ray.cancel(ref, force=False)
        except Exception:  # noqa: BLE001 (already finished or gone)
            pass
    _, still_running = ray.wait(refs, num_returns=len(refs), timeout=CANCEL_GRACE_S)
    for ref in still_running:
        try:
            ray.cancel(ref, force=True)
        except Exception:  # noqa: BLE001
            pass


# ---------------------------------------------------------------- one data-parallel run outside a sweep


def data_parallel_resources(cfg: RunConfig) -> Resources:
    """Each worker's share of a run trained by `train_data_parallel`: its threads as CPUs, and one GPU when the
    run trains on CUDA."""
    from hyperp.trainer.loop import resolve_device  # noqa: PLC0415 (torch)

    return Resources(cpus=max(1, cfg.threads), gpus=1.0 if resolve_device(cfg.device).startswith("cuda") else 0.0)


def train_data_parallel(run_fn, cfg: RunConfig, out_dir: str | Path,
                        resources: Resources | None = None) -> dict[str, Any]:
    """Train `cfg` on `cfg.workers` Ray Train workers (of `resources` each, default `data_parallel_resources`)
    on a local Ray started for it (or the Ray this process already joined); rank 0's row. The preflight of a
    sweep comes first, so a run that cannot fit fails before Ray starts. `run_fn` must be importable by name
    (a module-level function)."""
    from hyperp.sweeps import data_parallel  # noqa: PLC0415
    from hyperp.sweeps.worker import setup_process  # noqa: PLC0415

    res = resources or data_parallel_resources(cfg)
    threads = int(res.cpus)
    check_cluster(res, None, None, cfg.workers)
    ray, started = connect_ray(None, None)
    try:
        return data_parallel.fit(run_fn, cfg, out_dir, cpus=threads, gpus=res.gpus,
                                 setup=functools.partial(setup_process, threads=threads, gpus=res.gpus))
    finally:
        if started:
            ray.shutdown()
