"""numpy (OpenBLAS) sgemm on one thread, timed by on-CPU time of the calling thread, beside
kernels/examples/sgemm_cpu_time.rs (same shapes, same method: best of repeats).

Usage: python3 benches/numpy_cpu_time.py [iters]
"""
import os, sys
os.environ["OPENBLAS_NUM_THREADS"] = "1"  # before numpy loads OpenBLAS: runs on this thread
import time
import numpy as np

iters = int(sys.argv[1]) if len(sys.argv) > 1 else 10
for (m, k, n) in [(256, 256, 256), (1024, 768, 3072), (2048, 2048, 2048), (128, 768, 2304),
                  (128, 768, 768), (128, 768, 3072), (128, 3072, 768), (2048, 128, 384),
                  (128, 2048, 384)]:
    rng = np.random.default_rng(0)
    a = rng.standard_normal((m, k), dtype=np.float32)
    b = rng.standard_normal((k, n), dtype=np.float32)
    c = np.empty((m, n), dtype=np.float32)
    flops = 2.0 * m * k * n
    reps = max(iters, int(2e9 / flops))
    np.matmul(a, b, out=c)
    wall = cpu = float("inf")
    for _ in range(reps):
        c0, t0 = time.thread_time(), time.perf_counter()
        np.matmul(a, b, out=c)
        wall = min(wall, time.perf_counter() - t0); cpu = min(cpu, time.thread_time() - c0)
    print(f"numpy {m}x{k}x{n} (1 thread): best wall {wall*1e3:.3f} ms ({flops/wall/1e9:.1f} GFLOP/s), "
          f"best cpu {cpu*1e3:.3f} ms ({flops/cpu/1e9:.1f} GFLOP/s)")
