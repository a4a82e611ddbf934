//! The report rendered from small recorded run directories: a valid run, an invalid one with a
//! lost write, one whose files carry markup, and broken or missing files.

use std::collections::BTreeMap;
use std::path::Path;

use brook_jepsen::queue::{self, QueueOptions};
use brook_jepsen::{History, HistoryBuilder, Outcome};
use serde_json::{json, Value};

use super::{render, ReportError};

const MILLISECOND_NS: u64 = 1_000_000;
const SECOND_NS: u64 = 1_000_000_000;

/// One op of the fixture history, at a wall time; applied in time order.
#[derive(Clone, Debug)]
enum Step {
    Assign { partitions: Vec<u32> },
    SendInvoke { partition: u32, value: u64 },
    SendOk { partition: u32 },
    SendEnd { outcome: Outcome },
    PollInvoke,
    PollComplete,
}

/// A fault window of the fixture.
#[derive(Clone, Debug)]
struct Window {
    kind: &'static str,
    start_ns: u64,
    end_ns: u64,
    nodes: Vec<u32>,
    description: String,
}

impl Window {
    fn covers(&self, time_ns: u64) -> bool {
        self.start_ns <= time_ns && time_ns < self.end_ns
    }

    fn json(&self) -> Value {
        json!({"kind": self.kind, "start_ns": self.start_ns, "end_ns": self.end_ns,
               "nodes": self.nodes, "description": self.description})
    }
}

/// A recorded run: two producers (processes 1 and 2, to partitions 0 and 1; partition 1's
/// leader is on n2 and partition 0's on n1) and one consumer (process 10), for 8 s, with a kill
/// of n2 from 2.0 s to 3.0 s (sends to partition 1 fail) and n1 isolated from 5.0 s to 6.5 s
/// (sends to partition 0 time out: info), then a final drain.
struct Fixture {
    windows: Vec<Window>,
    /// Partition and offset of an acknowledged record that the log then loses.
    lose: Option<(u32, u64)>,
}

const PRODUCERS: [(u64, u32); 2] = [(1, 0), (2, 1)];
const CONSUMER: u64 = 10;
const RUN_NS: u64 = 8 * SECOND_NS;

impl Fixture {
    fn new() -> Fixture {
        Fixture {
            windows: vec![
                Window {
                    kind: "kill",
                    start_ns: 2 * SECOND_NS,
                    end_ns: 3 * SECOND_NS,
                    nodes: vec![2],
                    description: "kill -9 n2, restart after 1 s".to_owned(),
                },
                Window {
                    kind: "partition",
                    start_ns: 5 * SECOND_NS,
                    end_ns: 6_500 * MILLISECOND_NS,
                    nodes: vec![1],
                    description: "isolate n1 from n2,n3".to_owned(),
                },
            ],
            lose: None,
        }
    }

    fn steps(&self) -> Vec<(u64, u64, Step)> {
        let mut steps = vec![(
            0,
            CONSUMER,
            Step::Assign {
                partitions: vec![0, 1],
            },
        )];
        let mut value = 1u64;
        for (process, partition) in PRODUCERS {
            let leader = partition + 1;
            let mut time_ns = 50 * MILLISECOND_NS * (u64::from(partition) + 1);
            while time_ns < RUN_NS {
                let hit = self
                    .windows
                    .iter()
                    .find(|window| window.covers(time_ns) && window.nodes.contains(&leader));
                let (latency_ns, end) = match hit.map(|window| window.kind) {
                    Some("kill") => (
                        300 * MILLISECOND_NS,
                        Step::SendEnd {
                            outcome: Outcome::Fail,
                        },
                    ),
                    Some(_) => (
                        1000 * MILLISECOND_NS,
                        Step::SendEnd {
                            outcome: Outcome::Info,
                        },
                    ),
                    None => ((2 + value % 5) * MILLISECOND_NS, Step::SendOk { partition }),
                };
                steps.push((time_ns, process, Step::SendInvoke { partition, value }));
                steps.push((time_ns + latency_ns, process, end));
                value += 1;
                time_ns =
                    (time_ns + 100 * MILLISECOND_NS).max(time_ns + latency_ns + MILLISECOND_NS);
            }
        }
        // Polls every 250 ms, and the final drain after the run.
        let mut time_ns = 125 * MILLISECOND_NS;
        while time_ns < RUN_NS + SECOND_NS {
            steps.push((time_ns, CONSUMER, Step::PollInvoke));
            steps.push((time_ns + 2 * MILLISECOND_NS, CONSUMER, Step::PollComplete));
            time_ns += 250 * MILLISECOND_NS;
        }
        steps.sort_by_key(|(time_ns, process, _)| (*time_ns, *process));
        steps
    }

