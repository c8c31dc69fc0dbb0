#!/usr/bin/env bash
# GPU check: run the CUDA-only tests and the CUDA benchmark on a machine that already has PyTorch with
# CUDA (it installs nothing and reaches no package registry), writing the figures under OUTDIR.
# Budget: about 5 minutes in all.
#
#   scripts/gpu_check.sh OUTDIR
#
# OUTDIR receives env.txt (software and device), cuda_tests.log / cuda_tests.xml (pytest -m cuda),
# benchmark_cuda.txt / benchmark_cuda.json (python -m filter_basis.benchmark --device cuda),
# train_bench_cuda.txt / .json (whole training steps of ResNet-56 and SRResNet, dense and Basis, bf16 +
# channels_last, and the input pipeline alone), train_bench_compile_cuda.txt / .json (ResNet-56 Basis
# with --compile) and train_cuda.txt (a short end-to-end training run on the GPU with mixed precision).
#
# Only the checkout travels to such a machine; the golden vectors are in tests/data/official. Pure-Python
# wheels missing there (bicubic-pytorch) are taken from ./.whl (git-ignored) into a temporary folder,
# without any package index.
set -uo pipefail
out="${1:?usage: scripts/gpu_check.sh OUTDIR}"
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
mkdir -p "$out"
py="${PYTHON:-python3}"
export PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
status=0
if compgen -G "$root/.whl/*.whl" > /dev/null; then
    site="$(mktemp -d)"
    "$py" -m pip install -q --no-index --no-deps --no-compile --target "$site" "$root"/.whl/*.whl || status=1
    export PYTHONPATH="$PYTHONPATH:$site"
fi

"$py" - > "$out/env.txt" 2>&1 <<'PY' || { cat "$out/env.txt"; exit 1; }
import platform, torch
print("python", platform.python_version(), "torch", torch.__version__, "cuda", torch.version.cuda)
if not torch.cuda.is_available():
    raise SystemExit("no CUDA device visible: this script is for a GPU machine")
p = torch.cuda.get_device_properties(0)
print("device", p.name, f"{p.total_memory / 2**30:.1f} GiB", p.multi_processor_count, "SMs")
PY
cat "$out/env.txt"

echo "== CUDA tests"
timeout 100 "$py" -m pytest -m cuda -q -p no:cacheprovider -o addopts="" --continue-on-collection-errors \
    --junitxml="$out/cuda_tests.xml" tests 2>&1 | tee "$out/cuda_tests.log" || status=1

echo "== CUDA benchmark"
timeout 30 "$py" -m filter_basis.benchmark --device cuda --json "$out/benchmark_cuda.json" 2>&1 \
    | tee "$out/benchmark_cuda.txt" || status=1

echo "== CUDA training-step benchmark (bf16 autocast, channels_last; data share of the step time)"
timeout 70 "$py" scripts/benchmark_train.py --device cuda --amp bf16 --channels_last \
    --models resnet56,resnet56-basis,resnet56-basis-decomposed,srresnet,srresnet-basis-32-32 \
    --rounds 5 --steps 10 --warmup 3 --pipeline_batches 200 --workers 4 \
    --json "$out/train_bench_cuda.json" 2>&1 | tee "$out/train_bench_cuda.txt" || status=1

echo "== CUDA training-step benchmark with torch.compile (ResNet-56 Basis)"
timeout 60 "$py" scripts/benchmark_train.py --device cuda --amp bf16 --channels_last --compile \
    --models resnet56-basis --rounds 3 --steps 10 --warmup 3 --no_pipeline \
    --json "$out/train_bench_compile_cuda.json" 2>&1 | tee "$out/train_bench_compile_cuda.txt" || status=1

echo "== short CUDA training run (classification, synthetic data, bf16 autocast, channels_last)"
tmp="$(mktemp -d)"
timeout 30 "$py" image_classification/main.py --model ResNet --depth 20 --data_train Synthetic \
    --data_test Synthetic --n_train 512 --n_test 200 --batch_size 64 --epochs 2 --amp bf16 \
    --channels_last --dir_save "$tmp" --save gpu_check --n_threads 2 2>&1 | tee "$out/train_cuda.txt" \
    || status=1
cp "$tmp/gpu_check/results.json" "$out/train_cuda_results.json" 2>/dev/null || status=1
rm -rf "$tmp"

echo "gpu_check: exit status $status"
exit "$status"
