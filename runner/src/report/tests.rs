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
    /// How long the producers run (the final drain follows for a second).
    run_ns: u64,
    /// Each producer's interval between sends.
    send_interval_ns: u64,
    /// When the consumer starts polling.
    polls_from_ns: u64,
}

const PRODUCERS: [(u64, u32); 2] = [(1, 0), (2, 1)];
const CONSUMER: u64 = 10;

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
            run_ns: 8 * SECOND_NS,
            send_interval_ns: 100 * MILLISECOND_NS,
            polls_from_ns: 125 * MILLISECOND_NS,
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
            while time_ns < self.run_ns {
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
                    (time_ns + self.send_interval_ns).max(time_ns + latency_ns + MILLISECOND_NS);
            }
        }
        // Polls every 250 ms, and the final drain after the run.
        let mut time_ns = self.polls_from_ns;
        while time_ns < self.run_ns + SECOND_NS {
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
        // The run's summary list, as brook-jepsen run writes it (realrun's notes).
        let anomalies: Vec<Value> = report
            .anomaly_counts
            .iter()
            .map(|(kind, count)| {
                let examples: Vec<Value> = report
                    .of(*kind)
                    .iter()
                    .take(5)
                    .map(|anomaly| {
                        json!({"message": anomaly.message, "ops": anomaly.ops,
                               "values": anomaly.values, "partitions": anomaly.partitions,
                               "offsets": anomaly.offsets})
                    })
                    .collect();
                json!({"checker": "queue", "kind": kind.name(), "count": count,
                       "examples": examples})
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
    // The queue workload makes no other request: no plot for them.
    assert!(!page.contains("plot-latency-other"));
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
    assert!(page.contains(&format!(
        "Every one of the {sends_ok} acknowledged sends was read back by a poll."
    )));

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
    assert_eq!(
        page.matches("lost-write (").count(),
        1,
        "the run's summary list does not repeat the queue report"
    );
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
        details.contains(&format!("<mark>p0@{read_offset}={read_value}</mark>")),
        "the poll that read past the lost write"
    );
    // And the banner and the summary count it.
    assert!(page.contains("never read by any poll"));
    assert!(page.contains(&format!(
        "1 of the {} acknowledged sends were never read back by any poll.",
        report.counts.sends_ok
    )));
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
        ("linearizable", "not-linearizable", 1),
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

#[test]
fn a_long_run_draws_a_bounded_number_of_points_and_says_so() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut fixture = Fixture::new();
    fixture.run_ns = 240 * SECOND_NS;
    fixture.send_interval_ns = 8 * MILLISECOND_NS;
    let history = fixture.write(dir.path(), 11);
    let sends_ok = history
        .operations()
        .expect("pairs")
        .iter()
        .filter(|operation| operation.kind.name() == "send" && operation.outcome == Outcome::Ok)
        .count();
    let limit = super::plot::LATENCY_POINTS_PER_SERIES_MAX;
    assert!(sends_ok > 2 * limit, "the fixture has {sends_ok} ok sends");

    let page = render_page(dir.path());
    let stride = sends_ok.div_ceil(limit);
    let drawn = sends_ok.div_ceil(stride);
    let send_svg = figure_svg(&page, "plot-latency-send");
    assert_eq!(
        send_svg.matches("<circle").count(),
        drawn + 1,
        "thinned ok sends, legend"
    );
    assert!(page.contains(&format!(
        "ok: 1 of every {stride} of the {sends_ok} operations is drawn."
    )));
    assert!(
        page.contains(&format!("ok ({sends_ok})")),
        "the legend counts them all"
    );
    // All failed sends are drawn (two crosses per fail, plus the legend's).
    let sends_fail = history
        .operations()
        .expect("pairs")
        .iter()
        .filter(|operation| operation.kind.name() == "send" && operation.outcome == Outcome::Fail)
        .count();
    assert!(sends_fail > 0);
    let fail_color = format!("stroke=\"{}\"", super::plot::hex(super::plot::COLOR_FAIL));
    let crosses = send_svg
        .split("<line")
        .filter(|tag| tag[..tag.find('>').unwrap_or(tag.len())].contains(&fail_color))
        .count();
    assert_eq!(
        crosses,
        2 * (sends_fail + 1),
        "every failed send drawn, and the legend's"
    );
    assert!(
        page.len() < 16 * 1024 * 1024,
        "page of {} bytes",
        page.len()
    );
}

#[test]
fn an_expected_anomaly_run_that_found_them_says_so_and_run_errors_are_listed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut fixture = Fixture::new();
    fixture.lose = Some((0, 7));
    fixture.write(dir.path(), 5);
    edit_results(dir.path(), |results| {
        results["expect_anomalies"] = json!(true);
        results["passed"] = json!(true);
        results["acks"] = json!("1");
        results["errors"] = json!(["n3 did not stop <in time>"]);
        results["notes"] = json!(["replica logs read from 3 nodes"]);
    });
    let page = render_page(dir.path());
    assert!(page.contains("Invalid, as this run expected"));
    assert!(
        page.contains("class=\"verdict valid\""),
        "a passed self-test is green"
    );
    assert!(page.contains("<li>n3 did not stop &lt;in time&gt;</li>"));
    assert!(page.contains("<li>replica logs read from 3 nodes</li>"));
    assert!(page.contains("<th>acks</th><td>1</td>"));

    // The same run had it found nothing: red.
    edit_results(dir.path(), |results| {
        results["valid"] = json!(true);
        results["passed"] = json!(false);
    });
    let page = render_page(dir.path());
    assert!(page.contains("the checker missed them (failed)"));
    assert!(page.contains("class=\"verdict invalid\""));
}

