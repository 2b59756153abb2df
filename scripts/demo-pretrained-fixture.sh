#!/usr/bin/env bash
# Remakes rlhf/tests/fixtures/demo_pretrained: the demo preset's pretrained model (world 0,
# seed 0), which rlhf/tests/ppo_beats_sft.rs starts from. Pretraining it takes ~2 minutes of
# the demo's 5 on 2 cores, more than a CI test can spend next to the rest of the recipe, so
# the test starts from this copy, as InstructGPT starts from GPT-3. The pipeline is
# deterministic: running this again rewrites the fixture byte for byte (`git status` shows no
# change) unless pretraining, the corpus or the tokenizer changed; then commit the new fixture
# together with that change.
set -euo pipefail
cd "$(dirname "$0")/.."
run=$(mktemp -d)
trap 'rm -rf "$run"' EXIT
# The whole pipeline (the β = 0 run left out): its pretrain folder is the demo's.
cargo run --release -- pipeline --out "$run/demo" --no-beta-zero
dest=rlhf/tests/fixtures/demo_pretrained
rm -rf "$dest"
mkdir -p "$dest"
# The weights and the tokenizer; not the optimizer state.
for f in config.json model.safetensors vocab.json merges.txt \
         added_tokens.json special_tokens_map.json tokenizer_config.json; do
  cp "$run/demo/pretrain/$f" "$dest/"
done
# The loss log (the report plots it), without its one timing field, so that a rerun rewrites
# the fixture byte for byte.
sed -E 's/,"tokens_per_sec":[^,}]*//' "$run/demo/pretrain/metrics.jsonl" > "$dest/metrics.jsonl"
echo "wrote $dest"
