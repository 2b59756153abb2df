"""PyTorch's causal SDPA forward+backward at B4 H12 T1024 D64 on ONE thread, timed by on-CPU
time of the calling thread (best of repeats), beside kernels/examples/attention_cpu_time.rs
(`fwdbwd`): a comparison a loaded machine disturbs far less than wall time.

Usage: python3 benches/pytorch/attention_cpu_time.py [iters]
"""
import sys, time
import torch
torch.set_num_threads(1)  # intra-op work on this thread, so thread_time counts all of it

iters = int(sys.argv[1]) if len(sys.argv) > 1 else 5
q, k, v = (torch.randn(4, 12, 1024, 64, requires_grad=True) for _ in range(3))
do = torch.randn(4, 12, 1024, 64)
def fb():
    y = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
    y.backward(do); q.grad = k.grad = v.grad = None
fb()
wall = cpu = float("inf")
for _ in range(iters):
    c0, t0 = time.thread_time(), time.perf_counter(); fb()
    wall = min(wall, time.perf_counter() - t0); cpu = min(cpu, time.thread_time() - c0)
flops = 3.5 * 2.0 * 48 * 64 * 1024 * 1025  # the causal count of attention_cpu_time.rs
print(f"torch sdpa fwdbwd (1 thread): best wall {wall*1e3:.1f} ms ({flops/wall/1e9:.1f} GFLOP/s), "
      f"best cpu {cpu*1e3:.1f} ms ({flops/cpu/1e9:.1f} GFLOP/s)")
