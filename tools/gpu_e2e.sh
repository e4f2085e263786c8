#!/usr/bin/env bash
# The GPU end-to-end run of sglang_roll_compat (docs/gpu-e2e.md), in two halves:
#
#   tools/gpu_e2e.sh prepare        # here (any x86-64 machine with pip, no GPU): builds .whl/
#   tools/gpu_e2e.sh device OUTDIR [all|weight-sync|two-engines|recheck|multi-gpu|weights]
#                                   # there (the GPU machine: torch 2.11.0, Python 3.12, no
#                                   # network); weight-sync / two-engines run only that step,
#                                   # recheck: two engines, smoke, smoke --server (no baselines),
#                                   # weights: benchmarks/gpu_weights.py (docs/performance.md)
#
# "prepare" writes .whl/site.tar.xz (~52 MB: SGLang 0.5.16 and what the GPU image lacks, built
# by tools/build_gpu_site.sh) and .whl/extra/*.whl (this package's own needs, wrapt and psutil,
# and what SGLang's HTTP server imports that the GPU image lacks: jsonschema, soundfile,
# zstandard, prometheus_client and their deps; nvidia-ml-py, the NVML binding the memory meter uses).
# Carry .whl to the GPU machine with the repository (keep it out of git: .git/info/exclude),
# then run "device": it unpacks everything under /tmp, runs the doctor, the smoke (facade Engine
# from a non-main thread) and two baseline launches of the raw upstream Engine (shim unpatched,
# then patched), and writes the results and logs to OUTDIR.
set -euo pipefail
cd "$(dirname "$0")/.."
PLAT="--platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux_2_28_x86_64 --platform any"
case "${1:-}" in
prepare)
  mkdir -p .whl/extra
  [ -f .whl/site.tar.xz ] || bash tools/build_gpu_site.sh .whl
  # exact pins, no resolver: what the GPU image lacks (checked there with pip check on 2026-11-23)
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --abi cp312 --abi abi3 --abi none $PLAT -d .whl/extra \
    "wrapt==2.1.2" "psutil==7.2.2" \
    "jsonschema==4.26.0" "jsonschema-specifications==2025.9.1" "referencing==0.37.0" "rpds-py==2026.9.1" \
    "attrs==26.1.0" "soundfile==0.14.0" "cffi==2.1.1" "pycparser==3.12" "zstandard==0.25.0" \
    "prometheus-client==0.26.0" "nvidia-ml-py==13.615.71"
  ls -la .whl .whl/extra
  ;;