    /// The history, with realistic wall times.
    fn history(&self) -> History {
        let mut builder = HistoryBuilder::new();
        let mut times = Vec::new();
        // Per partition: (offset, value) of the records in the log.
        let mut logs: BTreeMap<u32, Vec<(u64, u64)>> = BTreeMap::new();
        let mut positions: BTreeMap<u32, u64> = BTreeMap::new();
        // Per producer: the value of its send in flight.
        let mut pending: BTreeMap<u64, u64> = BTreeMap::new();
        for (time_ns, process, step) in self.steps() {
            builder = match step {
                Step::Assign { partitions } => {
                    // Two ops: the invocation and its completion.
                    times.push(time_ns);
                    builder.assign(process, &partitions)
                }
                Step::SendInvoke { partition, value } => {
                    pending.insert(process, value);
                    builder.send_invoke(process, partition, value)
                }
                Step::SendOk { partition } => {
                    let log = logs.entry(partition).or_default();
                    let offset = log.last().map_or(0, |(offset, _)| offset + 1);
                    let value = pending[&process];
                    log.push((offset, value));
                    builder.send_complete_ok(process, partition, offset)
                }
                Step::SendEnd { outcome } => builder.complete(process, outcome),
                Step::PollInvoke => builder.poll_invoke(process),
                Step::PollComplete => {
                    let mut records = Vec::new();
                    for (&partition, log) in &logs {
                        let position = positions.entry(partition).or_insert(0);
                        let start = *position;
                        for &(offset, value) in log.iter().filter(|(offset, _)| *offset >= start) {
                            if self.lose == Some((partition, offset)) {
                                continue;
                            }
                            records.push((partition, offset, value));
                            *position = offset + 1;
                        }
                    }
                    builder.poll_complete(process, &records)
                }
            };
            times.push(time_ns);
        }
        let ops = builder
            .build()
            .ops()
            .iter()
            .zip(times)
            .map(|(op, time_ns)| {
                let mut op = op.clone();
                op.time_ns = time_ns;
                op
            })
            .collect();
        History::from_ops(ops).expect("indexes are positions")
    }

    /// Writes history.jsonl, nemesis.jsonl, results.json (with the queue checker's real
    /// report) and two node logs into `dir`; returns the history.
    fn write(&self, dir: &Path, seed: u64) -> History {
        let history = self.history();
        std::fs::write(dir.join("history.jsonl"), history.to_json_lines()).expect("write history");
        let nemesis: String = self
            .windows
            .iter()
            .map(|window| format!("{}\n", window.json()))
            .collect();
        std::fs::write(dir.join("nemesis.jsonl"), nemesis).expect("write nemesis");
        let report = queue::check(&history, &QueueOptions::default()).expect("history pairs");
        let anomalies: Vec<Value> = report
            .anomaly_counts
            .iter()
            .map(|(kind, count)| {
                let examples: Vec<usize> = report
                    .of(*kind)
                    .iter()
                    .flat_map(|anomaly| anomaly.ops.iter().copied())
                    .collect();
                json!({"kind": kind.name(), "count": count, "examples": examples})
            })
            .collect();
        let results = json!({
            "valid": report.valid,
            "seed": seed,
            "nodes": 3,
            "time_limit_secs": 8,
            "nemesis": ["kill", "partition"],
            "workload": "queue",
            "expect_anomalies": false,
            "counts": {"ops": history.len(), "sends_ok": report.counts.sends_ok,
                       "polls": report.counts.polls},
            "queue": report,
            "anomalies": anomalies,
        });
        std::fs::write(
            dir.join("results.json"),
            serde_json::to_string_pretty(&results).expect("json"),
        )
        .expect("write results");
        std::fs::create_dir_all(dir.join("nodes")).expect("nodes dir");
        for node in ["n1", "n2", "n3"] {
            std::fs::write(dir.join("nodes").join(format!("{node}.log")), "started\n")
                .expect("write log");
        }
        history
    }
}

fn render_page(dir: &Path) -> String {
    let path = render(dir).expect("render");
    // For a look at the pages in a browser: BROOK_REPORT_KEEP_DIR=/some/dir cargo nextest run ...
    if let Ok(keep) = std::env::var("BROOK_REPORT_KEEP_DIR") {
        let _ = std::fs::copy(
            &path,
            format!(
                "{keep}/{}.html",
                std::thread::current()
                    .name()
                    .unwrap_or("page")
                    .replace("::", "-")
            ),
        );
    }
    assert_eq!(path, dir.join("index.html"));
    std::fs::read_to_string(path).expect("read index.html")
}

