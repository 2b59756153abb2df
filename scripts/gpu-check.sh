#!/usr/bin/env bash
# Checks the CUDA backend ON A MACHINE WITH A GPU (sm_80 or newer): the numerical tests of every
# kernel against the CPU reference, then the kernel benchmark. Meant to finish in under
# 8 minutes on an A100/H100/H200. Never run on the machine it was written on (no GPU there).
#
#   1. finds NVRTC: a CUDA toolkit's libnvrtc if one is on the library path, else the PyPI
#      wheel nvidia-cuda-nvrtc-cu12 in a venv (as scripts/cuda-check-no-gpu.sh does);
#   2. builds kernels with --features cuda,cublas (release) and runs kernels/tests/cuda.rs,
#      then the GPU GPT's tests model/tests/cuda_gpt.rs (forward, every gradient and AdamW
#      steps against the CPU model, f32 and bf16) and the GPU PPO iteration's
#      rlhf/tests/cuda_ppo.rs (one PPO iteration against the CPU PpoTrainer, f32 and bf16);
#      every test must really run: a
#      "skipped (no GPU)" line fails this script;
#   3. times PyTorch's scaled_dot_product_attention at B8 H12 T1024 D64 (f32 and bf16) when a
#      Python with torch and CUDA is found (PYTHON, default python3);
#   4. runs the benchmark example cuda_bench (bf16 GEMM 4096^3 beside cuBLAS, attention beside
#      SDPA, the memory-bound kernels in GB/s, % of the card's peak) and the GPT-2 124M
#      training-step benchmark cuda_gpt_bench (B4 x T64 and T1024, bf16; T64 f32: ms/step and
#      tokens/s), and prints both tables last.
#
# Full results: $RESULTS (default target/gpu-check-results.md): GPU, driver, test log, table.
set -euo pipefail
cd "$(dirname "$0")/.."

RESULTS="${RESULTS:-target/gpu-check-results.md}"
PY="${PYTHON:-python3}"
VENV="${CUDA_CHECK_VENV:-target/cuda-check-venv}"
mkdir -p "$(dirname "$RESULTS")"
LOG="$(mktemp)"
trap 'rm -f "$LOG"' EXIT
start=$(date +%s)

echo "== GPU"
if ! command -v nvidia-smi >/dev/null || ! nvidia-smi -L; then
  echo "FAIL: no GPU visible (nvidia-smi). This script needs one; see scripts/cuda-check-no-gpu.sh"
  exit 1
fi
GPU_LINE="$(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | head -1)"

