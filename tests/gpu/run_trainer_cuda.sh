#!/usr/bin/env bash
# One-shot GPU check of the reference trainer: CUDA with bf16 autocast, no S3, no Airflow, no network.
#
# Run from the repository root on a GPU machine (Python 3.12 there; needs torch, numpy and
# scikit-learn; onnx/onnxruntime are optional):
#   bash tests/gpu/run_trainer_cuda.sh
# Outputs land under $OUT (default: a fresh temporary folder). Runtime well under 3 minutes.
# Without scikit-learn, copy sklearn's datasets/data/digits.csv.gz to tests/gpu/digits.csv.gz first.
set -uo pipefail

cd "$(dirname "$0")/../.." || exit 2
PYTHON=${PYTHON:-python3}
OUT=${OUT:-$(mktemp -d)}
mkdir -p "$OUT"
# Checkpoints stay outside $OUT: the wide model's are ~50 MB each and nothing needs them back.
CKPT=$(mktemp -d)
trap 'rm -rf "$CKPT"' EXIT
export PYTHONPATH="$PWD/include${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONDONTWRITEBYTECODE=1
status=0

section() { printf '\n===== %s =====\n' "$*"; }

section "nvidia-smi"
nvidia-smi || echo "nvidia-smi failed (exit $?)"

section "python and packages"
"$PYTHON" --version
"$PYTHON" -c "import torch; print(torch.__version__, torch.cuda.is_available())" || {
  echo "FATAL: torch is not importable with $PYTHON"; exit 2; }
"$PYTHON" - <<'EOF'
import importlib
import torch
for name in ("numpy", "sklearn", "onnx", "onnxruntime", "boto3"):
    try:
        print(f"{name:12s}", getattr(importlib.import_module(name), "__version__", "?"))
    except ImportError:
        print(f"{name:12s} missing")
if torch.cuda.is_available():
    print("device      ", torch.cuda.get_device_name(0), "capability", torch.cuda.get_device_capability(0))
    print("bf16        ", torch.cuda.is_bf16_supported(), "| torch CUDA", torch.version.cuda)
EOF

if ! "$PYTHON" -c "import sklearn" 2>/dev/null; then
  if [[ -f tests/gpu/digits.csv.gz ]]; then
    export DIGITS_CSV="$PWD/tests/gpu/digits.csv.gz"
    echo "scikit-learn missing: using DIGITS_CSV=$DIGITS_CSV"
  else
    echo "FATAL: scikit-learn missing and tests/gpu/digits.csv.gz absent"; exit 2
  fi
fi
ONNX_FLAG=()
"$PYTHON" -c "import onnx" 2>/dev/null || { ONNX_FLAG=(--skip-onnx); echo "onnx missing: exporting no model.onnx"; }

train() {  # train NAME ARGS... : one trainer run into $OUT/NAME; full log in $OUT/NAME.log
  local name=$1; shift
  section "trainer: $name ($*)"
  local started=$SECONDS rc
  RUN_ID="gpu-check" MODEL_NAME="digits-mlp" MODEL_VERSION="$name" CHECKPOINT_URI="$CKPT/$name" \
    timeout 150 "$PYTHON" -m mlops.trainer --output-dir "$OUT/$name" "$@" >>"$OUT/$name.log" 2>&1
  rc=$?
  head -n 2 "$OUT/$name.log"; echo "..."; tail -n 3 "$OUT/$name.log"
  echo "exit $rc after $((SECONDS - started)) s"
  [[ -f "$OUT/$name/metrics.json" ]] && cat "$OUT/$name/metrics.json"
  return $rc
}

# 1. The reference configuration on CUDA with bf16: accuracy and the ONNX export.
train cuda-bf16-reference --device cuda --precision bf16 --epochs 20 --learning-rate 0.01 \
  --batch-size 32 --checkpoint-every 10 "${ONNX_FLAG[@]}" || status=1
# 2. Throughput and memory: a wider model and big batches for long enough to amortise warm-up.
train cuda-bf16-throughput --device cuda --precision bf16 --epochs 300 --learning-rate 0.001 \
  --batch-size 512 --hidden-units 2048 --checkpoint-every 100 --skip-onnx || status=1
# 3. Same throughput configuration on CUDA in fp32, and on the CPU, for comparison.
train cuda-fp32-throughput --device cuda --precision fp32 --epochs 300 --learning-rate 0.001 \
  --batch-size 512 --hidden-units 2048 --checkpoint-every 100 --skip-onnx || status=1
train cpu-fp32-throughput --device cpu --precision fp32 --epochs 5 --learning-rate 0.001 \
  --batch-size 512 --hidden-units 2048 --checkpoint-every 0 --skip-onnx || status=1
# 4. Resume on CUDA: the same run asked for 30 epochs continues from its checkpoint at epoch 20.
train cuda-bf16-reference --device cuda --precision bf16 --epochs 30 --learning-rate 0.01 \
  --batch-size 32 --checkpoint-every 10 "${ONNX_FLAG[@]}" || status=1
grep -E "resumed from epoch" "$OUT/cuda-bf16-reference.log" || { echo "PROBLEM: no resume"; status=1; }

# 5. Data-parallel scaling: the same global batch on 1 GPU and on every GPU of the machine
#    (torchrun --nproc-per-node=N, DDP over NCCL). Throughput and the ratio are in the summary.
NGPU=$("$PYTHON" -c "import torch; print(torch.cuda.device_count())")
echo "GPUs visible: $NGPU"
SCALE_ARGS=(--device cuda --precision bf16 --epochs 200 --learning-rate 0.001 --batch-size 1680
  --hidden-units 4096 --checkpoint-every 100 --skip-onnx)  # 1680: divisible by every count 1-8
train ddp-gpus-1 "${SCALE_ARGS[@]}" || status=1
if (( NGPU > 1 )); then
  train "ddp-gpus-$NGPU" "${SCALE_ARGS[@]}" --nproc-per-node "$NGPU" || status=1
  grep -E "data-parallel over $NGPU processes \(nccl\)" "$OUT/ddp-gpus-$NGPU.log" \
    || { echo "PROBLEM: no NCCL data-parallel run"; status=1; }
  # Resume on every rank from rank 0's checkpoint: 200 more epochs continue from epoch 200.
  train "ddp-gpus-$NGPU" "${SCALE_ARGS[@]/200/400}" --nproc-per-node "$NGPU" || status=1
  grep -E "resumed from epoch 200" "$OUT/ddp-gpus-$NGPU.log" || { echo "PROBLEM: no DDP resume"; status=1; }
else
  echo "one GPU: data-parallel scaling not measured (NCCL needs one GPU per rank)"
fi

section "summary"
"$PYTHON" tests/gpu/check_outputs.py "$OUT" || status=1
echo "outputs in $OUT"
exit $status
