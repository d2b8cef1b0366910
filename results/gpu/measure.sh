#!/usr/bin/env bash
# Issue 16's GPU measurement in one run, for a lent GPU machine (device tool; see results/gpu/README.md):
#   OUT=... bash results/gpu/measure.sh          # writes everything under $OUT (default results/gpu/run)
# 1. the fused Triton kernel and the engines checked on the GPU itself (pytest, CUDA cases);
# 2. the engines on CUDA for an MLP and each KAN family up to B = 2^20, TF32 off, JAX at highest matmul precision in
#    the same run
#    (the sweep checks every engine against the float64 reference before timing it);
# 3. env.json (GPU, driver, torch, JAX, Triton versions) beside the CSV, and the table `auto` would follow there.
# Sized for one device call (600 s at most; 15 min of device time per task): each step has its own timeout, and the
# sweep's progress lines (throughput.txt) keep the rates measured so far if it is cut short. ENGINES='*' times every
# engine (the compiled ones compile per model: minutes more).
# Dry run on the CPU (checks the script itself): DEVICE=cpu BATCHES=1,64 MODELS=mlp_forum BUDGET=0.05 bash ...
set -euo pipefail
OUT=${OUT:-results/gpu/run}
DEVICE=${DEVICE:-cuda}
BATCHES=${BATCHES:-1,64,4096,65536,1048576}
MODELS=${MODELS:-mlp_forum,mlp_tanh,fastkan,efficient_kan,chebykan}
BUDGET=${BUDGET:-0.3}
ENGINES=${ENGINES:-forward_tangents,triton_fused_mlp,vmap_jacrev,vmap_jacfwd,compiled_forward_tangents,batch_sum_reverse,loop}
export PYTHONPATH=.
mkdir -p "$OUT"
python3 -c "import torch, sys; print(torch.__version__, torch.cuda.is_available(), file=sys.stderr)"
if [ "$DEVICE" = cuda ]; then
  timeout 120 python3 -m pytest -q -p no:cacheprovider tests/test_triton_mlp.py tests/test_engines.py \
    -k "cuda or triton" > "$OUT/pytest.txt" 2>&1 || echo "pytest failed or timed out: see $OUT/pytest.txt"
fi
timeout 330 python3 -m bench throughput --device "$DEVICE" --models "$MODELS" --engines "$ENGINES" \
  --batch-sizes "$BATCHES" --budget-s "$BUDGET" --warmup 2 --out "$OUT/throughput.csv" \
  --auto-table "$OUT/auto_table.csv" > "$OUT/throughput.txt" 2>&1 || echo "sweep failed or timed out: $OUT/throughput.txt"
timeout 90 python3 -m bench throughput --device "$DEVICE" --models mlp_forum --batch-sizes "$BATCHES" \
  --engines forward_hessian,vmap_hessian --budget-s "$BUDGET" --order 2 --out "$OUT/hessian_throughput.csv" \
  --no-auto-table > "$OUT/hessian_throughput.txt" 2>&1 || echo "Hessian sweep failed or timed out"
echo "done: $(ls "$OUT")"
