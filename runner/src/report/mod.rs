//! The report of a run: `index.html` (self-contained, plots as inline SVG) rendered from the
//! run directory's `results.json`, `history.jsonl` and `nemesis.jsonl`.
//!
//! The page answers, top to bottom, what a reader asks: was the run valid; what ran (seed,
//! nodes, nemesis); how many operations of each kind ended how; which faults were injected
//! when; what the clients saw meanwhile (latency of every send and poll over time, throughput
//! over time, with the fault windows shaded and labelled on every plot); which anomalies the
//! checkers found, each with the operations of the history it involves; and links to the raw
//! files and each node's log. Nothing is fetched when the page is opened: CSS and SVG are
//! inline and there is no script.
//!
//! Rendering reads only the run directory, so a recorded run can be re-rendered at any time
//! (`brook-jepsen report DIR`).

mod anomalies;
mod input;
mod page;
mod plot;

#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};

use brook_jepsen::HistoryError;

/// The page's file name in the run directory.
pub const INDEX_FILE: &str = "index.html";

/// Why a report could not be rendered.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// A file of the run directory exists but could not be read.
    #[error("read {path}: {source}", path = path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// `results.json` is not JSON.
    #[error("{path}: {source}", path = path.display())]
    Results {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    /// `history.jsonl` does not parse, or its invocations and completions do not pair.
    #[error("{path}: {source}", path = path.display())]
    History {
        path: PathBuf,
        #[source]
        source: HistoryError,
    },
    /// A line of `nemesis.jsonl` is not a fault window.
    #[error("{path} line {line}: {source}", path = path.display())]
    Nemesis {
        path: PathBuf,
        line: usize,
        #[source]
        source: serde_json::Error,
    },
    /// plotters could not draw a plot.
    #[error("plot {plot}: {message}")]
    Plot { plot: &'static str, message: String },
    /// `index.html` could not be written.
    #[error("write {path}: {source}", path = path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Renders `run_dir/index.html` from the run directory's files and returns its path.
///
/// Missing files are tolerated (the page says what is missing); a file that is present but
/// does not parse is an error.
pub fn render(run_dir: &Path) -> Result<PathBuf, ReportError> {
    let data = input::RunData::load(run_dir)?;
    let mut plots = vec![
        plot::latency_plot(&data, plot::LatencyOf::Send)?,
        plot::latency_plot(&data, plot::LatencyOf::Poll)?,
    ];
    if plot::LatencyOf::Other.has_operations(&data) {
        plots.push(plot::latency_plot(&data, plot::LatencyOf::Other)?);
    }
    plots.push(plot::throughput_plot(&data)?);
    let groups = anomalies::gather(data.results.as_ref());
    let name = run_dir
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_else(|| run_dir.display().to_string());
    let page = page::Page {
        title: format!("brook-jepsen run {name}"),
        data: &data,
        plots,
        groups,
    };
    let path = run_dir.join(INDEX_FILE);
    std::fs::write(&path, page.render()).map_err(|source| ReportError::Write {
        path: path.clone(),
        source,
    })?;
    Ok(path)
}
