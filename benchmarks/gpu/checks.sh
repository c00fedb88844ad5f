#!/usr/bin/env bash
# Issue 10 item 4 on a CUDA machine, in one go (at most 560 s of steps, each with its own limit so that one hang
# costs only that step): the tests' CUDA paths, the Triton Newton-Schulz against torch's bf16 iteration,
# `hyperp bench train --device cuda` and small runs packed 4 to a GPU. Nothing here has run on a GPU yet (no GPU was
# lent while it was written): read the log. Run from the repository root; it logs to $OUT/checks.log
# (results/bench/gpu without $OUT). Device call: carry [".gpu"] (made here by benchmarks/gpu/prepare_carry.sh),
# command `bash benchmarks/gpu/checks.sh`, timeout_s 590.
set -uo pipefail
OUT=${OUT:-results/bench/gpu}
mkdir -p "$OUT"
log="$OUT/checks.log"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" RAY_DEDUP_LOGS=0
PY=${PY:-python3}

step() {  # step LIMIT_S TITLE COMMAND...: run, log, keep going
    local limit=$1 title=$2
    shift 2
    echo "=== $title ($(date -u +%H:%M:%S), limit ${limit} s): $*" | tee -a "$log"
    timeout "$limit" "$@" 2>&1 | tee -a "$log"
    echo "=== exit ${PIPESTATUS[0]}" | tee -a "$log"
}

if [ -f .gpu/ray-slim.tar.xz ]; then  # what the image lacks: Ray (slimmed) and its missing dependencies
    $PY -c "import tarfile; tarfile.open('.gpu/ray-slim.tar.xz').extractall('/tmp/site', filter='data')"
    $PY -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .gpu/*.whl
    export PYTHONPATH="$PYTHONPATH:/tmp/site"
fi
{ date -u; nvidia-smi -L
  $PY -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)"
  $PY -c "import ray; print('ray', ray.__version__)" || echo "no ray: the packed sweep is skipped"; } 2>&1 | tee -a "$log"

step 200 "CUDA tests" $PY -m pytest -q -p no:cacheprovider tests/test_cuda.py tests/test_kernels.py
step 60 "Newton-Schulz: Triton vs torch bf16" $PY benchmarks/bench_ns.py
step 75 "bench train, default shape" $PY -m hyperp bench train --device cuda --params adamw,hyperp --steps 10
step 75 "bench train, width 1024" $PY -m hyperp bench train --device cuda --params adamw,hyperp --steps 10 \
    --width 1024 --depth 8 --head-dim 64 --seq-len 1024 --batch-tokens 65536
step 150 "packed sweep" $PY benchmarks/bench_pack.py
