#!/usr/bin/env bash
# ferrochat vs PyTorch (and numpy for sgemm) on ONE thread, by on-CPU time: a comparison of the
# work each side does that a shared, loaded machine disturbs far less than wall-clock time
# (other processes take turns on the cores but do not add to a process's own CPU time; they
# still share caches and memory bandwidth). It does not measure the 2-thread targets of
# issue 6 — benches/against_pytorch.sh does, and needs a quiet machine.
#
#   benches/cpu_time_side_by_side.sh [CONFIGS...]     (default: demo small gpt2)
#
# Train step: on-CPU time per timed step, all threads of the process, as each side prints it
# on stderr (clock_gettime(CLOCK_PROCESS_CPUTIME_ID) / time.process_time() around the timed
# steps, after 2 warm-up steps).
# sgemm and attention: best on-CPU time of the calling thread (kernels/examples/sgemm_cpu_time.rs
# vs benches/numpy_cpu_time.py; kernels/examples/attention_cpu_time.rs vs
# benches/pytorch/attention_cpu_time.py).
set -euo pipefail
cd "$(dirname "$0")/.."
CONFIGS=("$@"); [ $# -eq 0 ] && CONFIGS=(demo small gpt2)
PY=${PYTHON:-python3}
export RAYON_NUM_THREADS=1 TORCH_THREADS=1 OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1
export TRANSFORMERS_VERBOSITY=error
cargo build --release -q -p model --example train_step
cargo build --release -q -p kernels --example sgemm_cpu_time --example attention_cpu_time
cpu_ms() { "$@" 2>&1 >/dev/null | sed -n 's/.*cpu_ms_per_step=//p'; }
echo "# $(date -u '+%Y-%m-%d %H:%M UTC'), 1 thread each, load average at start: $(cut -d" " -f1-3 /proc/loadavg)"
echo "| config | ferrochat CPU ms/step | PyTorch CPU ms/step | ratio |"
echo "| --- | --- | --- | --- |"
for cfg in "${CONFIGS[@]}"; do
  case $cfg in demo) n=20 ;; small) n=5 ;; *) n=3 ;; esac
  f=$(cpu_ms target/release/examples/train_step "$cfg" $n)
  p=$(cpu_ms "$PY" benches/pytorch/train_step.py "$cfg" $n)
  awk -v c="$cfg" -v f="$f" -v p="$p" 'BEGIN { printf "| %s | %.1f | %.1f | %.2f |\n", c, f, p, p / f }'
done
echo
target/release/examples/sgemm_cpu_time
"$PY" benches/numpy_cpu_time.py
echo
target/release/examples/attention_cpu_time fwdbwd 3
"$PY" benches/pytorch/attention_cpu_time.py 3
echo "# load average at the end: $(cut -d" " -f1-3 /proc/loadavg)"
