#!/usr/bin/env python3
"""Makes the Hugging Face reference fixtures for ferrochat's byte-level BPE tokenizer.

Writes tests/reference/fixtures/tokenizer/:
  corpus.txt          a small deterministic training corpus (generated here)
  texts.json          tricky texts: unicode, emoji, whitespace runs, contractions, numbers, specials
  ferrochat/          a tokenizer trained by ferrochat on corpus.txt (vocab 1000, ferrochat's
                      default special tokens), via `cargo run -p model --example train_tokenizer`
  ferrochat_ids.json  ids that transformers' GPT2TokenizerFast gives for texts.json, loading
                      ferrochat/vocab.json + merges.txt
  hf/                 vocab.json + merges.txt of a BPE trained by HF `tokenizers` on corpus.txt
                      (ByteLevel pre-tokenizer, GPT-2 style, vocab 1000, special <|endoftext|>)
  hf_ids.json         ids that this HF tokenizer gives for texts.json

model/tests/tokenizer_hf.rs checks ferrochat against all of these.

Run from the repository root:  python3 tests/reference/make_tokenizer_fixtures.py
Needs: pip install tokenizers transformers  (and cargo for the ferrochat part).
"""

import json
import random
import subprocess
import sys
from pathlib import Path

import tokenizers
import transformers
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import GPT2TokenizerFast

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "tests" / "reference" / "fixtures" / "tokenizer"
VOCAB_SIZE = 1000
FERROCHAT_SPECIALS = ["<|endoftext|>", "<|system|>", "<|user|>", "<|assistant|>", "<|end|>"]

TEXTS = [
    "Hello world",
    "Hello, world! How are you today?",
    " leading space and trailing space ",
    "multiple   spaces    between\twords\t\ttabs",
    "line one\nline two\n\nline four\r\nwindows line\r\n",
    "\n\n\n",
    "   ",
    "trailing newlines and spaces  \n  \n",
    "It's we're they've I'm you'll he'd can't won't",
    "IT'S WE'RE THEY'VE I'M YOU'LL HE'D",
    "numbers 0 12 345 6789 3.14159 1,000,000 2024-06-01 10:30",
    "Café naïve façade déjà vu Ünïcödé",
    "日本語のテキスト 中文 한국어 Русский текст Ελληνικά العربية עברית हिन्दी",
    "emoji 🙂 👍🏽 👨‍👩‍👧‍👦 🇫🇷 🚀✨ ❤️",
    "combining e\u0301 and a\u0308 and zero\u200bwidth and bom\ufeff",
    "nbsp\u00a0here ideographic\u3000space line\u2028sep nel\u0085x",
    "control \x00 \x01 \x1b[31m \x7f chars",
    "fn main() { let x = vec![1, 2, 3]; println!(\"{:?}\", x); }",
    "<|endoftext|>",
    "Document one.<|endoftext|>Document two.<|endoftext|>",
    "<|user|>What is 2+2?<|end|><|assistant|>It is 4.<|end|>",
    "<|system|>Be helpful.<|end|>\n<|user|> hi <|end|>",
    "not special: <|endoftext <|unknown|> |> <| end |>",
    "a" * 50 + " " + "ab" * 30,
    " ".join(["the"] * 20),
    "mixed123abc!!!???...---___***",
    "",
]


def make_corpus() -> str:
    """English-like sentences plus a sprinkle of the tricky material; no special tokens,
    because HF's trainer would count them as ordinary text and ferrochat's would not."""
    rng = random.Random(1234)
    common = (
        "the of and to in a is that for it was on with he as you do at this but his by from "
        "they we say her she or an will my one all would there their what so up out if about "
        "who get which go me when make can like time no just him know take people into year "
        "model training reward policy gradient language answer question assistant helpful "
        "café naïve déjà 日本語 中文 emoji 🙂 👍🏽 numbers 42 3.14 1,000"
    ).split()
    syllables = ("ba con de ex fi gra hor in ja ki lo men na or pre qua ri sto tion un ver wa "
                 "zen al ble cha dis er ful ing ly ment ness ous per re st th é ü ß").split()
    # Made-up words give the trainer enough distinct material for ~750 merges.
    made_up = ["".join(rng.choice(syllables) for _ in range(rng.randint(1, 4)))
               for _ in range(1500)]
    words = common + made_up
    extras = [
        "It's", "we're", "they've", "I'm", "you'll", "he'd", "  ", "\t", "\n", "\n\n", "!", "?",
        "...", "(", ")", "—", "😀😀", "\r\n",
    ]
    parts = []
    size = 0
    while size < 60_000:
        n = rng.randint(4, 16)
        sentence = []
        for _ in range(n):
            r = rng.random()
            sentence.append(words[int(r * r * len(words))])
            if rng.random() < 0.08:
                sentence.append(rng.choice(extras))
        line = " ".join(sentence).capitalize() + rng.choice([". ", ".\n", "! ", "?\n\n"])
        parts.append(line)
        size += len(line.encode())
    return "".join(parts)


