#!/usr/bin/env bash
# The GPU check (docs/scale-out.md, "A lent GPU"). Run from the repository root on the GPU
# machine; the packed data folder must have travelled with the tree:
#
#   here:   PYTHONPATH=scripts .venv/bin/python -m gpucheck --pack-data gpu-data
#   there:  bash scripts/gpu_check.sh            (carry: gpu-data)
#
# Writes benchmarks/results/gpu/{correctness,speed,scale}.json, and copies them to $OUT when
# that is set (the device tool brings $OUT back). Extra arguments go to the check, e.g.
# --budget 300 or --parts correctness,speed.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
DATA=${GPU_DATA:-gpu-data}
RESULTS=benchmarks/results/gpu

# 1. A CUDA torch must already be installed there: nothing can be downloaded.
if ! "$PY" -c 'import torch, sys; print("torch", torch.__version__, "CUDA", torch.version.cuda, "available", torch.cuda.is_available(), "GPUs", torch.cuda.device_count()); sys.exit(0 if torch.cuda.is_available() else 3)'; then
    echo "error: $PY has no CUDA-enabled torch (see above). Nothing can be installed on this" >&2
    echo "machine; point PYTHON= at an interpreter whose torch sees the GPU, or report the" >&2
    echo "GPU run as blocked." >&2
    exit 3
fi
# 2. The project's pure-Python dependencies: report what is missing before starting.
missing=$("$PY" - <<'PYEOF'
import importlib.util
need = ["numpy", "pytorch_optimizer", "tqdm", "rich", "matplotlib", "scipy"]
print(" ".join(m for m in need if importlib.util.find_spec(m) is None))
PYEOF
)
if [ -n "$missing" ]; then
    echo "warning: missing Python modules: $missing (parts that need them record the error)" >&2
fi
if [ ! -f "$DATA/mnist.npz" ]; then
    echo "error: $DATA/mnist.npz not found: run --pack-data $DATA here and carry $DATA" >&2
    exit 2
fi
# 3. The check itself (<= 7 minutes by default).
PYTHONPATH=src:scripts${PYTHONPATH:+:$PYTHONPATH} "$PY" -m gpucheck \
    --data-dir "$DATA" --out "$RESULTS" "$@"
rc=$?
if [ -n "${OUT:-}" ] && [ -d "$RESULTS" ]; then
    mkdir -p "$OUT/gpu" && cp "$RESULTS"/*.json "$OUT/gpu/" 2>/dev/null
fi
exit $rc
