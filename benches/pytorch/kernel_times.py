"""PyTorch side of the kernel comparison in benches/against_pytorch.sh.

Origin: /work/shared/bench/pytorch_kernels.py, changed to the shapes that `ferrochat kernels`
(src/cmd/kernels.rs) times, and to its method: one warm-up, then the median of repeats.

Install: pip install torch
Usage:   python3 kernel_times.py   (not named kernels.py: transformers imports a module `kernels`)
Output:  lines "KERNEL SHAPE ms=X" (2 threads, float32).
"""
import statistics, time
import torch
torch.set_num_threads(2)

def bench(f, budget=1.0):
    f()  # warm-up
    times, start = [], time.perf_counter()
    while len(times) < 3 or (time.perf_counter() - start < budget and len(times) < 50):
        t = time.perf_counter(); f(); times.append(time.perf_counter() - t)
    return statistics.median(times)

for (m, k, n) in [(256, 256, 256), (512, 768, 768), (1024, 768, 3072)]:
    a, b = torch.randn(m, k), torch.randn(k, n)
    print(f"matmul {m}x{k}x{n} ms={bench(lambda: a @ b)*1e3:.3f}")

x = torch.randn(8192, 768, requires_grad=True)
ln = torch.nn.LayerNorm(768)
dy = torch.randn(8192, 768)
def lnfb():
    y = ln(x); y.backward(dy); x.grad = None; ln.zero_grad(set_to_none=True)
print(f"layernorm_fwd+bwd 8192x768 ms={bench(lnfb)*1e3:.3f}")

# ferrochat: BH=12 heads of T=512, D=64 -> PyTorch B=1 H=12.
q, k_, v = (torch.randn(1, 12, 512, 64, requires_grad=True) for _ in range(3))
do = torch.randn(1, 12, 512, 64)
def att_fb():
    y = torch.nn.functional.scaled_dot_product_attention(q, k_, v, is_causal=True)
    y.backward(do); q.grad = k_.grad = v.grad = None
print(f"attention_fwd+bwd BH12_T512_D64 ms={bench(att_fb)*1e3:.3f}")
