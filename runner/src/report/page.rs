//! The page: one self-contained HTML document (inline CSS, inline SVG, no script, no font or
//! anything else fetched). Written with maud, whose splices `(expr)` are HTML-escaped, so
//! every string read from the run's files is escaped by construction; the only unescaped
//! insertions are the CSS constant and the SVG that plotters wrote (which escapes its text).

use std::collections::BTreeMap;

use brook_jepsen::{OpKind, Outcome};
use maud::{html, Markup, PreEscaped, DOCTYPE};
use serde_json::Value;

use super::anomalies::{
    involved_operations, AnomalyGroup, AnomalyItem, Marks, ANOMALIES_SHOWN_PER_KIND_MAX,
    OPERATIONS_SHOWN_PER_ANOMALY_MAX,
};
use super::input::{
    NemesisWindow, RunData, TimedOperation, HISTORY_FILE, NEMESIS_FILE, NODES_DIRECTORY,
    RESULTS_FILE,
};
use super::plot::{hex, window_color, Plot, WINDOW_OPACITY};

/// Records of one poll written out in an operation's row at most.
const RECORDS_SHOWN_PER_POLL_MAX: usize = 12;
/// Characters of `results.json` shown raw at the bottom at most.
const RESULTS_SHOWN_CHARS_MAX: usize = 200_000;

const NANOS_PER_SECOND: f64 = 1e9;
const NANOS_PER_MILLISECOND: f64 = 1e6;