#[test]
fn a_long_poll_shows_the_records_of_the_values_involved_with_their_neighbours() {
    let records: Vec<brook_jepsen::PollRecord> = (0..100u64)
        .map(|offset| brook_jepsen::PollRecord {
            partition: 0,
            offset,
            value: 1000 + offset,
        })
        .collect();
    let marks = |values: &[u64]| {
        super::anomalies::Marks::of(&super::anomalies::AnomalyItem {
            values: values.to_vec(),
            ..Default::default()
        })
    };
    assert_eq!(
        super::page::shown_records(&records, &marks(&[1030, 1070])),
        vec![29, 30, 31, 69, 70, 71]
    );
    assert_eq!(
        super::page::shown_records(&records, &marks(&[1000])),
        vec![0, 1]
    );
    assert_eq!(
        super::page::shown_records(&records, &marks(&[1099])),
        vec![98, 99]
    );
    // Nothing involved: the first records, up to the bound.
    assert_eq!(
        super::page::shown_records(&records, &marks(&[7])),
        (0..12).collect::<Vec<_>>()
    );
    // Many involved: bounded.
    let all: Vec<u64> = (1000..1100).collect();
    assert_eq!(super::page::shown_records(&records, &marks(&all)).len(), 12);
    // A partition and offset named (what was read where a lost write should be).
    let place = super::anomalies::Marks::of(&super::anomalies::AnomalyItem {
        partitions: vec![0],
        offsets: vec![50],
        ..Default::default()
    });
    assert_eq!(
        super::page::shown_records(&records, &place),
        vec![49, 50, 51]
    );
}

