#!/usr/bin/env bash
# On a machine with a CUDA GPU: the tests whose behaviour depends on CUDA, then the finder benchmark on the GPU.
#
#   scripts/gpu_check.sh              # from the repository root; PYTHON=... to pick the interpreter
#
# The tests: device resolution, device-resident batches, the device-side divergence monitor (host syncs per
# poll), AMP in the finder and the trainer (ignored on CPU, bf16/fp16 on CUDA), and the CLI's device checks;
# with a GPU present, CUDA takes the place of the CPU in every one that resolves `auto`. Then
# `bench_finder.py --device cuda`: finder time against a bare training loop (ratio) and peak CUDA memory.
# Prints everything; exit code non-zero when a step failed.
set -u -o pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-4}
status=0

echo "== GPU"
"$PYTHON" -c 'import torch; assert torch.cuda.is_available(), "no CUDA GPU"; print(torch.__version__, torch.version.cuda, torch.cuda.get_device_name(0))' || exit 1

echo "== CUDA-dependent tests"
"$PYTHON" -m pytest -q -p no:cacheprovider \
    tests/test_data.py tests/test_finder.py tests/test_trainer.py tests/test_cli.py \
    -k "device or cuda or amp or sync or monitor or batches or gpu" || status=1

echo "== scripts/bench_finder.py --device cuda"
"$PYTHON" scripts/bench_finder.py --device cuda "$@" || status=1

exit $status
