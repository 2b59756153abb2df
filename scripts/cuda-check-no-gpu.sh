#!/usr/bin/env bash
# Checks the CUDA kernels on a machine with no GPU and no CUDA toolkit
# (docs: /work/shared/reference/cuda-without-gpu.md in the project's shared notes).
#
#   1. installs NVRTC and ptxas from PyPI wheels into a venv (about 130 MB, once);
#   2. builds kernels with `--features cuda` and writes every kernel source's PTX for each
#      target arch (example `cuda_ptx`, NVRTC through cudarc);
#   3. assembles each PTX with `ptxas -arch=<arch> -v` and FAILS if one does not assemble, or
#      if any kernel spills registers or has a local-memory stack frame;
#   4. prints registers / shared memory / stack / spills per kernel and arch;
#   5. runs scripts/cuda-fragment-emulator.py (numpy, installed into the same venv): the
#      tensor-core kernels' index arithmetic re-run on emulated ldmatrix / mma / cp.async,
#      compared with a numpy reference.
#
# Environment: CUDA_CHECK_VENV (default target/cuda-check-venv), PYTHON (default python3).
# No numerical check happens here: that needs a GPU.
set -euo pipefail
cd "$(dirname "$0")/.."

NVRTC_WHEEL="nvidia-cuda-nvrtc-cu12==12.9.86"
NVCC_WHEEL="nvidia-cuda-nvcc-cu12==12.9.86"
VENV="${CUDA_CHECK_VENV:-target/cuda-check-venv}"
PY="${PYTHON:-python3}"

echo "== CUDA wheels ($NVRTC_WHEEL, $NVCC_WHEEL) in $VENV"
if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "$NVRTC_WHEEL" "$NVCC_WHEEL"
SITE="$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
NVRTC_LIB="$SITE/nvidia/cuda_nvrtc/lib"
PTXAS="$SITE/nvidia/cuda_nvcc/bin/ptxas"
[ -f "$NVRTC_LIB/libnvrtc.so.12" ] || { echo "FAIL: no libnvrtc.so.12 in $NVRTC_LIB"; exit 1; }
[ -x "$PTXAS" ] || { echo "FAIL: no ptxas at $PTXAS"; exit 1; }
"$PTXAS" --version | tail -1

echo "== NVRTC: PTX of every kernel source"
OUT="target/cuda-ptx"
rm -rf "$OUT"
mkdir -p "$OUT"
LD_LIBRARY_PATH="$NVRTC_LIB${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" \
  cargo run --quiet -p kernels --features cuda --example cuda_ptx -- "$OUT"

echo "== ptxas: assemble, count registers, refuse spills and stack frames"
shopt -s nullglob
ptx_files=("$OUT"/*.ptx)
[ ${#ptx_files[@]} -gt 0 ] || { echo "FAIL: no PTX written"; exit 1; }
fail=0
printf '%-32s %-6s %5s %8s %6s %7s %7s\n' kernel arch regs smem_B stack spill_st spill_ld
for ptx in "${ptx_files[@]}"; do
  base="$(basename "$ptx" .ptx)"      # <source>.<arch>
  arch="${base##*.}"
  log="$OUT/$base.ptxas.log"
  if ! "$PTXAS" -arch="$arch" -v "$ptx" -o "$OUT/$base.cubin" >"$log" 2>&1; then
    echo "FAIL: ptxas could not assemble $ptx:"
    cat "$log"
    fail=1
    continue
  fi
  # ptxas -v prints, per kernel: "Compiling entry function 'K' for 'sm_XX'", then
  # "N bytes stack frame, N bytes spill stores, N bytes spill loads", then
  # "Used N registers, ... N bytes smem, ..." (smem omitted when the kernel uses none).
  if ! awk -v arch="$arch" '
    /Compiling entry function/ { match($0, /function .[^'"'"']*/); k = substr($0, RSTART + 10, RLENGTH - 10); n++ }
    /stack frame/ { stack = $1; st = $5; ld = $9 }
    /Used [0-9]+ registers/ {
      regs = $0; sub(/.*Used /, "", regs); sub(/ registers.*/, "", regs)
      smem = 0
      if (match($0, /[0-9]+ bytes smem/)) { smem = substr($0, RSTART, RLENGTH); sub(/ .*/, "", smem) }
      printf "%-32s %-6s %5s %8s %6s %7s %7s\n", k, arch, regs, smem, stack, st, ld
      if (stack != 0 || st != 0 || ld != 0) { printf "FAIL: %s (%s) uses local memory (stack %s B, spill stores %s B, spill loads %s B)\n", k, arch, stack, st, ld; bad = 1 }
    }
    END { if (n == 0) { print "FAIL: ptxas reported no kernels"; bad = 1 } exit bad }
  ' "$log"; then
    fail=1
  fi
done

echo "== tensor-core index arithmetic on emulated ldmatrix / mma.sync / cp.async (no GPU)"
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check numpy
if ! "$VENV/bin/python" scripts/cuda-fragment-emulator.py > "$OUT/emulator.log" 2>&1; then
  echo "FAIL: scripts/cuda-fragment-emulator.py:"
  cat "$OUT/emulator.log"
  fail=1
else
  tail -1 "$OUT/emulator.log"
fi

if [ "$fail" -ne 0 ]; then
  echo "== CUDA check FAILED"
  exit 1
fi
echo "== CUDA check passed: ${#ptx_files[@]} PTX files, no spills, no stack frames"
