//! A training run's `metrics.jsonl`: one JSON object per line, each line flushed as it is
//! written, so a run that is killed loses nothing it had logged.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::{io_err, Result};

/// Writes JSON lines to a metrics file.
pub struct MetricsWriter {
    path: PathBuf,
    file: std::fs::File,
    /// The first error of [`MetricsWriter::log`], reported by [`MetricsWriter::finish`].
    failed: Option<std::io::Error>,
}

impl MetricsWriter {
    /// A new, empty file (an old one is replaced).
    pub fn create(path: impl AsRef<Path>) -> Result<MetricsWriter> {
        let path = path.as_ref();
        let file = std::fs::File::create(path).map_err(io_err(path))?;
        Ok(MetricsWriter {
            path: path.to_path_buf(),
            file,
            failed: None,
        })
    }

    /// The file opened for appending (created if missing): a resumed run goes on writing.
    pub fn append(path: impl AsRef<Path>) -> Result<MetricsWriter> {
        let path = path.as_ref();
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(io_err(path))?;
        Ok(MetricsWriter {
            path: path.to_path_buf(),
            file,
            failed: None,
        })
    }

    /// Appends `value` as one line and flushes it.
    pub fn write(&mut self, value: &serde_json::Value) -> Result<()> {
        writeln!(self.file, "{value}")
            .and_then(|()| self.file.flush())
            .map_err(io_err(&self.path))
    }

    /// Like [`MetricsWriter::write`], for callbacks that cannot return an error: the first
    /// failure is kept (later lines are skipped) and [`MetricsWriter::finish`] returns it.
    pub fn log(&mut self, value: serde_json::Value) {
        if self.failed.is_none() {
            if let Err(e) = writeln!(self.file, "{value}").and_then(|()| self.file.flush()) {
                self.failed = Some(e);
            }
        }
    }

    /// Closes the file; the first error [`MetricsWriter::log`] met, if any.
    pub fn finish(self) -> Result<()> {
        match self.failed {
            Some(e) => Err(io_err(&self.path)(e)),
            None => Ok(()),
        }
    }
}