#[test]
fn an_anomaly_naming_a_partition_and_offset_lists_the_polls_that_read_there() {
    let dir = tempfile::tempdir().expect("tempdir");
    let history = Fixture::new().write(dir.path(), 3);
    let reader = history
        .operations()
        .expect("pairs")
        .into_iter()
        .find(|operation| match &operation.kind {
            brook_jepsen::OpKind::Poll { records } => records
                .iter()
                .any(|record| (record.partition, record.offset) == (0, 3)),
            _ => false,
        })
        .expect("a poll read partition 0 offset 3");
    edit_results(dir.path(), |results| {
        results["anomalies"] = json!([{"kind": "offset-gap", "count": 1,
            "examples": [{"message": "gap", "partitions": [0], "offsets": [3]}]}]);
    });
    let page = render_page(dir.path());
    let row = format!(
        "<td class=\"number\">{}-{}</td>",
        reader.invoke,
        reader.completion.expect("completed")
    );
    let start = page.find(&row).expect("the poll's row");
    let row_text = &page[start..start + page[start..].find("</tr>").expect("row ends")];
    assert!(row_text.contains("read partition 0 offset 3"), "{row_text}");
    assert!(row_text.contains("<mark>p0@3="), "{row_text}");
}

#[test]
fn crowded_windows_are_shaded_all_but_labelled_only_where_there_is_room() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut fixture = Fixture::new();
    // 40 windows of 100 ms, 200 ms apart: far narrower than their labels.
    fixture.windows = (0..40u64)
        .map(|number| Window {
            kind: if number % 2 == 0 { "kill" } else { "pause" },
            start_ns: number * 200 * MILLISECOND_NS,
            end_ns: number * 200 * MILLISECOND_NS + 100 * MILLISECOND_NS,
            nodes: vec![3],
            description: format!("window {number}"),
        })
        .collect();
    fixture.write(dir.path(), 9);
    let page = render_page(dir.path());
    let kill_color = super::plot::hex(super::plot::window_color("kill"));
    let pause_color = super::plot::hex(super::plot::window_color("pause"));
    for id in ["plot-latency-send", "plot-latency-poll", "plot-throughput"] {
        let svg = figure_svg(&page, id);
        assert_eq!(shaded_rectangles(svg, &kill_color).len(), 20, "{id}");
        assert_eq!(shaded_rectangles(svg, &pause_color).len(), 20, "{id}");
        // The labels: (x, y) of each text naming a window.
        let labels: Vec<(i32, i32, usize)> = svg
            .split("<text")
            .skip(1)
            .filter(|text| text.contains("kill n3") || text.contains("pause n3"))
            .map(|text| {
                let tag = &text[..text.find('>').expect("tag ends")];
                let number = |name| {
                    attribute(tag, name)
                        .and_then(|value| value.parse::<i32>().ok())
                        .expect("numeric")
                };
                let label_length = if text.contains("kill n3") { 7 } else { 8 };
                (number("x"), number("y"), label_length)
            })
            .collect();
        assert!(
            !labels.is_empty() && labels.len() < 40,
            "{id}: {} labels",
            labels.len()
        );
        assert!(page.contains(&format!(
            "{} of the 40 fault windows are labelled",
            labels.len()
        )));
        // At most two rows, and no two labels of a row overlap.
        let rows: std::collections::BTreeSet<i32> = labels.iter().map(|label| label.1).collect();
        assert!(rows.len() <= 2, "{id}: rows at {rows:?}");
        for row in rows {
            let mut spans: Vec<(i32, i32)> = labels
                .iter()
                .filter(|label| label.1 == row)
                .map(|&(x, _, length)| (x, x + 8 * i32::try_from(length).expect("small")))
                .collect();
            spans.sort();
            for pair in spans.windows(2) {
                assert!(pair[0].1 <= pair[1].0, "{id}: labels overlap: {pair:?}");
            }
        }
    }
}