def encode_all(encode) -> list:
    return [{"text": t, "ids": encode(t)} for t in TEXTS]


def write_json(path: Path, value) -> None:
    """One list item per line, so a diff of the fixtures shows which text changed."""
    lines = [json.dumps(item, ensure_ascii=False) for item in value]
    path.write_text("[\n" + ",\n".join(lines) + "\n]\n", encoding="utf-8")


def ferrochat_fixture(corpus: Path) -> None:
    """Train with ferrochat, then encode with transformers' GPT2TokenizerFast."""
    out_dir = OUT / "ferrochat"
    subprocess.run(
        ["cargo", "run", "--release", "-q", "-p", "model", "--example", "train_tokenizer", "--",
         str(corpus), str(VOCAB_SIZE), str(out_dir), *FERROCHAT_SPECIALS],
        cwd=ROOT, check=True,
    )
    vocab_file, merges_file = str(out_dir / "vocab.json"), str(out_dir / "merges.txt")
    if int(transformers.__version__.split(".")[0]) >= 5:
        # transformers 5 names the file arguments `vocab` and `merges` (paths or objects).
        tok = GPT2TokenizerFast(vocab=vocab_file, merges=merges_file)
    else:
        tok = GPT2TokenizerFast(vocab_file=vocab_file, merges_file=merges_file)
    # Mark ferrochat's special tokens so HF matches them whole (they are in vocab.json).
    tok.add_special_tokens({"additional_special_tokens": FERROCHAT_SPECIALS})
    for s in FERROCHAT_SPECIALS:
        assert tok.convert_tokens_to_ids(s) == json.loads(
            (out_dir / "vocab.json").read_text(encoding="utf-8"))[s], s
    write_json(OUT / "ferrochat_ids.json",
               encode_all(lambda t: tok.encode(t, add_special_tokens=False)))

    # from_pretrained(dir) must find the special tokens on its own, from the
    # tokenizer_config.json / special_tokens_map.json / added_tokens.json ferrochat writes.
    auto = transformers.AutoTokenizer.from_pretrained(str(out_dir))
    assert sorted(auto.all_special_tokens) == sorted(FERROCHAT_SPECIALS), auto.all_special_tokens
    for t in TEXTS:
        assert auto.encode(t, add_special_tokens=False) == tok.encode(t, add_special_tokens=False), t


def hf_fixture(corpus: Path) -> None:
    """Train a GPT-2 style byte-level BPE with HF tokenizers and record its encodings."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    # One sequence, the whole text, as ferrochat sees it (training from the file would cut
    # it into lines, and `\s+(?!\S)` splits whitespace differently at a line's end).
    tok.train_from_iterator([corpus.read_bytes().decode("utf-8")], trainer)
    hf_dir = OUT / "hf"
    hf_dir.mkdir(parents=True, exist_ok=True)
    tok.model.save(str(hf_dir))
    write_json(OUT / "hf_ids.json", encode_all(lambda t: tok.encode(t).ids))


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    corpus = OUT / "corpus.txt"
    corpus.write_bytes(make_corpus().encode("utf-8"))
    write_json(OUT / "texts.json", TEXTS)
    if "--skip-ferrochat" not in sys.argv:
        ferrochat_fixture(corpus)
    hf_fixture(corpus)
    print(f"tokenizers {tokenizers.__version__}, transformers {transformers.__version__}, "
          f"python {sys.version.split()[0]}; wrote {OUT}")


if __name__ == "__main__":
    main()
