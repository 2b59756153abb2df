//! Saving and loading GPT-2 style tokenizer files.
//!
//! A tokenizer directory holds `vocab.json` (token → id) and `merges.txt` (`#version: 0.2`,
//! then one `left right` merge per line in rank order), as GPT-2 and Hugging Face use.
//! `added_tokens.json`, `special_tokens_map.json` and `tokenizer_config.json` name the
//! special tokens so that `AutoTokenizer.from_pretrained(dir)` keeps each one whole.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use super::byte_level::{byte_to_char, token_string_to_bytes};
use super::{Result, Tokenizer, TokenizerError, END_OF_TEXT};

const VOCAB: &str = "vocab.json";
const MERGES: &str = "merges.txt";
const ADDED_TOKENS: &str = "added_tokens.json";
const SPECIAL_TOKENS_MAP: &str = "special_tokens_map.json";
const TOKENIZER_CONFIG: &str = "tokenizer_config.json";

impl Tokenizer {
    /// Writes the tokenizer to `dir` (created if needed). Each file is written to a temporary
    /// file in `dir` and renamed into place, so a crash never leaves a half-written file.
    pub fn save(&self, dir: impl AsRef<Path>) -> Result<()> {
        let dir = dir.as_ref();
        fs::create_dir_all(dir).map_err(|source| io_error(dir, source))?;
        write_atomic(&dir.join(VOCAB), &self.vocab_json())?;
        write_atomic(&dir.join(MERGES), &self.merges_txt())?;
        let added: serde_json::Map<String, Value> = self
            .specials
            .iter()
            .zip(&self.special_ids)
            .map(|(s, &id)| (s.clone(), json!(id)))
            .collect();
        write_atomic(&dir.join(ADDED_TOKENS), &pretty(&Value::Object(added)))?;
        write_atomic(
            &dir.join(SPECIAL_TOKENS_MAP),
            &pretty(&self.special_tokens_map()),
        )?;
        write_atomic(
            &dir.join(TOKENIZER_CONFIG),
            &pretty(&self.tokenizer_config()),
        )?;
        Ok(())
    }

    /// `vocab.json` with entries in id order (serde_json's map would sort them by key).
    fn vocab_json(&self) -> String {
        let entries: Vec<String> = self
            .tokens
            .iter()
            .enumerate()
            .map(|(id, t)| format!("{}: {id}", Value::String(t.clone())))
            .collect();
        format!("{{{}}}\n", entries.join(", "))
    }

    fn merges_txt(&self) -> String {
        let mut out = String::from("#version: 0.2\n");
        for &(a, b) in &self.merges {
            out.push_str(&format!(
                "{} {}\n",
                self.tokens[a as usize], self.tokens[b as usize]
            ));
        }
        out
    }

    /// GPT-2 uses `<|endoftext|>` as bos, eos and unk; the other specials are additional.
    fn special_tokens_map(&self) -> Value {
        let mut map = serde_json::Map::new();
        if self.specials.iter().any(|s| s == END_OF_TEXT) {
            for key in ["bos_token", "eos_token", "unk_token"] {
                map.insert(key.into(), json!(END_OF_TEXT));
            }
        }
        let others: Vec<&String> = self.specials.iter().filter(|s| *s != END_OF_TEXT).collect();
        map.insert("additional_special_tokens".into(), json!(others));
        Value::Object(map)
    }

    fn tokenizer_config(&self) -> Value {
        let decoder: serde_json::Map<String, Value> = self
            .specials
            .iter()
            .zip(&self.special_ids)
            .map(|(s, id)| {
                let entry = json!({"content": s, "lstrip": false, "rstrip": false,
                    "normalized": false, "single_word": false, "special": true});
                (id.to_string(), entry)
            })
            .collect();
        let mut config = self.special_tokens_map();
        let obj = config
            .as_object_mut()
            .expect("special_tokens_map is an object");
        obj.insert("tokenizer_class".into(), json!("GPT2Tokenizer"));
        obj.insert("add_prefix_space".into(), json!(false));
        obj.insert("model_max_length".into(), json!(1024));
        obj.insert("added_tokens_decoder".into(), Value::Object(decoder));
        config
    }

    /// Reads a tokenizer from `dir`: `vocab.json` and `merges.txt`, and `added_tokens.json`
    /// if present to tell which tokens are special. Without it, GPT-2's `<|endoftext|>` is
    /// special if the vocabulary has it. Any unreadable or malformed file is an error that
    /// names the file and the line or entry.
    pub fn load(dir: impl AsRef<Path>) -> Result<Tokenizer> {
        let dir = dir.as_ref();
        let vocab_path = dir.join(VOCAB);
        let mut vocab: HashMap<String, u32> = read_json(&vocab_path)?;
        let added_path = dir.join(ADDED_TOKENS);
        let special_names: Vec<String> = if added_path.exists() {
            let added: HashMap<String, u32> = read_json(&added_path)?;
            let mut added: Vec<(String, u32)> = added.into_iter().collect();
            added.sort_by_key(|&(_, id)| id);
            for (name, id) in &added {
                match vocab.insert(name.clone(), *id) {
                    Some(old) if old != *id => {
                        return Err(malformed(
                            &added_path,
                            format!("entry {name:?}"),
                            format!("id {id} differs from {old} in {VOCAB}"),
                        ))
                    }
                    _ => {}
                }
            }
            added.into_iter().map(|(name, _)| name).collect()
        } else if vocab.contains_key(END_OF_TEXT) {
            vec![END_OF_TEXT.to_string()]
        } else {
            Vec::new()
        };
        let tokens = tokens_by_id(&vocab_path, vocab, &special_names)?;
        let merges = read_merges(&dir.join(MERGES), &tokens)?;
        let special_ids = special_names
            .iter()
            .map(|name| tokens.iter().position(|t| t == name).expect("inserted") as u32)
            .collect();
        Ok(Tokenizer::from_parts(tokens, special_ids, merges))
    }
}

