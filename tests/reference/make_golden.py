#!/usr/bin/env python3
"""Golden fixtures for ferrochat's GPT-2, computed by PyTorch + Hugging Face transformers.

For each tiny random GPT-2 below this writes, under tests/reference/fixtures/gpt2/<name>/:

  model/                 the model as `save_pretrained(safe_serialization=True)` writes it
  model_bf16/            the same model cast to bfloat16, also by `save_pretrained`
  model_hubstyle/        the same f32 weights named as the original `gpt2` hub file names them:
                         no `transformer.` prefix, plus the `h.{i}.attn.bias` mask buffers and
                         a tied `lm_head.weight` (written with safetensors.torch.save_file)
  reference.safetensors  `logits` [B, T, V] of the tokens, and the gradient of the loss for
                         every parameter under its HF name (f32)
  reference.json         the tokens, the loss, and the losses of 10 AdamW steps

The loss is HF's `labels=ids` loss: mean next-token cross-entropy of logits[:, :-1] against
ids[:, 1:]. AdamW is torch.optim.AdamW(lr 1e-3, betas (0.9, 0.999), eps 1e-8) with weight
decay 0.1 on parameters of rank >= 2 only (two param groups), no clipping, the same batch
every step; step_losses[k] is the loss before update k+1 (so step_losses[0] == loss).

Run from the repository root:  python3 tests/reference/make_golden.py
"""

import copy
import json
import os
import shutil

import torch
import transformers
from safetensors.torch import save_file
from transformers import GPT2Config, GPT2LMHeadModel

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "gpt2")

# name, (vocab, n_positions, n_embd, n_layer, n_head), batch, seq, seed
MODELS = [
    ("tiny_a", (97, 16, 24, 2, 3), 3, 12, 1),
    ("tiny_b", (50, 8, 16, 3, 2), 4, 7, 2),
    ("tiny_c", (128, 32, 32, 1, 4), 2, 20, 3),
]
STEPS = 10
ADAMW = dict(lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.1)


def build(shape, seed):
    """A random GPT-2, dropout off; weights N(0, 0.1²) (c_proj scaled as HF does), and the
    1-D parameters (biases, layernorm gains) perturbed by N(0, 0.1²) so none is trivial."""
    vocab, n_pos, n_embd, n_layer, n_head = shape
    config = GPT2Config(
        vocab_size=vocab,
        n_positions=n_pos,
        n_embd=n_embd,
        n_layer=n_layer,
        n_head=n_head,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        initializer_range=0.1,
        bos_token_id=vocab - 1,
        eos_token_id=vocab - 1,
        attn_implementation="eager",
    )
    torch.manual_seed(seed)
    model = GPT2LMHeadModel(config)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 1:
                p.add_(0.1 * torch.randn_like(p))
    return model


def loss_of(model, ids):
    return model(ids, labels=ids).loss


def write_hubstyle(model, folder):
    """The weights under the original hub names, with the mask buffers and a tied head."""
    os.makedirs(folder)
    c = model.config
    tensors = {}
    for name, p in model.named_parameters():
        tensors[name.removeprefix("transformer.")] = p.detach().clone().contiguous()
    mask = torch.tril(torch.ones(c.n_positions, c.n_positions)).view(1, 1, c.n_positions, c.n_positions)
    for i in range(c.n_layer):
        tensors[f"h.{i}.attn.bias"] = mask.clone()
    tensors["lm_head.weight"] = model.lm_head.weight.detach().clone()
    save_file(tensors, os.path.join(folder, "model.safetensors"), metadata={"format": "pt"})
    c.to_json_file(os.path.join(folder, "config.json"))


def adamw_losses(model, ids):
    model = copy.deepcopy(model)
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": ADAMW["weight_decay"]},
            {"params": no_decay, "weight_decay": 0.0},
        ],
        lr=ADAMW["lr"],
        betas=ADAMW["betas"],
        eps=ADAMW["eps"],
    )
    losses = []
    for _ in range(STEPS):
        opt.zero_grad()
        loss = loss_of(model, ids)
        losses.append(loss.item())
        loss.backward()
        opt.step()
    return losses


def make(name, shape, batch, seq, seed):
    folder = os.path.join(OUT, name)
    shutil.rmtree(folder, ignore_errors=True)
    model = build(shape, seed)
    model.eval()
    model.save_pretrained(os.path.join(folder, "model"), safe_serialization=True)
    copy.deepcopy(model).to(torch.bfloat16).save_pretrained(
        os.path.join(folder, "model_bf16"), safe_serialization=True
    )
    write_hubstyle(model, os.path.join(folder, "model_hubstyle"))

    g = torch.Generator().manual_seed(1000 + seed)
    ids = torch.randint(0, shape[0], (batch, seq), generator=g)
    model.zero_grad()
    out = model(ids, labels=ids)
    out.loss.backward()
    tensors = {"logits": out.logits.detach().float().contiguous()}
    for pname, p in model.named_parameters():
        tensors[pname] = p.grad.detach().float().contiguous()
    save_file(tensors, os.path.join(folder, "reference.safetensors"), metadata={"format": "pt"})

    reference = {
        "batch": batch,
        "seq": seq,
        "tokens": ids.flatten().tolist(),
        "loss": out.loss.item(),
        "adamw": {"lr": ADAMW["lr"], "betas": list(ADAMW["betas"]), "eps": ADAMW["eps"],
                  "weight_decay": ADAMW["weight_decay"], "decay": "rank >= 2 only"},
        "step_losses": adamw_losses(model, ids),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
    }
    with open(os.path.join(folder, "reference.json"), "w") as f:
        f.write("{\n" + ",\n".join(f" {json.dumps(k)}: {json.dumps(v)}" for k, v in reference.items()) + "\n}\n")
    print(f"{name}: loss {reference['loss']:.6f}, step losses {reference['step_losses'][0]:.6f} -> "
          f"{reference['step_losses'][-1]:.6f}")


def main():
    torch.use_deterministic_algorithms(True)
    for name, shape, batch, seq, seed in MODELS:
        make(name, shape, batch, seq, seed)


if __name__ == "__main__":
    main()
