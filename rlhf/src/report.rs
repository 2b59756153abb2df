//! The run report: read each stage's `metrics.jsonl` into plottable series, and write
//! `report.md` (headings, paragraphs, tables, chart links).
//!
//! ```no_run
//! use rlhf::report::{read_metrics, series, Report};
//! let records = read_metrics("run/sft/metrics.jsonl")?;
//! let loss = series(&records, "step", "loss");
//! let mut report = Report::new("ferrochat run");
//! report
//!     .heading("SFT")
//!     .paragraph(&format!("{} logged steps.", loss.len()))
//!     .image("SFT loss", "sft/loss.png");
//! report.save("run/report.md")?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::path::Path;

use serde_json::{Map, Value};

use crate::data::{read_jsonl, DataError};

/// Reads a metrics file: one JSON object per line, keys varying by stage (`{"step", "loss"}`,
/// `{"step", "val_loss"}`, `{"iteration", "score", "kl"}`...). Blank lines are skipped.
///
/// A line that is not a JSON object is a [`DataError::Malformed`] naming the file and its
/// 1-based line number.
pub fn read_metrics(path: impl AsRef<Path>) -> Result<Vec<Value>, DataError> {
    let objects: Vec<Map<String, Value>> = read_jsonl(path)?;
    Ok(objects.into_iter().map(Value::Object).collect())
}

/// The `(x, y)` points of the records that have both `x_key` and `y_key` as numbers, in file
/// order. Other records are skipped: a file may log `val_loss` only on evaluation steps.
pub fn series(records: &[Value], x_key: &str, y_key: &str) -> Vec<(f64, f64)> {
    records
        .iter()
        .filter_map(|r| Some((r.get(x_key)?.as_f64()?, r.get(y_key)?.as_f64()?)))
        .collect()
}

/// A markdown document built section by section, saved atomically as `report.md`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Report {
    markdown: String,
}

impl Report {
    /// A report whose first line is the top-level heading `# {title}`.
    pub fn new(title: &str) -> Report {
        Report {
            markdown: format!("# {}\n", one_line(title)),
        }
    }

    /// Adds a section heading `## {text}`.
    pub fn heading(&mut self, text: &str) -> &mut Report {
        self.block(format!("## {}", one_line(text)))
    }

    /// Adds a paragraph of markdown text (written as given).
    pub fn paragraph(&mut self, text: &str) -> &mut Report {
        self.block(text.trim().to_string())
    }

    /// Adds a table with a `header` row and `rows`. Shorter rows are padded with empty cells;
    /// `|` and line breaks inside a cell are escaped so they cannot break the table.
    pub fn table(&mut self, header: &[&str], rows: &[Vec<String>]) -> &mut Report {
        let columns = rows.iter().map(Vec::len).fold(header.len(), usize::max);
        let rule = format!("|{}", " --- |".repeat(columns));
        let mut lines = vec![table_row(header, columns), rule];
        lines.extend(rows.iter().map(|r| table_row(r, columns)));
        self.block(lines.join("\n"))
    }

    /// Adds an image `![alt](path)`; `path` is relative to the report's folder (for a chart
    /// beside `report.md`, its file name).
    pub fn image(&mut self, alt: &str, path: &str) -> &mut Report {
        let target = if path.contains([' ', '(', ')']) {
            format!("<{path}>")
        } else {
            path.to_string()
        };
        self.block(format!(
            "![{}]({target})",
            one_line(alt).replace(']', "\\]")
        ))
    }

    /// The markdown written so far.
    pub fn markdown(&self) -> &str {
        &self.markdown
    }

    /// Writes the markdown to `path` atomically (temporary file + rename).
    pub fn save(&self, path: impl AsRef<Path>) -> Result<(), model::Error> {
        model::checkpoint::write_atomic(path, self.markdown.as_bytes())
    }

    /// Appends a block, separated from the previous one by a blank line.
    fn block(&mut self, text: String) -> &mut Report {
        self.markdown.push('\n');
        self.markdown.push_str(&text);
        self.markdown.push('\n');
        self
    }
}

/// One table row of `columns` cells (`cells` padded with empty ones), escaped.
fn table_row<S: AsRef<str>>(cells: &[S], columns: usize) -> String {
    let cells = (0..columns).map(|i| {
        cells
            .get(i)
            .map_or(String::new(), |c| escape_cell(c.as_ref()))
    });
    let mut row = String::from("|");
    for cell in cells {
        row.push(' ');
        row.push_str(&cell);
        row.push_str(" |");
    }
    row
}

/// A cell's text with `|` escaped and line breaks turned into `<br>`.
fn escape_cell(text: &str) -> String {
    one_line(
        &text
            .replace('|', "\\|")
            .replace("\r\n", "<br>")
            .replace('\n', "<br>"),
    )
}

/// `text` with line breaks replaced by spaces (for headings and alt text).
fn one_line(text: &str) -> String {
    text.trim().replace(['\r', '\n'], " ")
}