/// The inline SVG of the figure with `id`.
fn figure_svg<'a>(page: &'a str, id: &str) -> &'a str {
    let figure_start = page
        .find(&format!("<figure id=\"{id}\">"))
        .unwrap_or_else(|| panic!("no figure {id}"));
    let figure = &page[figure_start..];
    let svg_start = figure
        .find("<svg")
        .unwrap_or_else(|| panic!("figure {id} has no svg"));
    let svg_end = figure.find("</svg>").expect("svg closes") + "</svg>".len();
    &figure[svg_start..svg_end]
}

/// The trimmed contents of every `<text>` element of an SVG.
fn svg_texts(svg: &str) -> Vec<&str> {
    svg.split("<text")
        .skip(1)
        .filter_map(|rest| {
            let start = rest.find('>')? + 1;
            let end = rest.find("</text>")?;
            Some(rest[start..end].trim())
        })
        .collect()
}

/// The value of attribute `name` in one SVG tag.
fn attribute(tag: &str, name: &str) -> Option<String> {
    let start = tag.find(&format!(" {name}=\""))? + name.len() + 3;
    let end = tag[start..].find('"')? + start;
    Some(tag[start..end].to_owned())
}

/// The `(x, width)` of every rectangle filled with `fill` at the shading's opacity.
fn shaded_rectangles(svg: &str, fill: &str) -> Vec<(f64, f64)> {
    svg.split("<rect")
        .skip(1)
        .map(|rest| &rest[..rest.find('>').unwrap_or(rest.len())])
        .filter(|tag| attribute(tag, "fill").as_deref() == Some(fill))
        .filter(|tag| {
            attribute(tag, "opacity").and_then(|opacity| opacity.parse::<f64>().ok())
                == Some(super::plot::WINDOW_OPACITY)
        })
        .map(|tag| {
            let number = |name| {
                attribute(tag, name)
                    .and_then(|value| value.parse::<f64>().ok())
                    .expect("numeric attribute")
            };
            (number("x"), number("width"))
        })
        .collect()
}

#[test]
fn valid_run_page_has_summary_plots_and_shaded_labelled_windows() {
    let dir = tempfile::tempdir().expect("tempdir");
    let history = Fixture::new().write(dir.path(), 42);
    let page = render_page(dir.path());

    assert!(page.contains("class=\"verdict valid\""), "verdict banner");
    assert!(page.contains("The checkers reported no anomaly."));
    assert!(page.contains("<th>seed</th><td>42</td>"));
    assert!(page.contains("<th>nemesis</th><td>kill, partition</td>"));
    assert!(page.contains("every value was read by some poll"));

    let operations = history.operations().expect("pairs");
    let sends_ok = operations
        .iter()
        .filter(|operation| operation.kind.name() == "send" && operation.outcome == Outcome::Ok)
        .count();
    let sends_fail = operations
        .iter()
        .filter(|operation| operation.kind.name() == "send" && operation.outcome == Outcome::Fail)
        .count();
    assert!(
        sends_ok > 50 && sends_fail > 0,
        "fixture has {sends_ok} ok, {sends_fail} failed sends"
    );

    let kill_color = super::plot::hex(super::plot::window_color("kill"));
    let partition_color = super::plot::hex(super::plot::window_color("partition"));
    for id in ["plot-latency-send", "plot-latency-poll", "plot-throughput"] {
        let svg = figure_svg(&page, id);
        // Each window shaded once, where it happened: the kill (1 s) starts left of the
        // partition (1.5 s), and their widths keep the ratio of their durations.
        let kills = shaded_rectangles(svg, &kill_color);
        let partitions = shaded_rectangles(svg, &partition_color);
        assert_eq!(
            (kills.len(), partitions.len()),
            (1, 1),
            "{id}: one shading per window"
        );
        let ((kill_x, kill_width), (partition_x, partition_width)) = (kills[0], partitions[0]);
        assert!(
            kill_x < partition_x,
            "{id}: kill at {kill_x}, partition at {partition_x}"
        );
        assert!(
            (partition_width / kill_width - 1.5).abs() < 0.05,
            "{id}: widths {kill_width} and {partition_width}"
        );
        // The windows start at 2 s and 5 s: x = left + 2/T and left + 5/T of the axis.
        let pixels_per_second = kill_width;
        assert!(
            ((partition_x - kill_x) / pixels_per_second - 3.0).abs() < 0.05,
            "{id}: the windows are 3 s apart"
        );
        let texts = svg_texts(svg);
        assert!(
            texts.contains(&"kill n2"),
            "{id}: kill labelled in {texts:?}"
        );
        assert!(texts.contains(&"partition n1"), "{id}: partition labelled");
    }
    // One point per operation (plus one in the legend).
    let send_svg = figure_svg(&page, "plot-latency-send");
    assert_eq!(
        send_svg.matches("<circle").count(),
        sends_ok + 1,
        "ok sends drawn"
    );
    assert!(
        page.contains(&format!("ok ({sends_ok})")),
        "legend counts ok sends"
    );

    // Self-contained: no script, no stylesheet or image fetched, links relative.
    assert!(!page.contains("<script"));
    assert!(!page.contains("<link"));
    assert!(!page.contains(" src="));
    assert!(!page.contains("href=\"http"));
    assert!(!page.contains("url("));
    for link in [
        "history.jsonl",
        "nemesis.jsonl",
        "results.json",
        "nodes/n1.log",
        "nodes/n3.log",
    ] {
        assert!(page.contains(&format!("href=\"{link}\"")), "link to {link}");
    }
    // Re-rendering is deterministic.
    assert_eq!(render_page(dir.path()), page);
}