const CSS: &str = "
nav{font-size:.9em;margin:0 0 8px}
body{font-family:system-ui,-apple-system,'Segoe UI',Helvetica,Arial,sans-serif;margin:0 auto;
  max-width:1160px;padding:0 16px 48px;color:#222;line-height:1.4}
h1{font-size:1.5em;margin:20px 0 8px}h2{font-size:1.2em;margin:28px 0 8px;
  border-bottom:1px solid #ddd;padding-bottom:4px}h3{font-size:1.05em;margin:18px 0 6px}
.verdict{padding:12px 16px;border-radius:6px;font-size:1.2em;font-weight:600;margin:12px 0}
.verdict.valid{background:#e3f4e1;border:1px solid #7bbf72;color:#1d5c16}
.verdict.invalid{background:#fbe3e3;border:1px solid #d77;color:#8a1111}
.verdict.unknown{background:#f2f2f2;border:1px solid #bbb;color:#444}
.verdict small{display:block;font-weight:400;font-size:.75em;margin-top:4px}
.verdict ul.errors{font-weight:400;font-size:.8em;margin:4px 0}
table{border-collapse:collapse;margin:6px 0 12px;font-size:.92em}
th,td{border:1px solid #ddd;padding:3px 8px;text-align:left;vertical-align:top}
th{background:#f5f5f5}td.number{text-align:right;font-variant-numeric:tabular-nums}
.columns{display:grid;grid-template-columns:repeat(auto-fit,minmax(330px,1fr));gap:0 24px;
  align-items:start}.columns h3:first-child{margin-top:4px}
.facts th{width:14em}.bad{color:#a11;font-weight:600}.good{color:#1d5c16}
.swatch{display:inline-block;width:14px;height:14px;border:1px solid #888;vertical-align:middle;
  margin-right:6px}
figure{margin:12px 0 24px}figure svg{width:100%;height:auto;border:1px solid #e5e5e5}
figcaption{font-size:.95em;margin-bottom:4px}.note{font-size:.9em;color:#555;margin:2px 0}
.anomaly{border-left:4px solid #d77;padding:4px 12px;margin:10px 0;background:#fffafa}
.message{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:.88em;white-space:pre-wrap}
code,pre{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:.88em}
pre{background:#f7f7f7;padding:8px;overflow:auto;max-height:480px}
mark{background:#ffe08a}.muted{color:#777}
";

/// Everything `render` computed, handed to the page.
pub(crate) struct Page<'a> {
    pub title: String,
    pub data: &'a RunData,
    pub plots: Vec<Plot>,
    pub groups: Vec<AnomalyGroup>,
}

impl Page<'_> {
    pub fn render(&self) -> String {
        let results = self.data.results.as_ref();
        html! {
            (DOCTYPE)
            html lang="en" {
                head {
                    meta charset="utf-8";
                    meta name="viewport" content="width=device-width, initial-scale=1";
                    title { (self.title) }
                    style { (PreEscaped(CSS)) }
                }
                body {
                    h1 { (self.title) }
                    nav {
                        a href="#summary" { "Summary" } " · "
                        a href="#plots" { "Plots" } " · "
                        a href="#anomalies" { "Anomalies" } " · "
                        a href="#nemesis" { "Nemesis windows" } " · "
                        a href="#files" { "Files" }
                    }
                    (self.verdict(results))
                    (self.summary(results))
                    (self.plots_section())
                    (self.anomaly_details())
                    (self.nemesis_table())
                    (self.files())
                    (self.raw_results(results))
                }
            }
        }
        .into_string()
    }

    fn verdict(&self, results: Option<&Value>) -> Markup {
        let flag = |name: &str| {
            results
                .and_then(|results| results.get(name))
                .and_then(Value::as_bool)
        };
        let valid = flag("valid");
        let expect_anomalies = flag("expect_anomalies").unwrap_or(false);
        // What the run's exit code said (with --expect-anomalies: that the anomalies were found).
        let passed = flag("passed");
        let errors = string_list(results.and_then(|results| results.get("errors")));
        let anomaly_total: u64 = self.groups.iter().map(|group| group.count).sum();
        let read_back = read_back(self.data);
        let (class, headline) = match (valid, expect_anomalies, passed) {
            (Some(true), false, _) => ("verdict valid", "Valid"),
            (Some(false), true, Some(true)) => (
                "verdict valid",
                "Invalid, as this run expected: the checker found the anomalies it must find (passed)",
            ),
            (Some(false), true, _) => ("verdict invalid", "Invalid"),
            (Some(true), true, _) => (
                "verdict invalid",
                "Valid, but this run expected anomalies: the checker missed them (failed)",
            ),
            (Some(false), false, _) => ("verdict invalid", "Invalid"),
            (None, _, _) => (
                "verdict unknown",
                "No verdict: results.json is missing or has no \"valid\" field",
            ),
        };
        html! {
            div id="verdict" class=(class) {
                (headline)
                small {
                    @if anomaly_total == 0 {
                        "The checkers reported no anomaly."
                    } @else {
                        (anomaly_total) " anomal" (if anomaly_total == 1 { "y" } else { "ies" })
                        " reported: "
                        @for (position, group) in self.groups.iter().enumerate() {
                            @if position > 0 { ", " }
                            (group.kind) " " (group.count)
                        }
                        "."
                    }
                    @if read_back.acknowledged > 0 {
                        " "
                        @if read_back.acknowledged_unread == 0 {
                            "Every one of the " (read_back.acknowledged)
                            " acknowledged sends was read back by a poll."
                        } @else {
                            (read_back.acknowledged_unread) " of the " (read_back.acknowledged)
                            " acknowledged sends were never read back by any poll."
                        }
                    }
                    @if expect_anomalies {
                        " This run expected anomalies (--expect-anomalies: a test that the \
                        checker is not blind)."
                    }
                }
                @if !errors.is_empty() {
                    small { "Run errors:" }
                    ul.errors {
                        @for error in &errors { li { (error) } }
                    }
                }
            }
        }
    }

    fn summary(&self, results: Option<&Value>) -> Markup {
        html! {
            h2 id="summary" { "Summary" }
            div.columns {
                div { (self.run_facts(results)) }
                div { (self.checker_verdicts(results)) }
                div {
                    (self.operations_table())
                    (reported_counts(results))
                }
            }
        }
    }

    /// What was run: the options and outcome `results.json` records, and the history's size.
    fn run_facts(&self, results: Option<&Value>) -> Markup {
        let nemesis = match result_field(results, "nemesis") {
            Some(Value::Array(names)) if names.is_empty() => "none".to_owned(),
            Some(Value::Array(names)) => names.iter().map(plain).collect::<Vec<_>>().join(", "),
            Some(other) => plain(other),
            None => "-".to_owned(),
        };
        let observed_seconds = self.data.run_end_ns() as f64 / NANOS_PER_SECOND;
        // (label, field of results.json), shown when present.
        let facts = [
            ("seed", "seed"),
            ("nodes", "nodes"),
            ("workload", "workload"),
            ("acks", "acks"),
            ("partitions", "partitions"),
            ("rate (ops/s)", "rate"),
            ("time limit (s)", "time_limit_secs"),
            ("wall time (s)", "wall_secs"),
            ("fault windows", "faults"),
            ("cluster converged after the heal", "converged"),
            ("final drain complete", "drain_complete"),
            ("expect anomalies", "expect_anomalies"),
            ("lost writes found", "lost_writes_found"),
            ("passed (exit code)", "passed"),
        ];
        html! {
            h3 { "Run" }
            table.facts {
                @for (label, name) in facts {
                    @if let Some(value) = result_field(results, name) {
                        tr { th { (label) } td { (plain(value)) } }
                    }
                    @if name == "workload" {
                        tr { th { "nemesis" } td { (nemesis) } }
                    }
                }
                tr { th { "observed span (s)" } td { (format!("{observed_seconds:.1}")) } }
                tr { th { "history" } td {
                    @if self.data.history_present {
                        (self.data.history.len()) " events, "
                        (self.data.operations.len()) " operations"
                    } @else {
                        span.bad { "history.jsonl is missing" }
                    }
                } }
            }
        }
    }

    /// Each checker's verdict, the anomaly counts, and the run's notes.
    fn checker_verdicts(&self, results: Option<&Value>) -> Markup {
        let field = |name: &str| result_field(results, name);
        let notes = string_list(field("notes"));
        html! {
            h3 { "Checkers" }
            table {
                tr { th { "checker" } th { "verdict" } }
                (checker_row("queue (lost-write, unseen, duplicate, ...)",
                    field("queue").and_then(|queue| queue.get("valid")).map(validity)))
                (checker_row("linearizability of each partition",
                    field("linearizable").and_then(|linear| linear.get("verdict")).map(plain)))
                (checker_row("replicas (committed prefixes identical, one leader per term)",
                    field("replicas").and_then(|replicas| replicas.get("valid")).map(validity)))
            }
            h3 id="anomaly-counts" { "Anomaly counts" }
            @if self.groups.is_empty() {
                p.good { "None." }
            } @else {
                table {
                    tr { th { "checker" } th { "anomaly" } th { "count" } }
                    @for group in &self.groups {
                        tr {
                            td { (group.checker) }
                            td { a href=(format!("#{}", group.anchor())) { (group.kind) } }
                            td.number.bad { (group.count) }
                        }
                    }
                }
            }
            @if !notes.is_empty() {
                h3 { "Notes of the run" }
                ul {
                    @for note in &notes { li { (note) } }
                }
            }
        }
    }

    /// Operations by type and outcome, counted from the history itself.
    fn operations_table(&self) -> Markup {
        // type -> [ok, fail, info]
        let mut by_type: BTreeMap<&'static str, [u64; 3]> = BTreeMap::new();
        for timed in &self.data.operations {
            let slot = match timed.outcome() {
                Outcome::Ok => 0,
                Outcome::Fail => 1,
                Outcome::Info => 2,
            };
            by_type.entry(timed.operation.kind.name()).or_default()[slot] += 1;
        }
        let ReadBack {
            records_polled,
            values_read,
            acknowledged,
            acknowledged_unread,
        } = read_back(self.data);
        html! {
            h3 id="operations" { "Operations in the history" }
            @if self.data.operations.is_empty() {
                p.muted { "No operation in the history." }
            } @else {
                table {
                    tr { th { "type" } th { "ok" } th { "fail" } th { "info" } th { "total" } }
                    @for (name, counts) in &by_type {
                        tr {
                            td { (name) }
                            td.number { (counts[0]) }
                            td.number { (counts[1]) }
                            td.number { (counts[2]) }
                            td.number { (counts.iter().sum::<u64>()) }
                        }
                    }
                }
                p {
                    (records_polled) " records polled, " (values_read) " distinct values read; "
                    (acknowledged) " sends acknowledged, of which "
                    @if acknowledged_unread == 0 {
                        span.good { "every value was read by some poll" }
                    } @else {
                        span.bad { (acknowledged_unread) " never read by any poll" }
                        " (the checkers above judge whether that is a loss)"
                    }
                    "."
                }
            }
        }
    }

    fn plots_section(&self) -> Markup {
        // Kinds in order of first appearance, with how many windows each had.
        let mut kinds: Vec<(&str, usize)> = Vec::new();
        for window in &self.data.windows {
            match kinds.iter_mut().find(|(kind, _)| *kind == window.kind) {
                Some((_, count)) => *count += 1,
                None => kinds.push((&window.kind, 1)),
            }
        }
        html! {
            h2 id="plots" { "Plots" }
            p.muted {
                "Time is wall-clock since the run started. Shaded bands are the nemesis windows, "
                "labelled above each plot with their kind and nodes where there is room"
                @if kinds.is_empty() { " (this run had none)." } @else { ": " }
                @for (position, (kind, count)) in kinds.iter().enumerate() {
                    @if position > 0 { ", " }
                    span.swatch style=(swatch_style(kind)) {}
                    (kind) " (" (count) ")"
                }
                @if !kinds.is_empty() { "." }
            }
            @for plot in &self.plots {
                figure id=(plot.id) {
                    figcaption { strong { (plot.title) } }
                    (PreEscaped(&plot.svg))
                    @for note in &plot.notes {
                        p.note { (note) }
                    }
                }
            }
        }
    }

    fn nemesis_table(&self) -> Markup {
        html! {
            h2 id="nemesis" { "Nemesis windows (" (self.data.windows.len()) ")" }
            @if !self.data.nemesis_present {
                p.muted { "nemesis.jsonl is missing: no fault windows to show." }
            } @else if self.data.windows.is_empty() {
                p.muted { "No fault was injected." }
            } @else {
                @let sends = SendCompletions::of(self.data);
                table {
                    tr { th { "kind" } th { "start (s)" } th { "end (s)" } th { "duration (s)" }
                        th { "nodes" } th { "description" }
                        th { "sends completed in it: ok, fail, info" } }
                    @for window in &self.data.windows {
                        (window_row(window, &sends))
                    }
                }
            }
        }
    }

    fn anomaly_details(&self) -> Markup {
        html! {
            h2 id="anomalies" { "Anomalies and the operations involved" }
            @if self.groups.is_empty() {
                p.good { "No anomaly." }
            }
            @for group in &self.groups {
                h3 id=(group.anchor()) {
                    (group.kind) " (" (group.checker) ", " (group.count) ")"
                }
                @if group.items.is_empty() {
                    p.muted { "The run recorded the count only, no example." }
                }
                @for item in group.items.iter().take(ANOMALIES_SHOWN_PER_KIND_MAX) {
                    (self.anomaly_item(item))
                }
                @if group.items.len() > ANOMALIES_SHOWN_PER_KIND_MAX {
                    p.muted { "... and " (group.items.len() - ANOMALIES_SHOWN_PER_KIND_MAX)
                        " more in results.json." }
                }
            }
        }
    }

    fn anomaly_item(&self, item: &AnomalyItem) -> Markup {
        let involved = involved_operations(self.data, item);
        let marks = Marks::of(item);
        let missing: Vec<usize> = item
            .ops
            .iter()
            .copied()
            .filter(|index| self.data.operation_of_op(*index).is_none())
            .collect();
        let run_end_ns = self.data.run_end_ns();
        html! {
            div.anomaly {
                @if !item.message.is_empty() {
                    p.message { (item.message) }
                }
                p {
                    @if !item.partitions.is_empty() { "partitions " (join(&item.partitions)) "; " }
                    @if !item.offsets.is_empty() { "offsets " (join(&item.offsets)) "; " }
                    @if !item.values.is_empty() { "values " (join(&item.values)) "; " }
                    @if !item.nodes.is_empty() { "nodes " (item.nodes.join(", ")) "; " }
                    @if !item.terms.is_empty() { "terms " (join(&item.terms)) "; " }
                    @if !item.ops.is_empty() { "history indexes " (join(&item.ops)) }
                }
                @if !missing.is_empty() {
                    p.bad { "Not in the history: " (join(&missing)) }
                }
                @if involved.is_empty() {
                    p.muted { "No operation of the history is involved." }
                } @else {
                    table.operations {
                        tr { th { "index" } th { "time (s)" } th { "latency (ms)" } th { "process" }
                            th { "node" } th { "type" } th { "outcome" } th { "what" }
                            th { "why listed" } }
                        @for operation in involved.iter().take(OPERATIONS_SHOWN_PER_ANOMALY_MAX) {
                            (operation_row(operation.timed, run_end_ns, &marks,
                                &operation.reasons.iter().map(|reason| reason.describe())
                                    .collect::<Vec<_>>().join("; ")))
                        }
                    }
                    @if involved.len() > OPERATIONS_SHOWN_PER_ANOMALY_MAX {
                        p.muted { "... and " (involved.len() - OPERATIONS_SHOWN_PER_ANOMALY_MAX)
                            " more operations." }
                    }
                }
            }
        }
    }

    fn files(&self) -> Markup {
        html! {
            h2 id="files" { "Files" }
            ul {
                li { a href=(HISTORY_FILE) { (HISTORY_FILE) } " - the history, one event per line" }
                li { a href=(NEMESIS_FILE) { (NEMESIS_FILE) } " - the fault windows" }
                li { a href=(RESULTS_FILE) { (RESULTS_FILE) } " - the checkers' results" }
                @for log in &self.data.node_logs {
                    li {
                        a href=(format!("{NODES_DIRECTORY}/{}", percent_encode_path(log))) {
                            (NODES_DIRECTORY) "/" (log)
                        }
                        " - node log"
                    }
                }
            }
            @if self.data.node_logs.is_empty() {
                p.muted { "No node log under nodes/." }
            }
        }
    }

    fn raw_results(&self, results: Option<&Value>) -> Markup {
        let text = results
            .map(|results| serde_json::to_string_pretty(results).unwrap_or_default())
            .unwrap_or_default();
        let shown: String = text.chars().take(RESULTS_SHOWN_CHARS_MAX).collect();
        html! {
            @if results.is_some() {
                details {
                    summary { "results.json" }
                    pre { (shown) }
                    @if shown.len() < text.len() { p.muted { "(cut; open the file)" } }
                }
            }
        }
    }
}

/// What the history says about reading back what was acknowledged, whatever the checkers say.
struct ReadBack {
    records_polled: u64,
    values_read: usize,
    /// Sends acknowledged `ok`.
    acknowledged: usize,
    /// Of those, the ones whose value no poll returned.
    acknowledged_unread: usize,
}

fn read_back(data: &RunData) -> ReadBack {
    let mut records_polled = 0u64;
    let mut values_read = std::collections::BTreeSet::new();
    for timed in &data.operations {
        if let (OpKind::Poll { records }, Outcome::Ok) = (&timed.operation.kind, timed.outcome()) {
            records_polled += records.len() as u64;
            values_read.extend(records.iter().map(|record| record.value));
        }
    }
    let acknowledged: Vec<u64> = data
        .operations
        .iter()
        .filter(|timed| timed.outcome() == Outcome::Ok)
        .filter_map(|timed| match timed.operation.kind {
            OpKind::Send { value, .. } => Some(value),
            _ => None,
        })
        .collect();
    let acknowledged_unread = acknowledged
        .iter()
        .filter(|value| !values_read.contains(value))
        .count();
    ReadBack {
        records_polled,
        values_read: values_read.len(),
        acknowledged: acknowledged.len(),
        acknowledged_unread,
    }
}

/// Field `name` of `results.json`, if it is there and not null.
fn result_field<'a>(results: Option<&'a Value>, name: &str) -> Option<&'a Value> {
    results
        .and_then(|results| results.get(name))
        .filter(|value| !value.is_null())
}

/// The counts `results.json` reports, as they are (none: nothing).
fn reported_counts(results: Option<&Value>) -> Markup {
    let counts = match result_field(results, "counts") {
        Some(Value::Object(counts)) => counts.iter().collect::<Vec<_>>(),
        _ => Vec::new(),
    };
    html! {
        @if !counts.is_empty() {
            h3 { "Counts reported by the run" }
            table {
                @for (name, value) in counts {
                    tr { th { (name) } td.number { (plain(value)) } }
                }
            }
        }
    }
}

fn checker_row(name: &str, verdict: Option<String>) -> Markup {
    html! {
        tr {
            td { (name) }
            @match verdict {
                Some(verdict) => {
                    @let good = verdict == "valid" || verdict == "linearizable";
                    td class=(if good { "good" } else { "bad" }) { (verdict) }
                }
                None => td.muted { "not in results.json" },
            }
        }
    }
}

fn validity(valid: &Value) -> String {
    match valid.as_bool() {
        Some(true) => "valid".to_owned(),
        Some(false) => "invalid".to_owned(),
        None => plain(valid),
    }
}

/// The inline style of a nemesis kind's colour swatch (the shading's colour, a little
/// stronger so that it reads on its own).
fn swatch_style(kind: &str) -> String {
    format!(
        "background:{};opacity:{}",
        hex(window_color(kind)),
        (WINDOW_OPACITY * 3.0).min(1.0)
    )
}

/// Completion times of the sends by outcome, sorted, to count what each window saw.
struct SendCompletions {
    /// Indexed like `[ok, fail, info]`.
    times_ns: [Vec<u64>; 3],
}

impl SendCompletions {
    fn of(data: &RunData) -> SendCompletions {
        let mut times_ns: [Vec<u64>; 3] = Default::default();
        for timed in data.operations.iter().filter(|timed| timed.is_send()) {
            // A send that never completed is not counted in any window.
            if let Some(end_ns) = timed.end_ns {
                let slot = match timed.outcome() {
                    Outcome::Ok => 0,
                    Outcome::Fail => 1,
                    Outcome::Info => 2,
                };
                times_ns[slot].push(end_ns);
            }
        }
        for times in &mut times_ns {
            times.sort_unstable();
        }
        SendCompletions { times_ns }
    }

    /// Sends of each outcome that completed in `[start_ns, end_ns]`.
    fn within(&self, start_ns: u64, end_ns: u64) -> [usize; 3] {
        self.times_ns.each_ref().map(|times| {
            times.partition_point(|&time| time <= end_ns)
                - times.partition_point(|&time| time < start_ns)
        })
    }
}

fn window_row(window: &NemesisWindow, sends: &SendCompletions) -> Markup {
    let [ok, fail, info] = sends.within(window.start_ns, window.end_ns.max(window.start_ns));
    let start = window.start_ns as f64 / NANOS_PER_SECOND;
    let end = window.end_ns as f64 / NANOS_PER_SECOND;
    let nodes: Vec<String> = window.nodes.iter().map(|node| format!("n{node}")).collect();
    html! {
        tr {
            td {
                span.swatch style=(swatch_style(&window.kind)) {}
                (window.kind)
            }
            td.number { (format!("{start:.2}")) }
            td.number { (format!("{end:.2}")) }
            td.number { (format!("{:.2}", (end - start).max(0.0))) }
            td { (nodes.join(", ")) }
            td { (window.description) }
            td.number {
                (ok) ", "
                span class=[(fail > 0).then_some("bad")] { (fail) } ", "
                span class=[(info > 0).then_some("bad")] { (info) }
            }
        }
    }
}

/// One operation's row; values the anomaly names are marked.
fn operation_row(timed: &TimedOperation, run_end_ns: u64, marks: &Marks, reasons: &str) -> Markup {
    let operation = &timed.operation;
    let index = match operation.completion {
        Some(completion) if completion != operation.invoke => {
            format!("{}-{}", operation.invoke, completion)
        }
        Some(completion) => completion.to_string(),
        None => format!("{}-(never)", operation.invoke),
    };
    let latency = timed.latency_ns(run_end_ns) as f64 / NANOS_PER_MILLISECOND;
    html! {
        tr {
            td.number { (index) }
            td.number { (format!("{:.3}", timed.start_ns as f64 / NANOS_PER_SECOND)) }
            td.number { (format!("{latency:.1}")) @if timed.end_ns.is_none() { "+" } }
            td.number { (operation.process) }
            td { (operation.node.as_deref().unwrap_or("-")) }
            td { (operation.kind.name()) }
            td class=[(operation.outcome != Outcome::Ok).then_some("bad")] {
                (operation.outcome.to_string())
            }
            td { (describe_kind(&operation.kind, marks)) }
            td { (reasons) }
        }
    }
}

fn describe_kind(kind: &OpKind, marks: &Marks) -> Markup {
    match kind {
        OpKind::Send {
            partition,
            key,
            value,
            offset,
            acks,
        } => html! {
            "value " @if marks.value(*value) { mark { (value) } } @else { (value) }
            @if let Some(key) = key { " key " code { (key) } }
            @if let Some(partition) = partition { " partition " (partition) }
            @if let Some(offset) = offset { " offset " (offset) }
            " acks=" (acks.name())
        },
        OpKind::Poll { records } => describe_poll(records, marks),
        // Other kinds are rare in these tables; their JSON says it all.
        other => html! { code { (serde_json::to_string(other).unwrap_or_default()) } },
    }
}

/// A poll's records: the count, then the records `shown_records` picks (marked ones
/// highlighted), with "..." where records are left out.
fn describe_poll(records: &[brook_jepsen::PollRecord], marks: &Marks) -> Markup {
    let shown = shown_records(records, marks);
    html! {
        (records.len()) " record" (if records.len() == 1 { "" } else { "s" })
        @if !records.is_empty() { ": " }
        @for (position, &index) in shown.iter().enumerate() {
            @if position > 0 { ", " }
            // A gap in what is shown: say so.
            @if (position == 0 && index > 0)
                || (position > 0 && index > shown[position - 1] + 1) { "... " }
            @let record = &records[index];
            @if marks.record(record) {
                mark { "p" (record.partition) "@" (record.offset) "=" (record.value) }
            } @else {
                "p" (record.partition) "@" (record.offset) "=" (record.value)
            }
        }
        @if shown.last().is_some_and(|&last| last + 1 < records.len()) {
            ", ... (" (records.len() - shown.len()) " more not shown)"
        }
    }
}

/// Which records of a poll to write out (positions, ascending): each marked record with its
/// neighbours, else the first ones; at most `RECORDS_SHOWN_PER_POLL_MAX`.
pub(super) fn shown_records(records: &[brook_jepsen::PollRecord], marks: &Marks) -> Vec<usize> {
    let mut shown = std::collections::BTreeSet::new();
    for (index, record) in records.iter().enumerate() {
        if shown.len() >= RECORDS_SHOWN_PER_POLL_MAX {
            break;
        }
        if marks.record(record) {
            shown.extend(index.saturating_sub(1)..(index + 2).min(records.len()));
        }
    }
    if shown.is_empty() {
        shown.extend(0..records.len().min(RECORDS_SHOWN_PER_POLL_MAX));
    }
    shown.into_iter().take(RECORDS_SHOWN_PER_POLL_MAX).collect()
}

/// The strings of a JSON array (other items as JSON text); nothing if absent.
fn string_list(value: Option<&Value>) -> Vec<String> {
    match value {
        Some(Value::Array(items)) => items.iter().map(plain).collect(),
        Some(Value::Null) | None => Vec::new(),
        Some(other) => vec![plain(other)],
    }
}

/// A JSON value as text for a table cell: strings without their quotes.
fn plain(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        Value::Null => "-".to_owned(),
        // Seconds and rates: two decimals say enough.
        Value::Number(number) if number.is_f64() => {
            format!("{:.2}", number.as_f64().unwrap_or(f64::NAN))
        }
        other => other.to_string(),
    }
}

fn join<T: ToString>(items: &[T]) -> String {
    items
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// A file name as a relative URL path segment (the node logs' names come from the directory).
fn percent_encode_path(name: &str) -> String {
    let mut encoded = String::with_capacity(name.len());
    for byte in name.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            encoded.push(char::from(byte));
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    encoded
}
