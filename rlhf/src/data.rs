//! The JSONL records the RLHF stages exchange, their readers and append-only writers.
//!
//! **Completions include their closing token.** A `completion`, a ranked `response`, a
//! `chosen` or `rejected` text is exactly what follows [`chat_prompt`](crate::chat::chat_prompt)`(prompt)`: the answer
//! text, then `<|end|>` if the answer ended (see [`Answer::completion`](crate::chat::Answer::completion)). So the model input
//! is always `chat_prompt(prompt) + completion`, SFT learns to stop, and the reward model sees
//! whether an answer stopped. [`parse_completion`](crate::chat::parse_completion) splits one back into text and `ended`.
//!
//! One JSON object per line. Readers skip blank lines and report the first malformed line as
//! a [`DataError`] naming the file and the 1-based line number. Writers open the file in
//! append mode and write each record as one whole line, flushed, so nothing already written
//! is lost if a run is killed.

use serde::{de::DeserializeOwned, Deserialize, Serialize};
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::marker::PhantomData;
use std::path::{Path, PathBuf};

/// An SFT demonstration: a prompt (without chat tokens) and the completion to imitate
/// (the ideal answer followed by `<|end|>`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Demonstration {
    /// The instruction.
    pub prompt: String,
    /// The completion to imitate, `<|end|>` included.
    pub completion: String,
}

/// A labeler's ranking of K responses to one prompt.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ranking {
    /// The instruction.
    pub prompt: String,
    /// The K responses, as completions (`<|end|>` included where the answer ended).
    pub responses: Vec<String>,
    /// Indices into `responses`, best first: a permutation of `0..K`.
    pub ranking: Vec<usize>,
    /// Pairs of indices `[i, j]` (i < j) the labeler judged exactly equal; their order in
    /// `ranking` is arbitrary. Optional in the JSON (absent = no ties).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ties: Vec<[usize; 2]>,
}

impl Ranking {
    /// Whether responses `i` and `j` were judged equal.
    pub fn tied(&self, i: usize, j: usize) -> bool {
        self.ties.contains(&[i.min(j), i.max(j)])
    }

    /// The C(K, 2) pairs of the ranking, the better response as `chosen`, less the ties.
    pub fn pairs(&self) -> Vec<Pair> {
        let mut out = Vec::new();
        for (i, &better) in self.ranking.iter().enumerate() {
            for &worse in &self.ranking[i + 1..] {
                if self.tied(better, worse) {
                    continue;
                }
                out.push(Pair {
                    prompt: self.prompt.clone(),
                    chosen: self.responses[better].clone(),
                    rejected: self.responses[worse].clone(),
                });
            }
        }
        out
    }

    /// Checks that `ranking` is a permutation of `0..responses.len()` and that each tie is a
    /// pair `[i, j]` of response indices with i < j.
    pub fn validate(&self) -> Result<(), String> {
        let k = self.responses.len();
        if let Some(t) = self.ties.iter().find(|[i, j]| i >= j || *j >= k) {
            return Err(format!("tie {t:?} is not a pair i < j of 0..{k}"));
        }
        let mut seen = vec![false; k];
        for &i in &self.ranking {
            if i >= k || seen[i] {
                return Err(format!(
                    "ranking {:?} is not a permutation of 0..{k}",
                    self.ranking
                ));
            }
            seen[i] = true;
        }
        if self.ranking.len() != k {
            return Err(format!(
                "ranking has {} entries for {k} responses",
                self.ranking.len()
            ));
        }
        Ok(())
    }
}

/// One preference: `chosen` was ranked above `rejected` for `prompt`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pair {
    /// The instruction.
    pub prompt: String,
    /// The preferred response (a completion, `<|end|>` included where it ended).
    pub chosen: String,
    /// The other response (a completion).
    pub rejected: String,
}

/// An error reading or writing a JSONL file.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// The file could not be opened, read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A line that is not a valid record.
    #[error("{}:{line}: {msg}", path.display())]
    Malformed {
        /// The file.
        path: PathBuf,
        /// The 1-based line number.
        line: usize,
        /// What is wrong with it.
        msg: String,
    },
    /// A record that cannot be written as JSON.
    #[error("{}: cannot encode record: {msg}", path.display())]
    Encode {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        msg: String,
    },
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> DataError + '_ {
    move |source| DataError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Reads every record of a JSONL file (blank lines skipped).
pub fn read_jsonl<T: DeserializeOwned>(path: impl AsRef<Path>) -> Result<Vec<T>, DataError> {
    read_checked(path.as_ref(), |_: &T| Ok(()))
}

