#!/usr/bin/env python3
"""Checks that Hugging Face transformers reads what ferrochat writes (CI has no torch; run by hand).

1. `cargo run -p model --example random_checkpoint` writes a fresh ferrochat checkpoint folder.
2. `ferrochat grads` computes its loss, logits and gradients on random tokens.
3. `GPT2LMHeadModel.from_pretrained(folder)` must load it with no missing, unexpected or
   mismatched weights (and log nothing about weights), and give the same logits, loss and
   gradients.

Run from the repository root:  python3 tests/reference/check_hf_load.py
"""

import logging
import os
import subprocess
import sys
import tempfile

import torch
import transformers
from safetensors.torch import load_file
from transformers import GPT2LMHeadModel


def run(cmd):
    print("$", " ".join(cmd))
    subprocess.run(cmd, check=True)


def rel(a, b):
    """max|a - b| / max|b|"""
    return ((a - b).abs().max() / b.abs().max()).item()


class Capture(logging.Handler):
    def __init__(self):
        super().__init__()
        self.records = []

    def emit(self, record):
        self.records.append(record.getMessage())


def main():
    tmp = tempfile.mkdtemp(prefix="ferrochat-hf-check-")
    folder = os.path.join(tmp, "model")
    run(["cargo", "run", "-q", "-p", "model", "--example", "random_checkpoint", "--", folder, "3"])
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 97, (3, 12), generator=g)
    tokens = os.path.join(tmp, "tokens.txt")
    with open(tokens, "w") as f:
        for row in ids.tolist():
            f.write(" ".join(map(str, row)) + "\n")
    out = os.path.join(tmp, "grads.safetensors")
    run(["cargo", "run", "-q", "--", "grads", "--model", folder, "--tokens", tokens, "--out", out])
    ours = load_file(out)

    capture = Capture()
    transformers.logging.get_logger().addHandler(capture)
    model, info = GPT2LMHeadModel.from_pretrained(folder, output_loading_info=True)
    transformers.logging.get_logger().removeHandler(capture)
    weight_logs = [m for m in capture.records if "weight" in m.lower()]
    print("loading info:", info)
    print(f"transformers logged {len(capture.records)} lines while loading; about weights: {weight_logs}")
    ok = all(not v for v in info.values()) and not weight_logs

    model.eval()
    result = model(ids, labels=ids)
    result.loss.backward()
    logits_err = rel(ours["logits"], result.logits.detach())
    loss_err = abs(ours["loss"].item() - result.loss.item()) / result.loss.item()
    grad_err = max(rel(ours[n], p.grad) for n, p in model.named_parameters())
    tied = model.lm_head.weight.data_ptr() == model.transformer.wte.weight.data_ptr()
    print(f"lm_head tied to wte: {tied}")
    print(f"logits max err {logits_err:.3e} (of max |logit|), loss rel err {loss_err:.3e}, "
          f"worst gradient err {grad_err:.3e} (of the tensor's max |g|)")
    ok = ok and tied and logits_err < 1e-5 and loss_err < 1e-5 and grad_err < 1e-4
    print("PASS" if ok else "FAIL", f"(torch {torch.__version__}, transformers {transformers.__version__})")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