device)
  OUT=${2:?outdir}; WHAT=${3:-all}; mkdir -p "$OUT"
  export PYTHONUNBUFFERED=1 SGLANG_ROLL_COMPAT_CACHE_DIR=/tmp/src-cache
  LOG="$OUT/run.log"
  {
    echo "== $(date -u +%FT%TZ) $(hostname)"
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
    t0=$(date +%s)
    mkdir -p /tmp/site && tar -xJf .whl/site.tar.xz -C /tmp/site
    python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/extra/*.whl
    echo "unpack: $(( $(date +%s) - t0 )) s"
    if [ -f .whl/jit-cache.tgz ]; then tar -xzf .whl/jit-cache.tgz -C / && echo "JIT caches restored"; fi
    PYTHONPATH=/tmp/site python3 -c "import wrapt, sys; print('wrapt', wrapt.__version__, wrapt.__file__, sys.version)"
  } >"$LOG" 2>&1
  export PYTHONPATH=/tmp/site:$PWD
  python3 -m sglang_roll_compat --json >"$OUT/doctor.json" 2>>"$LOG" || true
  if [ "$WHAT" = weights ]; then
    echo "== benchmarks.gpu_weights" >>"$LOG"
    rc=0; timeout "${GPU_WEIGHTS_TIMEOUT:-560}" python3 -m benchmarks.gpu_weights --out "$OUT/weights" \
      --deadline-s "${GPU_WEIGHTS_DEADLINE:-480}" >"$OUT/gpu-weights.log" 2>&1 || rc=$?
    echo "benchmarks.gpu_weights rc=$rc" >>"$LOG"
    nvidia-smi --query-gpu=name,memory.used,memory.total --format=csv >>"$LOG" 2>&1 || true
    exit 0
  fi
  if [ "$WHAT" = weight-sync ] || [ "$WHAT" = all ]; then
    echo "== smoke --weight-sync" >>"$LOG"
    rc=0; timeout 300 python3 -m sglang_roll_compat smoke --weight-sync --out /tmp/smoke >>"$LOG" 2>&1 || rc=$?
    echo "smoke --weight-sync rc=$rc" >>"$LOG"
    cp /tmp/smoke/weight-sync.json "$OUT"/ 2>>"$LOG" || true
  fi
  if [ "$WHAT" = weight-sync ]; then exit 0; fi
  two_engines() {
    echo "== smoke --two-engines" >>"$LOG"
    rc=0; timeout 300 python3 -m sglang_roll_compat smoke --two-engines --out /tmp/smoke-two >>"$LOG" 2>&1 || rc=$?
    echo "smoke --two-engines rc=$rc" >>"$LOG"
    cp /tmp/smoke-two/two-engines.json "$OUT"/ 2>>"$LOG" || true
  }
  if [ "$WHAT" = two-engines ]; then two_engines; exit 0; fi
  if [ "$WHAT" = multi-gpu ]; then  # a machine with 2+ GPUs: the multi-GPU issue's three runs
    echo "== smoke --tp 2" >>"$LOG"
    rc=0; timeout 240 python3 -m sglang_roll_compat smoke --tp 2 --out /tmp/smoke-tp >>"$LOG" 2>&1 || rc=$?
    echo "smoke --tp 2 rc=$rc" >>"$LOG"; cp /tmp/smoke-tp/smoke-tp2.json "$OUT"/ 2>>"$LOG" || true
    echo "== smoke --weight-sync" >>"$LOG"
    rc=0; timeout 240 python3 -m sglang_roll_compat smoke --weight-sync --out /tmp/smoke-ws >>"$LOG" 2>&1 || rc=$?
    echo "smoke --weight-sync rc=$rc" >>"$LOG"; cp /tmp/smoke-ws/weight-sync.json "$OUT"/ 2>>"$LOG" || true
    two_engines
    nvidia-smi --query-gpu=index,name,memory.used --format=csv >>"$LOG" 2>&1 || true
    exit 0
  fi
  echo "== smoke" >>"$LOG"
  rc=0; timeout 300 python3 -m sglang_roll_compat smoke --out /tmp/smoke >>"$LOG" 2>&1 || rc=$?
  echo "smoke rc=$rc" >>"$LOG"
  echo "== smoke --server" >>"$LOG"
  rc=0; timeout 240 python3 -m sglang_roll_compat smoke --server --out /tmp/smoke >>"$LOG" 2>&1 || rc=$?
  echo "smoke --server rc=$rc" >>"$LOG"
  cp /tmp/smoke/smoke.json /tmp/smoke/smoke-server.json "$OUT"/ 2>>"$LOG" || true
  two_engines
  if [ "$WHAT" = recheck ]; then exit 0; fi
  for mode in unpatched patched unpatched patched; do
    echo "== baseline $mode" >>"$LOG"
    timeout 120 python3 -m sglang_roll_compat smoke --baseline "$mode" --out /tmp/smoke >>"$LOG" 2>&1 \
      || echo "baseline $mode failed rc=$?" >>"$LOG"
  done
  cp /tmp/smoke/smoke.json /tmp/smoke/smoke-server.json "$OUT"/ 2>>"$LOG" || true
  cat /tmp/smoke/baseline-*.jsonl >"$OUT/baselines.jsonl" 2>>"$LOG" || true
  tar -czf "$OUT/jit-cache.tgz" -C / tmp/src-cache root/.cache/tvm-ffi root/.cache/flashinfer root/.triton 2>/dev/null || true
  ;;
*)
  sed -n '2,13p' "$0"; exit 2 ;;
esac
