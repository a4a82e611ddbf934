//! The history model: pairing, JSON lines, errors.

use brook_jepsen::{History, HistoryBuilder, HistoryError, OpKind, Outcome, Phase, PollRecord};

#[test]
fn json_lines_round_trip() {
    let history = HistoryBuilder::new()
        .send_ok(1, 0, 0, 1)
        .send_invoke_keyed(1, "k", 2)
        .complete(1, Outcome::Info)
        .send_fail(2, 1, 3)
        .subscribe(10)
        .rebalance(10, 4, &[0, 1])
        .assign(11, &[0])
        .seek(11, 0, 0)
        .poll(11, &[(0, 0, 1)])
        .end_offset(3, 0, 1)
        .commit_ok(10, 0, 1, 4)
        .fetch_committed(10, 0, Some(1))
        .fetch_committed(10, 1, None)
        .build();
    let text = history.to_json_lines();
    assert_eq!(text.lines().count(), history.len());
    let back = History::from_json_lines(&text).unwrap();
    assert_eq!(back, history);
    let first = text.lines().next().unwrap();
    assert_eq!(
        first,
        r#"{"index":0,"process":1,"time_ns":0,"phase":"invoke","kind":{"type":"send","partition":0,"value":1}}"#
    );
    assert!(
        text.contains(r#""kind":{"type":"poll","records":[{"partition":0,"offset":0,"value":1}]}"#)
    );
}

#[test]
fn hand_written_json_lines_parse() {
    let text = r#"
{"index":0,"process":7,"time_ns":100,"node":"n1","phase":"invoke","kind":{"type":"send","key":"a","value":42}}
{"index":1,"process":7,"time_ns":250,"node":"n1","phase":"ok","kind":{"type":"send","partition":3,"value":42,"offset":9}}
{"index":2,"process":8,"time_ns":260,"phase":"ok","kind":{"type":"subscribe"}}
"#;
    let history = History::from_json_lines(text).unwrap();
    let operations = history.operations().unwrap();
    assert_eq!(operations.len(), 2);
    assert_eq!(operations[0].outcome, Outcome::Ok);
    assert_eq!(operations[0].node.as_deref(), Some("n1"));
    assert_eq!(
        operations[0].kind,
        OpKind::Send {
            acks: Default::default(),
            partition: Some(3),
            key: Some("a".into()),
            value: 42,
            offset: Some(9)
        }
    );
    assert_eq!(
        (operations[1].invoke, operations[1].completion),
        (2, Some(2))
    );
}

#[test]
fn json_errors_name_the_line() {
    let text = "{\"index\":0,\"process\":1,\"time_ns\":0,\"phase\":\"ok\",\"kind\":{\"type\":\"subscribe\"}}\nnot json\n";
    match History::from_json_lines(text) {
        Err(HistoryError::Json { line: 2, .. }) => {}
        other => panic!("{other:?}"),
    }
    let text = "{\"index\":5,\"process\":1,\"time_ns\":0,\"phase\":\"ok\",\"kind\":{\"type\":\"subscribe\"}}";
    match History::from_json_lines(text) {
        Err(HistoryError::IndexMismatch {
            position: 0,
            index: 5,
        }) => {}
        other => panic!("{other:?}"),
    }
}

#[test]
fn pairing() {
    let history = HistoryBuilder::new()
        .send_invoke(1, 0, 1)
        .poll_invoke(2)
        .poll_complete(2, &[(0, 0, 1)])
        .send_complete_ok(1, 0, 0)
        .send_invoke(3, 0, 2)
        .send_fail(4, 0, 3)
        .build();
    let operations = history.operations().unwrap();
    let summary: Vec<(u64, usize, Option<usize>, Outcome)> = operations
        .iter()
        .map(|op| (op.process, op.invoke, op.completion, op.outcome))
        .collect();
    assert_eq!(
        summary,
        vec![
            (1, 0, Some(3), Outcome::Ok),
            (2, 1, Some(2), Outcome::Ok),
            (3, 4, None, Outcome::Info),
            (4, 5, Some(6), Outcome::Fail),
        ]
    );
    assert_eq!(
        operations[1].kind,
        OpKind::Poll {
            records: vec![PollRecord {
                partition: 0,
                offset: 0,
                value: 1
            }]
        }
    );
    // A failure that names no partition keeps the invocation's.
    let history = HistoryBuilder::new()
        .send_invoke(1, 5, 1)
        .op(
            1,
            Phase::Fail,
            OpKind::Send {
                acks: Default::default(),
                partition: None,
                key: None,
                value: 1,
                offset: None,
            },
        )
        .build();
    let operations = history.operations().unwrap();
    assert!(matches!(
        operations[0].kind,
        OpKind::Send {
            partition: Some(5),
            ..
        }
    ));
}

#[test]
fn pairing_errors() {
    let history = HistoryBuilder::new()
        .send_invoke(1, 0, 1)
        .send_invoke(1, 0, 2)
        .build();
    assert!(matches!(
        history.operations(),
        Err(HistoryError::ConcurrentInvoke {
            process: 1,
            first: 0,
            second: 1
        })
    ));
    let history = HistoryBuilder::new()
        .send_invoke(1, 0, 1)
        .op(
            1,
            Phase::Ok,
            OpKind::Poll {
                records: Vec::new(),
            },
        )
        .build();
    assert!(matches!(
        history.operations(),
        Err(HistoryError::CompletionMismatch {
            invocation_kind: "send",
            completion_kind: "poll",
            ..
        })
    ));
    let history = HistoryBuilder::new()
        .send_invoke(1, 0, 1)
        .op(
            1,
            Phase::Ok,
            OpKind::Send {
                acks: Default::default(),
                partition: Some(0),
                key: None,
                value: 2,
                offset: Some(0),
            },
        )
        .build();
    let error = history.operations().unwrap_err();
    assert!(
        error
            .to_string()
            .contains("does not match invocation 0 (send)"),
        "{error}"
    );
}
