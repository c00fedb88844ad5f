#!/usr/bin/env bash
# Run here (with a package registry), before `checks.sh` on a GPU machine that has none: packs into .gpu/ (ignored
# by git; name it in the device call's `carry`) what that machine's image lacks for hyperp's sweeps: Ray, without
# its Java jars, RLlib, Serve and LLM (the whole wheel is 79 MB, over the 64 MiB a call may carry; a sweep needs
# none of them: checked by a local sweep on the slimmed tree), and the Ray dependencies the image lacks.
# Usage: benchmarks/gpu/prepare_carry.sh   (PYVER=3.12 RAY=2.60.0 by default: the image's Python, our Ray)
set -euo pipefail
cd "$(git rev-parse --show-toplevel)"
PYVER=${PYVER:-3.12}
RAY=${RAY:-2.60.0}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
platforms=(--platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64)
python3 -m pip download -q --no-deps --only-binary=:all: --python-version "$PYVER" --implementation cp \
    "${platforms[@]}" -d "$tmp/whl" "ray==$RAY" jsonschema jsonschema-specifications referencing rpds-py
mkdir -p "$tmp/ray"
python3 -m zipfile -e "$tmp"/whl/ray-*.whl "$tmp/ray"
rm -rf "$tmp"/ray/ray/{jars,rllib,serve,llm}
chmod +x "$tmp"/ray/ray/core/src/ray/gcs/gcs_server "$tmp"/ray/ray/core/src/ray/raylet/raylet
rm -rf .gpu && mkdir .gpu
tar cf - -C "$tmp/ray" . | xz -6 -T0 > .gpu/ray-slim.tar.xz
mv "$tmp"/whl/{jsonschema,referencing,rpds}*.whl .gpu/
du -sh .gpu
