"""PyTorch side of benches/against_pytorch.sh: one GPT-2 training step (forward, backward, AdamW).

Origin: /work/shared/bench/pytorch_train_step.py (the perf-anchor script), changed to time a
fixed number of steps and report the median (as ferrochat's `train_step` example does) instead
of the mean over 10 s. Configs are identical to model/examples/train_step.rs.

Install: pip install torch transformers
Usage:   python3 train_step.py CONFIG [STEPS]   (CONFIG: demo | small | gpt2; STEPS default 5)
Output:  one line "CONFIG: params=N step_ms=X tokens_per_s=Y" (2 threads, float32, eager).
"""
import os, statistics, sys, time
import torch
from transformers import GPT2Config, GPT2LMHeadModel

CONFIGS = {
    # name: (vocab, layers, heads, embd, block, batch)
    "demo": (512, 4, 4, 128, 128, 16),
    "small": (8192, 6, 6, 384, 256, 8),
    "gpt2": (50257, 12, 12, 768, 64, 4),
}

def main(name, steps):
    torch.set_num_threads(int(os.environ.get("TORCH_THREADS", "2")))
    torch.manual_seed(0)
    v, l, h, e, t, b = CONFIGS[name]
    cfg = GPT2Config(vocab_size=v, n_layer=l, n_head=h, n_embd=e, n_positions=t,
                     resid_pdrop=0, embd_pdrop=0, attn_pdrop=0)
    model = GPT2LMHeadModel(cfg)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x = torch.randint(0, v, (b, t))
    def step():
        out = model(x, labels=x)
        out.loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    for _ in range(2):  # warm-up
        step()
    times = []
    cpu0 = time.process_time()  # all threads of the process
    for _ in range(steps):
        t0 = time.perf_counter(); step(); times.append(time.perf_counter() - t0)
    cpu_ms = (time.process_time() - cpu0) / steps * 1e3
    dt = statistics.median(times)
    params = sum(p.numel() for p in model.parameters())
    print(f"{name}: params={params} step_ms={dt*1000:.1f} tokens_per_s={b*t/dt:.0f}")
    # On-CPU time per timed step, all threads (on stderr: the line above is parsed).
    print(f"{name}: cpu_ms_per_step={cpu_ms:.1f}", file=sys.stderr)

if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "demo", int(sys.argv[2]) if len(sys.argv) > 2 else 5)
