#!/usr/bin/env bash
# GPU checks for speechkern, in one go, on a CUDA machine after ./install.sh:
#   the CUDA cases of the tests (they run wherever a GPU is visible), the kernel-product benchmark on the GPU
#   (torch tiles and KeOps against cuBLAS matmul), EigenPro convergence on the GPU, and the demo trained and
#   evaluated with --device cuda. Prints every number; record them in benchmarks/RESULTS.md with the GPU named.
#     benchmarks/gpu_check.sh [quick]      # "quick": smaller problem sizes (about 5 minutes in all)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
export KEOPS_CACHE_FOLDER=${KEOPS_CACHE_FOLDER:-$PWD/.cache/keops}
export SPEECHKERN_CACHE=${SPEECHKERN_CACHE:-$PWD/.cache/speechkern}
N=100000; FRAMES=20000
if [ "${1:-}" = quick ]; then N=40000; FRAMES=10000; fi

echo "== GPU"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
$PY -c "import torch; assert torch.cuda.is_available(), 'no CUDA device visible'; print(torch.cuda.get_device_name(0), torch.__version__)"

echo "== tests with their CUDA cases"
$PY -m pytest -q -p no:cacheprovider tests/test_kernels.py tests/test_eigenpro.py tests/test_gammatone.py \
    tests/test_features.py tests/test_stft.py tests/test_dnn.py tests/test_losses.py

echo "== kernel.mm on the GPU: torch tiles, then KeOps (n = m = $N, d = 256, 16 outputs, γ = 0.75)"
$PY benchmarks/kernel_mm.py --device cuda --backend torch --n $N --m $N
$PY benchmarks/kernel_mm.py --device cuda --backend keops --n $N --m $N

echo "== EigenPro convergence on the GPU ($FRAMES frames of real features)"
$PY benchmarks/eigenpro_convergence.py --frames $FRAMES --device cuda

echo "== demo recipe trained and evaluated on the GPU"
$PY -m speechkern_cli.main train recipes/demo --device cuda --out runs/gpu-demo --overwrite --quiet
$PY -m speechkern_cli.main evaluate runs/gpu-demo --overwrite --quiet
cat runs/gpu-demo/training_time.md