#[test]
fn the_final_drain_is_left_out_of_the_throughput_plot_and_counted_in_its_caption() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut fixture = Fixture::new();
    // The consumer reads nothing until the producers stop: the drain reads everything.
    fixture.polls_from_ns = fixture.run_ns + 300 * MILLISECOND_NS;
    let history = fixture.write(dir.path(), 12);
    let operations = history.operations().expect("pairs");
    let sends_ok = operations
        .iter()
        .filter(|operation| operation.kind.name() == "send" && operation.outcome == Outcome::Ok)
        .count();
    let polls = operations
        .iter()
        .filter(|operation| operation.kind.name() == "poll")
        .count();
    let page = render_page(dir.path());
    assert!(
        page.contains(&format!(
            "Not drawn: the final drain, {polls} poll(s) invoked after the last send \
             completed, which read {sends_ok} records."
        )),
        "drain caption"
    );
    // The y axis is scaled to the sends (about 20/s), not to the drain's thousands per second.
    let svg = figure_svg(&page, "plot-throughput");
    let top_label = svg_texts(svg)
        .into_iter()
        .filter_map(|text| text.parse::<f64>().ok())
        .fold(0.0, f64::max);
    assert!(top_label < 100.0, "y axis up to {top_label}");
}

#[test]
fn a_results_file_that_is_not_json_is_an_error_naming_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    Fixture::new().write(dir.path(), 1);
    std::fs::write(dir.path().join("results.json"), "{\"valid\": tru").expect("write");
    let error = render(dir.path()).expect_err("results.json does not parse");
    assert!(matches!(error, ReportError::Results { .. }), "{error:?}");
    assert!(error.to_string().contains("results.json"), "{error}");
    assert!(!dir.path().join("index.html").exists());
}

#[test]
fn other_requests_get_a_latency_plot_of_their_own() {
    let dir = tempfile::tempdir().expect("tempdir");
    let history = HistoryBuilder::new()
        .send_ok(1, 0, 0, 1)
        .end_offset(2, 0, 1)
        .send_ok(1, 0, 1, 2)
        .end_offset(2, 0, 2)
        .commit_ok(3, 0, 2, 1)
        .poll(3, &[(0, 0, 1), (0, 1, 2)])
        .build();
    std::fs::write(dir.path().join("history.jsonl"), history.to_json_lines()).expect("write");
    let page = render_page(dir.path());
    let svg = figure_svg(&page, "plot-latency-other");
    // Two end-offset reads and a commit, and the legend's point.
    assert_eq!(svg.matches("<circle").count(), 3 + 1);
    assert!(page.contains("Latency of every other request over time, by outcome (3 operations)"));
}

/// The text of `html` without its tags.
fn text_of(html: &str) -> String {
    let mut text = String::new();
    let mut in_tag = false;
    for character in html.chars() {
        match character {
            '<' => in_tag = true,
            '>' => in_tag = false,
            other if !in_tag => text.push(other),
            _ => {}
        }
    }
    text
}

#[test]
fn each_nemesis_window_counts_the_sends_that_completed_in_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fixture = Fixture::new();
    let history = fixture.write(dir.path(), 2);
    let page = render_page(dir.path());
    let operations = history.operations().expect("pairs");
    for window in &fixture.windows {
        let mut expected = [0usize; 3];
        for operation in operations
            .iter()
            .filter(|operation| operation.kind.name() == "send")
        {
            let end_ns = history.ops()[operation.completion.expect("completed")].time_ns;
            if (window.start_ns..=window.end_ns).contains(&end_ns) {
                expected[match operation.outcome {
                    Outcome::Ok => 0,
                    Outcome::Fail => 1,
                    Outcome::Info => 2,
                }] += 1;
            }
        }
        // Sends to the other partition went on; the kill made sends fail, the isolation made
        // them indeterminate: every column is exercised.
        assert!(expected[0] > 0);
        match window.kind {
            "kill" => assert!(expected[1] > 0),
            _ => assert!(expected[2] > 0),
        }
        let description = maud::html! { (window.description) }.into_string();
        let row_start = page
            .find(&format!("<td>{description}</td>"))
            .expect("the window's row");
        let row = &page[row_start..row_start + page[row_start..].find("</tr>").expect("row ends")];
        let cells: Vec<&str> = row.split("<td").collect();
        let counts = text_of(&format!("<td{}", cells[cells.len() - 1]));
        assert_eq!(
            counts,
            format!("{}, {}, {}", expected[0], expected[1], expected[2]),
            "{}",
            window.kind
        );
    }
}