/// Reads rankings and checks each is a permutation of its responses' indices.
pub fn read_rankings(path: impl AsRef<Path>) -> Result<Vec<Ranking>, DataError> {
    read_checked(path.as_ref(), Ranking::validate)
}

/// Reads a JSONL file, parsing and then checking each non-blank line.
fn read_checked<T: DeserializeOwned>(
    path: &Path,
    check: impl Fn(&T) -> Result<(), String>,
) -> Result<Vec<T>, DataError> {
    let file = File::open(path).map_err(io_err(path))?;
    let mut out = Vec::new();
    for (i, line) in BufReader::new(file).lines().enumerate() {
        let line = line.map_err(io_err(path))?;
        if line.trim().is_empty() {
            continue;
        }
        let malformed = |msg: String| DataError::Malformed {
            path: path.to_path_buf(),
            line: i + 1,
            msg,
        };
        let record: T = serde_json::from_str(&line).map_err(|e| malformed(e.to_string()))?;
        check(&record).map_err(malformed)?;
        out.push(record);
    }
    Ok(out)
}

/// An append-only JSONL writer: each [`JsonlWriter::write`] appends one whole line and
/// flushes it.
#[derive(Debug)]
pub struct JsonlWriter<T> {
    path: PathBuf,
    file: File,
    _record: PhantomData<T>,
}

impl<T: Serialize> JsonlWriter<T> {
    /// Opens `path` for appending (creating it if needed); existing lines are kept. A file whose
    /// last line has no newline (edited by hand, or cut short) gets one first, so the next
    /// record starts a line of its own instead of running into that one.
    pub fn append(path: impl AsRef<Path>) -> Result<JsonlWriter<T>, DataError> {
        let path = path.as_ref().to_path_buf();
        let mut file = OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(&path)
            .map_err(io_err(&path))?;
        if !ends_with_newline_or_is_empty(&mut file).map_err(io_err(&path))? {
            file.write_all(b"\n").map_err(io_err(&path))?;
        }
        Ok(JsonlWriter {
            path,
            file,
            _record: PhantomData,
        })
    }

    /// Appends one record as one line and flushes it.
    pub fn write(&mut self, record: &T) -> Result<(), DataError> {
        let line = json_line(&self.path, record)?;
        self.file
            .write_all(line.as_bytes())
            .and_then(|_| self.file.flush())
            .map_err(io_err(&self.path))
    }

    /// The file being written.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// One record as one JSONL line, its newline included.
fn json_line<T: Serialize>(path: &Path, record: &T) -> Result<String, DataError> {
    let mut line = serde_json::to_string(record).map_err(|e| DataError::Encode {
        path: path.to_path_buf(),
        msg: e.to_string(),
    })?;
    line.push('\n');
    Ok(line)
}

fn ends_with_newline_or_is_empty(file: &mut File) -> std::io::Result<bool> {
    if file.metadata()?.len() == 0 {
        return Ok(true);
    }
    let mut last = [0u8];
    file.seek(SeekFrom::End(-1))?;
    file.read_exact(&mut last)?;
    Ok(last[0] == b'\n')
}

/// Writes `records` as the whole of `path`, one line each, atomically: the file is either its
/// old self or all of the new records, never a part (see [`model::checkpoint::write_atomic`]).
pub fn write_jsonl<T: Serialize>(path: impl AsRef<Path>, records: &[T]) -> Result<(), DataError> {
    let path = path.as_ref();
    let mut text = String::new();
    for r in records {
        text += &json_line(path, r)?;
    }
    model::checkpoint::replace_file(path, text.as_bytes()).map_err(io_err(path))
}

/// One line of a preference file: a K-way ranking, or a chosen/rejected pair.
#[derive(Deserialize)]
#[serde(untagged)]
enum Preference {
    Ranking(Ranking),
    Pair(Pair),
}

/// Reads preferences as rankings: each line is either a ranking `{"prompt", "responses",
/// "ranking"}` or a pair `{"prompt", "chosen", "rejected"}` (the common open-source format,
/// read as a ranking of two). A line that is neither is an error naming the file and line.
pub fn read_preferences(path: impl AsRef<Path>) -> Result<Vec<Ranking>, DataError> {
    let check = |p: &Preference| match p {
        Preference::Ranking(r) => r.validate(),
        Preference::Pair(_) => Ok(()),
    };
    Ok(read_checked(path.as_ref(), check)?
        .into_iter()
        .map(|p| match p {
            Preference::Ranking(r) => r,
            Preference::Pair(p) => Ranking {
                prompt: p.prompt,
                responses: vec![p.chosen, p.rejected],
                ranking: vec![0, 1],
                ties: Vec::new(),
            },
        })
        .collect())
}