#[test]
fn invalid_run_lists_the_lost_write_with_its_operations() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut fixture = Fixture::new();
    fixture.lose = Some((0, 7));
    let history = fixture.write(dir.path(), 7);
    let report = queue::check(&history, &QueueOptions::default()).expect("pairs");
    let lost = report.of(brook_jepsen::AnomalyKind::LostWrite);
    assert_eq!(
        lost.len(),
        1,
        "the fixture loses one write: {}",
        report.summary(3)
    );
    let lost_value = lost[0].values[0];

    let page = render_page(dir.path());
    assert!(page.contains("class=\"verdict invalid\""));
    assert!(
        page.contains("href=\"#anomaly-queue-lost-write\""),
        "count links to details"
    );
    let details_start = page
        .find("<h3 id=\"anomaly-queue-lost-write\">")
        .expect("lost-write details");
    let details = &page[details_start..];
    let details = &details[..details[4..]
        .find("<h3")
        .map_or(details.len(), |end| end + 4)];
    assert!(details.contains("lost-write (queue, 1)"));
    // The checker's message, and the operations it names, looked up in the history.
    let message = maud::html! { (lost[0].message) }.into_string();
    assert!(details.contains(&message), "message shown");
    let send = history
        .operations()
        .expect("pairs")
        .into_iter()
        .find(|operation| {
            matches!(operation.kind, brook_jepsen::OpKind::Send { value, .. } if value == lost_value)
        })
        .expect("send of the lost value");
    assert!(
        details.contains(&format!(
            "<td class=\"number\">{}-{}</td>",
            send.invoke,
            send.completion.expect("completed")
        )),
        "the send's row"
    );
    assert!(details.contains(&format!(
        "value <mark>{lost_value}</mark> partition 0 offset 7 acks=all"
    )));
    assert!(details.contains("named by the checker; sent value"));
    // The read past it, as the checker names it: the poll that returned a higher offset.
    let (read_offset, read_value) = (lost[0].offsets[1], lost[0].values[1]);
    assert!(read_offset > 7);
    assert!(
        details.contains(&format!("p0@{read_offset}=<mark>{read_value}</mark>")),
        "the poll that read past the lost write"
    );
    // And the operations are counted in the summary.
    assert!(page.contains("never read by any poll"));
}

#[test]
fn strings_from_the_run_files_are_escaped() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut fixture = Fixture::new();
    fixture.windows[0].description = "<script>alert('kill')</script> & more".to_owned();
    fixture.windows[1].kind = "<script>x</script>";
    fixture.write(dir.path(), 1);
    // A workload name and a node log name with markup.
    let results_path = dir.path().join("results.json");
    let mut results: Value =
        serde_json::from_str(&std::fs::read_to_string(&results_path).expect("read")).expect("json");
    results["workload"] = json!("<img src=x onerror=alert(1)>");
    std::fs::write(&results_path, results.to_string()).expect("write");
    std::fs::write(dir.path().join("nodes").join("<b>n4.log"), "").expect("write log");

    let page = render_page(dir.path());
    assert!(!page.contains("<script"), "no script element");
    assert!(!page.contains("<img"), "no image element");
    assert!(!page.contains("<b>"), "no bold element from a file name");
    assert!(page.contains("&lt;script&gt;alert('kill')&lt;/script&gt; &amp; more"));
    assert!(page.contains("&lt;img src=x onerror=alert(1)&gt;"));
    assert!(page.contains("href=\"nodes/%3Cb%3En4.log\""));
    // The unknown kind is labelled on the plots, escaped by the SVG backend.
    assert!(svg_texts(figure_svg(&page, "plot-throughput"))
        .contains(&"&lt;script&gt;x&lt;/script&gt; n1"));
}