echo "== NVRTC"
if ! ldconfig -p 2>/dev/null | grep -q 'libnvrtc.so' && [ -z "${CUDA_HOME:-}" ]; then
  [ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "nvidia-cuda-nvrtc-cu12==12.9.86"
  SITE="$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
  export LD_LIBRARY_PATH="$SITE/nvidia/cuda_nvrtc/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  echo "using the wheel's NVRTC in $SITE/nvidia/cuda_nvrtc/lib"
elif [ -n "${CUDA_HOME:-}" ]; then
  export LD_LIBRARY_PATH="$CUDA_HOME/lib64${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
fi

echo "== build (release, --features cuda,cublas)"
FEATURES="cuda,cublas"
if ! cargo build --release -p kernels --features "$FEATURES" --examples --tests 2>&1 | tail -3; then
  echo "cuBLAS feature did not build; falling back to --features cuda"
  FEATURES="cuda"
  cargo build --release -p kernels --features "$FEATURES" --examples --tests
fi
cargo build --release -p model --features cuda --examples --tests 2>&1 | tail -3 || echo "FAIL: the GPU GPT (model --features cuda) did not build"
cargo build --release -p rlhf --features cuda --tests 2>&1 | tail -3 || echo "FAIL: the GPU PPO step (rlhf --features cuda) did not build"

echo "== GPU tests (kernels/tests/cuda.rs)"
set +e
cargo test --release -p kernels --features "$FEATURES" --test cuda -- --nocapture --test-threads=1 2>&1 | tee "$LOG"
test_rc=${PIPESTATUS[0]}
echo "== GPU GPT tests (model/tests/cuda_gpt.rs)"
cargo test --release -p model --features cuda --test cuda_gpt -- --nocapture --test-threads=1 2>&1 | tee -a "$LOG"
[ "${PIPESTATUS[0]}" -eq 0 ] || test_rc=1
echo "== GPU PPO tests (rlhf/tests/cuda_ppo.rs)"
cargo test --release -p rlhf --features cuda --test cuda_ppo -- --nocapture --test-threads=1 2>&1 | tee -a "$LOG"
[ "${PIPESTATUS[0]}" -eq 0 ] || test_rc=1
set -e
if grep -q 'skipped (no GPU)' "$LOG"; then
  echo "FAIL: the GPU tests skipped themselves although a GPU is visible:"
  grep 'skipped (no GPU)' "$LOG"
  test_rc=1
fi

echo "== PyTorch SDPA (B8 H12 T1024 D64, causal)"
SDPA_F32=""; SDPA_BF16=""
if "$PY" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
  read -r SDPA_F32 SDPA_BF16 < <("$PY" - <<'PYEOF'
import torch, torch.nn.functional as F
def bench(dtype):
    q, k, v = (torch.randn(8, 12, 1024, 64, device="cuda", dtype=dtype) for _ in range(3))
    for _ in range(3):
        F.scaled_dot_product_attention(q, k, v, is_causal=True)
    torch.cuda.synchronize()
    s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    n = 50
    s.record()
    for _ in range(n):
        F.scaled_dot_product_attention(q, k, v, is_causal=True)
    e.record()
    torch.cuda.synchronize()
    return s.elapsed_time(e) / n
print(f"{bench(torch.float32):.4f} {bench(torch.bfloat16):.4f}")
PYEOF
  )
  echo "torch $("$PY" -c 'import torch; print(torch.__version__)'): f32 ${SDPA_F32} ms, bf16 ${SDPA_BF16} ms"
else
  echo "no Python with torch + CUDA ($PY): attention is reported without the SDPA comparison"
fi

echo "== benchmark (example cuda_bench)"
TABLE="$(mktemp)"
bench_rc=0
TORCH_SDPA_MS_F32="$SDPA_F32" TORCH_SDPA_MS_BF16="$SDPA_BF16" \
  cargo run --release --quiet -p kernels --features "$FEATURES" --example cuda_bench -- "$TABLE" \
  || bench_rc=$?
[ "$bench_rc" -eq 0 ] || echo "(the benchmark failed with exit code $bench_rc)" > "$TABLE"

echo "== GPT-2 124M training step (example cuda_gpt_bench)"
GPT_TABLE="$(mktemp)"
gpt_rc=0
cargo run --release --quiet -p model --features cuda --example cuda_gpt_bench -- "$GPT_TABLE" \
  || gpt_rc=$?
[ "$gpt_rc" -eq 0 ] || echo "(the GPT-2 step benchmark failed with exit code $gpt_rc)" >> "$GPT_TABLE"

{
  echo "# scripts/gpu-check.sh — $(date -u +%Y-%m-%dT%H:%MZ)"
  echo
  echo "GPU: $GPU_LINE; commit $(git rev-parse --short HEAD 2>/dev/null || echo '?'); features $FEATURES"
  echo "GPU tests: $([ "$test_rc" -eq 0 ] && echo passed || echo FAILED)"
  echo
  cat "$TABLE"
  echo
  cat "$GPT_TABLE"
  echo
  echo '## test log'
  echo '```'
  cat "$LOG"
  echo '```'
} > "$RESULTS"
rm -f "$TABLE" "$GPT_TABLE"

echo
echo "== done in $(( $(date +%s) - start )) s; full results in $RESULTS"
echo "GPU tests: $([ "$test_rc" -eq 0 ] && echo passed || echo FAILED)"
sed -n '/^| kernel/,$p' "$RESULTS" | sed '/^$/q'
[ "$bench_rc" -eq 0 ] || echo "benchmark: FAILED (exit code $bench_rc)"
sed -n '/^| training step/,$p' "$RESULTS" | sed '/^$/q'
[ "$gpt_rc" -eq 0 ] || echo "GPT-2 step benchmark: FAILED (exit code $gpt_rc)"
[ "$test_rc" -eq 0 ] && [ "$bench_rc" -eq 0 ] && [ "$gpt_rc" -eq 0 ]
