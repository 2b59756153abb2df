"""PyTorch and numpy side of the kernel comparison in benches/against_pytorch.sh.

Origin: /work/shared/bench/pytorch_kernels.py, changed to the shapes that `ferrochat kernels`
(src/cmd/kernels.rs) times, and to its method: 0.2 s of warm-up, then the median of repeats.
numpy's matmul (OpenBLAS here) is timed beside torch's (MKL) for the sgemm shapes.

Install: pip install torch numpy
Usage:   OPENBLAS_NUM_THREADS=2 python3 kernel_times.py   (not named kernels.py: transformers
         imports a module `kernels`)
Output:  lines "KERNEL SHAPE ms=X" (2 threads, float32); numpy rows start with "numpy_".
"""
import os
os.environ.setdefault("OPENBLAS_NUM_THREADS", "2")  # before numpy loads OpenBLAS
import statistics, time
import numpy as np
import torch
torch.set_num_threads(2)

def bench(f, budget=1.0, warmup=0.2):
    # Warm-up: at least one call and 0.2 s (threads started and placed on the cores, caches).
    start = time.perf_counter()
    f()
    while time.perf_counter() - start < warmup:
        f()
    times, start = [], time.perf_counter()
    while len(times) < 3 or (time.perf_counter() - start < budget and len(times) < 1000):
        t = time.perf_counter(); f(); times.append(time.perf_counter() - t)
    return statistics.median(times)

# Square sizes, then a GPT-2 (124M) block's forward GEMMs at T=128 (M = 128 rows).
SHAPES = [(256, 256, 256), (512, 768, 768), (1024, 768, 3072), (2048, 2048, 2048),
          (128, 768, 2304), (128, 768, 768), (128, 768, 3072), (128, 3072, 768)]
for (m, k, n) in SHAPES:
    a, b, c = torch.randn(m, k), torch.randn(k, n), torch.empty(m, n)
    print(f"matmul {m}x{k}x{n} ms={bench(lambda: torch.matmul(a, b, out=c))*1e3:.3f}")
    an, bn = a.numpy().copy(), b.numpy().copy()
    cn = np.empty((m, n), dtype=np.float32)
    print(f"numpy_matmul {m}x{k}x{n} ms={bench(lambda: np.matmul(an, bn, out=cn))*1e3:.3f}")

x = torch.randn(8192, 768, requires_grad=True)
ln = torch.nn.LayerNorm(768)
dy = torch.randn(8192, 768)
def lnfb():
    y = ln(x); y.backward(dy); x.grad = None; ln.zero_grad(set_to_none=True)
print(f"layernorm_fwd+bwd 8192x768 ms={bench(lnfb)*1e3:.3f}")

# Issue 6's shape: B4 H12 T1024 D64 (ferrochat: B·H = 48 heads).
q, k_, v = (torch.randn(4, 12, 1024, 64, requires_grad=True) for _ in range(3))
do = torch.randn(4, 12, 1024, 64)
def att_fb():
    y = torch.nn.functional.scaled_dot_product_attention(q, k_, v, is_causal=True)
    y.backward(do); q.grad = k_.grad = v.grad = None
print(f"attention_fwd+bwd B4H12_T1024_D64 ms={bench(att_fb)*1e3:.3f}")