#[test]
fn missing_files_give_a_page_that_says_so() {
    let dir = tempfile::tempdir().expect("tempdir");
    let page = render_page(dir.path());
    assert!(page.contains("class=\"verdict unknown\""));
    assert!(page.contains("history.jsonl is missing"));
    assert!(page.contains("nemesis.jsonl is missing"));
    assert!(page.contains("<figure id=\"plot-throughput\">"));
}

#[test]
fn a_history_that_does_not_parse_is_an_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("history.jsonl"), "{\"index\":0,\"garbage\n").expect("write");
    match render(dir.path()) {
        Err(ReportError::History { path, .. }) => {
            assert_eq!(path, dir.path().join("history.jsonl"));
        }
        other => panic!("expected a history error, got {other:?}"),
    }
    assert!(!dir.path().join("index.html").exists());
}

#[test]
fn a_nemesis_line_that_does_not_parse_is_an_error_naming_the_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("nemesis.jsonl"),
        "{\"kind\":\"kill\",\"start_ns\":1,\"end_ns\":2}\n{\"kind\":\"pause\"}\n",
    )
    .expect("write");
    match render(dir.path()) {
        Err(ReportError::Nemesis { line, .. }) => assert_eq!(line, 2),
        other => panic!("expected a nemesis error, got {other:?}"),
    }
}

/// Rewrites `results.json` of a fixture directory with `edit`.
fn edit_results(dir: &Path, edit: impl FnOnce(&mut Value)) {
    let path = dir.join("results.json");
    let mut results: Value =
        serde_json::from_str(&std::fs::read_to_string(&path).expect("read")).expect("json");
    edit(&mut results);
    std::fs::write(&path, results.to_string()).expect("write");
}

#[test]
fn anomalies_named_only_by_history_index_show_those_operations() {
    let dir = tempfile::tempdir().expect("tempdir");
    let history = Fixture::new().write(dir.path(), 3);
    let operations = history.operations().expect("pairs");
    // A failed send and a poll, named by their completions' history indexes only.
    let failed = operations
        .iter()
        .find(|operation| operation.outcome == Outcome::Fail)
        .expect("a failed send");
    let poll = operations
        .iter()
        .find(|operation| operation.kind.name() == "poll")
        .expect("a poll");
    let named = [
        failed.completion.expect("completed"),
        poll.completion.expect("completed"),
    ];
    edit_results(dir.path(), |results| {
        results["valid"] = json!(false);
        results["anomalies"] = json!([{"kind": "lost-write-acks1", "count": 5, "examples": named}]);
        results["linearizable"] = json!({
            "verdict": "not-linearizable",
            "partitions": [],
            "witness": {"partition": 0, "blocked_op": named[0], "blocked": "append",
                        "log_length": 3, "linearized": [], "concurrent": [named[1]],
                        "message": "append could not be placed at length 3"},
        });
    });
    let page = render_page(dir.path());
    for (checker, kind, count) in [
        ("run", "lost-write-acks1", 5),
        ("linearizability", "not-linearizable", 1),
    ] {
        let start = page
            .find(&format!("<h3 id=\"anomaly-{checker}-{kind}\">"))
            .unwrap_or_else(|| panic!("details of {kind}"));
        let details = &page[start..];
        let details = &details[..details[4..]
            .find("<h3")
            .map_or(details.len(), |end| end + 4)];
        assert!(details.contains(&format!("{kind} ({checker}, {count})")));
        for operation in [failed, poll] {
            let row = format!(
                "<td class=\"number\">{}-{}</td>",
                operation.invoke,
                operation.completion.expect("completed")
            );
            assert!(details.contains(&row), "{kind}: row {row}");
        }
        assert!(
            details.contains("<td class=\"bad\">fail</td>"),
            "outcome shown"
        );
    }
    assert!(page.contains("append could not be placed at length 3"));
    assert!(
        page.contains("<td class=\"bad\">not-linearizable</td>"),
        "checker verdict"
    );
}

#[test]
fn a_history_index_not_in_the_history_is_reported_as_missing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let history = Fixture::new().write(dir.path(), 3);
    let beyond = history.len() + 10;
    edit_results(dir.path(), |results| {
        results["anomalies"] = json!([{"kind": "unseen", "count": 1, "examples": [beyond]}]);
    });
    let page = render_page(dir.path());
    assert!(page.contains(&format!("Not in the history: {beyond}")));
}
