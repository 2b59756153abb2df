#!/usr/bin/env bash
# Side-by-side benchmark: ferrochat vs PyTorch (eager, CPU), in one invocation on one machine.
#
#   benches/against_pytorch.sh [CONFIGS...]     (default: demo small; also: gpt2)
#   STEPS=5 KERNELS=1 PYTHON=python3 benches/against_pytorch.sh demo small gpt2
#   benches/against_pytorch.sh none             (kernels only)
#
# Training step (forward + backward + AdamW, float32, random tokens, same GPT-2 shapes):
#   ferrochat: model/examples/train_step.rs   PyTorch: benches/pytorch/train_step.py
#   (transformers' GPT2LMHeadModel + torch.optim.AdamW).
# Kernels (KERNELS=1): `ferrochat kernels --reference false` vs benches/pytorch/kernel_times.py,
#   same shapes (matmul, layernorm fwd+bwd, causal attention fwd+bwd); for matmul also numpy
#   (its BLAS: OpenBLAS in the numpy wheels), on 2 threads (OPENBLAS_NUM_THREADS=2).
#
# Method: all sides on 2 threads (RAYON_NUM_THREADS=2, torch.set_num_threads(2)), run one after
# the other, never concurrently. Train step: 2 warm-up steps on both sides, then the
# median of STEPS timed steps. Kernels: 0.2 s warm-up, median of 3-1000 repeats (~1 s per
# kernel).
# Peak memory: max RSS of each whole train-step process, from GNU /usr/bin/time.
# Ratio = ferrochat speed / PyTorch speed (> 1: ferrochat faster).
#
# Needs: cargo, python3 with `pip install torch transformers numpy`, GNU time (/usr/bin/time).
# The load average is printed before and after: on a shared machine, rerun when it is high.
set -euo pipefail
cd "$(dirname "$0")/.."
CONFIGS=("$@"); [ $# -eq 0 ] && CONFIGS=(demo small)
[ "${CONFIGS[0]}" = none ] && CONFIGS=()
STEPS=${STEPS:-5}
KERNELS=${KERNELS:-1}
PY=${PYTHON:-python3}
export RAYON_NUM_THREADS=2 OMP_NUM_THREADS=2 MKL_NUM_THREADS=2 OPENBLAS_NUM_THREADS=2 TRANSFORMERS_VERBOSITY=error

"$PY" -c 'import torch, transformers, numpy' 2>/dev/null ||
  { echo "PyTorch side needs: pip install torch transformers numpy" >&2; exit 1; }
cargo build --release -q -p model --example train_step
cargo build --release -q --bin ferrochat
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT

echo "# $(date -u '+%Y-%m-%d %H:%M UTC'), $(lscpu | sed -n 's/^Model name: *//p'), nproc $(nproc)"
echo "# torch $("$PY" -c 'import torch; print(torch.__version__)'), numpy $("$PY" -c 'import numpy; print(numpy.__version__)'), threads 2, STEPS=$STEPS"
echo "# load average at start: $(cut -d" " -f1-3 /proc/loadavg) (other processes share these cores)"
echo
echo "| config | params (ferrochat / PyTorch) | ferrochat step ms | PyTorch step ms | ferrochat tok/s | PyTorch tok/s | ratio | ferrochat max RSS MiB | PyTorch max RSS MiB |"
echo "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"
for cfg in "${CONFIGS[@]+"${CONFIGS[@]}"}"; do
  # "demo: N params, B16 T128: median step X ms, Y tokens/s"
  f=$(/usr/bin/time -f %M -o "$tmp/f_rss" target/release/examples/train_step "$cfg" "$STEPS")
  # "demo: params=N step_ms=X tokens_per_s=Y"
  p=$(/usr/bin/time -f %M -o "$tmp/p_rss" "$PY" benches/pytorch/train_step.py "$cfg" "$STEPS")
  f_params=$(awk '{print $2}' <<<"$f"); f_ms=$(awk '{print $(NF-3)}' <<<"$f"); f_tok=$(awk '{print $(NF-1)}' <<<"$f")
  p_params=$(sed 's/.*params=\([0-9]*\).*/\1/' <<<"$p"); p_ms=$(sed 's/.*step_ms=\([0-9.]*\).*/\1/' <<<"$p")
  p_tok=$(sed 's/.*tokens_per_s=\([0-9.]*\).*/\1/' <<<"$p")
  awk -v c="$cfg" -v fp="$f_params" -v pp="$p_params" -v fm="$f_ms" -v pm="$p_ms" -v ft="$f_tok" -v pt="$p_tok" \
      -v fr="$(tail -1 "$tmp/f_rss")" -v pr="$(tail -1 "$tmp/p_rss")" 'BEGIN {
    printf "| %s | %.2fM / %.2fM | %s | %s | %s | %s | %.2f | %.0f | %.0f |\n", c, fp/1e6, pp/1e6, fm, pm, ft, pt, ft/pt, fr/1024, pr/1024 }'
done

echo
echo "# load average after the train steps: $(cut -d" " -f1-3 /proc/loadavg)"
[ "$KERNELS" = 1 ] || exit 0
echo
echo "| kernel | shape | ferrochat ms | ferrochat GFLOP/s (GB/s) | PyTorch ms | numpy ms | speed vs PyTorch | speed vs numpy |"
echo "| --- | --- | --- | --- | --- | --- | --- | --- |"
target/release/ferrochat kernels --reference false >"$tmp/fk"
"$PY" benches/pytorch/kernel_times.py >"$tmp/pk"
# ferrochat rows: "<kernel name...> <shape> <ms> ms <rate> <unit> ..."; the others:
# "<kernel> <shape> ms=<ms>". Speed ratio = other ms / ferrochat ms (> 1: ferrochat faster).
row() { # name, ferrochat line prefix, ferrochat shape (a word of its line), PyTorch prefix, numpy prefix
  local fms frate pms nms
  fms=$(grep "^$2" "$tmp/fk" | awk -v s="$3" '{for(i=1;i<NF;i++) if($i==s){while($(i+1)!="ms")i++; print $i; exit}}')
  frate=$(grep "^$2" "$tmp/fk" | awk -v s="$3" '{for(i=1;i<NF;i++) if($i==s){while($(i+1)!="ms")i++; print $(i+2); exit}}')
  pms=$(grep "^$4" "$tmp/pk" | sed 's/.*ms=//')
  nms=$([ -n "${5:-}" ] && grep "^$5" "$tmp/pk" | sed 's/.*ms=//' || echo "")
  awk -v n="$1" -v f="$fms" -v fr="$frate" -v p="$pms" -v q="$nms" 'BEGIN {
    if (q == "") printf "| %s | %.3f | %s | %.3f | - | %.2f | - |\n", n, f, fr, p, p/f
    else printf "| %s | %.3f | %s | %.3f | %.3f | %.2f | %.2f |\n", n, f, fr, p, q, p/f, q/f }'
}
for s in 256x256x256 512x768x768 1024x768x3072 2048x2048x2048 128x768x2304 128x768x768 128x768x3072 128x3072x768; do
  row "matmul | $s" "matmul" "$s" "matmul $s" "numpy_matmul $s"
done
row "layernorm fwd+bwd | 8192x768" "layernorm" 8192x768 "layernorm"
row "causal attention fwd+bwd | B4 H12 T1024 D64" "attention" D64 "attention"
echo
echo "# load average at the end: $(cut -d" " -f1-3 /proc/loadavg)"
