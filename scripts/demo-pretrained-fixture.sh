#!/usr/bin/env bash
# Remakes rlhf/tests/fixtures/demo_pretrained: the demo preset's pretrained model (world 0,
# seed 0), which rlhf/tests/ppo_beats_sft.rs starts from. Pretraining it takes ~2 minutes of
# the demo's 5 on 2 cores, more than a CI test can spend next to the rest of the recipe, so
# the test starts from this copy, as InstructGPT starts from GPT-3. The pipeline is
# deterministic: on the machine that made the fixture, running this again rewrites it byte
# for byte (`git status` shows no change) unless pretraining, the corpus or the tokenizer
# changed; then commit the new fixture together with that change.
set -euo pipefail
cd "$(dirname "$0")/.."
run=$(mktemp -d)
trap 'rm -rf "$run"' EXIT
# The whole pipeline (the β = 0 run left out): its pretrain folder is the demo's.
cargo run --release -- pipeline --out "$run/demo" --no-beta-zero
dest=rlhf/tests/fixtures/demo_pretrained
rm -rf "$dest"
mkdir -p "$dest"
# The weights, the tokenizer and the loss log (the report plots it); not the optimizer state.
for f in config.json model.safetensors metrics.jsonl vocab.json merges.txt \
         added_tokens.json special_tokens_map.json tokenizer_config.json; do
  cp "$run/demo/pretrain/$f" "$dest/"
done
echo "wrote $dest"