/// Orders the vocabulary by id, checking that ids are 0..n without gaps or repeats, that
/// ordinary tokens are byte-level strings, and that every byte has its token.
fn tokens_by_id(
    path: &Path,
    vocab: HashMap<String, u32>,
    specials: &[String],
) -> Result<Vec<String>> {
    let n = vocab.len();
    let mut slots: Vec<Option<String>> = vec![None; n];
    let mut entries: Vec<(String, u32)> = vocab.into_iter().collect();
    entries.sort_by_key(|&(_, id)| id);
    for (token, id) in entries {
        let at = format!("entry {token:?}");
        let slot = slots.get_mut(id as usize).ok_or_else(|| {
            malformed(path, at.clone(), format!("id {id} ≥ number of entries {n}"))
        })?;
        if let Some(other) = slot {
            return Err(malformed(
                path,
                at,
                format!("id {id} is also used by {other:?}"),
            ));
        }
        if !specials.contains(&token) {
            if token.is_empty() {
                return Err(malformed(path, at, "empty token".into()));
            }
            if let Err(c) = token_string_to_bytes(&token) {
                let reason = format!("character {c:?} is not a byte-level character");
                return Err(malformed(path, at, reason));
            }
        }
        *slot = Some(token);
    }
    let tokens: Vec<String> = slots
        .into_iter()
        .map(|s| s.expect("ids 0..n all seen"))
        .collect();
    let present: HashSet<&str> = tokens.iter().map(String::as_str).collect();
    for c in byte_to_char() {
        if !present.contains(c.to_string().as_str()) {
            let reason = format!("no token for the byte shown as {c:?}");
            return Err(malformed(path, "vocabulary".into(), reason));
        }
    }
    Ok(tokens)
}

/// Parses `merges.txt`: an optional `#version` line, then `left right` per line.
fn read_merges(path: &Path, tokens: &[String]) -> Result<Vec<(u32, u32)>> {
    let text = fs::read_to_string(path).map_err(|source| io_error(path, source))?;
    let ids: HashMap<&str, u32> = tokens
        .iter()
        .enumerate()
        .map(|(id, t)| (t.as_str(), id as u32))
        .collect();
    let lookup = |part: &str, line: usize| {
        ids.get(part).copied().ok_or_else(|| {
            malformed(
                path,
                format!("line {line}"),
                format!("{part:?} is not in {VOCAB}"),
            )
        })
    };
    let mut merges = Vec::new();
    let mut seen = HashMap::new();
    for (i, line) in text.lines().enumerate() {
        let line_no = i + 1;
        if (i == 0 && line.starts_with("#version")) || line.is_empty() {
            continue;
        }
        let parts: Vec<&str> = line.split(' ').collect();
        let [left, right] = parts[..] else {
            let reason = format!("expected two tokens separated by one space, got {line:?}");
            return Err(malformed(path, format!("line {line_no}"), reason));
        };
        let pair = (lookup(left, line_no)?, lookup(right, line_no)?);
        lookup(&format!("{left}{right}"), line_no)?;
        if let Some(first) = seen.insert(pair, line_no) {
            let reason = format!("merge {line:?} repeats line {first}");
            return Err(malformed(path, format!("line {line_no}"), reason));
        }
        merges.push(pair);
    }
    Ok(merges)
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let text = fs::read_to_string(path).map_err(|source| io_error(path, source))?;
    serde_json::from_str(&text).map_err(|source| TokenizerError::Json {
        path: path.to_path_buf(),
        source,
    })
}

fn pretty(value: &Value) -> String {
    let mut s = serde_json::to_string_pretty(value).expect("JSON values serialize");
    s.push('\n');
    s
}

/// Writes `contents` atomically (see [`crate::checkpoint::write_atomic`]).
fn write_atomic(path: &Path, contents: &str) -> Result<()> {
    crate::checkpoint::replace_file(path, contents.as_bytes()).map_err(|e| io_error(path, e))
}

fn io_error(path: &Path, source: std::io::Error) -> TokenizerError {
    TokenizerError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn malformed(path: &Path, at: String, reason: String) -> TokenizerError {
    TokenizerError::Malformed {
        path: PathBuf::from(path),
        at,
        reason,
    }
}
