//! Records are bytes: `brook produce` takes lines in any encoding (issue 9: a line that was not
//! UTF-8 made it exit with "stream did not contain valid UTF-8" and store nothing, not even the
//! lines before it), and `brook consume --output json` shows a key or value that is not UTF-8
//! as base64, named by `"key_encoding"` / `"value_encoding": "base64"`, instead of failing or
//! mangling it.

use brook_e2e::{run_cli, work_dir, Broker, CLI_TIMEOUT};
use serde_json::Value;

const TOPIC: &str = "bytes";

/// Standard base64 with padding, written out here so the test does not trust the encoder the
/// CLI uses.
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let triple = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let bits = u32::from(triple[0]) << 16 | u32::from(triple[1]) << 8 | u32::from(triple[2]);
        for index in 0..4 {
            if index <= chunk.len() {
                out.push(char::from(
                    ALPHABET[(bits >> (18 - 6 * index)) as usize & 63],
                ));
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[test]
fn base64_reference_matches_rfc_4648() {
    assert_eq!(base64(b""), "");
    assert_eq!(base64(b"f"), "Zg==");
    assert_eq!(base64(b"fo"), "Zm8=");
    assert_eq!(base64(b"foobar"), "Zm9vYmFy");
}

fn consume_json(bootstrap: &str, count: usize) -> Vec<Value> {
    let max = count.to_string();
    let consumed = run_cli(
        &[
            "-b",
            bootstrap,
            "consume",
            TOPIC,
            "--max",
            &max,
            "--timeout-ms",
            "5000",
        ],
        b"",
        CLI_TIMEOUT,
    );
    consumed.assert_success();
    let records: Vec<Value> = consumed
        .stdout_lines()
        .iter()
        .map(|line| serde_json::from_str(line).expect("each line is JSON"))
        .collect();
    assert_eq!(records.len(), count, "{consumed}");
    records
}

#[test]
fn lines_that_are_not_utf8_are_produced_as_bytes_and_consumed_as_base64() {
    let work = work_dir();
    let broker = Broker::dev(work.path(), &work.path().join("data"));
    let bootstrap = broker.bootstrap();
    run_cli(
        &["-b", &bootstrap, "topic", "create", TOPIC],
        b"",
        CLI_TIMEOUT,
    )
    .assert_success();

    // The issue's own input, then a last line without a newline.
    let produced = run_cli(
        &["-b", &bootstrap, "produce", TOPIC],
        b"ok1\n\xff\xfe bad\nok2\nlast",
        CLI_TIMEOUT,
    );
    produced.assert_success();
    assert_eq!(
        produced.stdout_lines().len(),
        4,
        "one ack per line: {produced}"
    );

    let records = consume_json(&bootstrap, 4);
    assert_eq!(records[0]["value"], "ok1");
    assert!(records[0].get("value_encoding").is_none(), "{}", records[0]);
    assert_eq!(
        records[1]["value"],
        base64(b"\xff\xfe bad"),
        "{}",
        records[1]
    );
    assert_eq!(records[1]["value_encoding"], "base64", "{}", records[1]);
    assert_eq!(records[2]["value"], "ok2");
    assert_eq!(records[3]["value"], "last");
    for record in &records {
        assert_eq!(record["key"], Value::Null, "{record}");
        assert!(record.get("key_encoding").is_none(), "{record}");
    }

    // Keys too: split at the separator as bytes; `\r\n` line ends are stripped as `\n`.
    let produced = run_cli(
        &["-b", &bootstrap, "produce", TOPIC, "--key-separator", "|"],
        b"\xc3\x28|utf8-value\r\nplain-key|\x80\x81\n",
        CLI_TIMEOUT,
    );
    produced.assert_success();
    assert_eq!(produced.stdout_lines().len(), 2, "{produced}");
    let records = consume_json(&bootstrap, 6);
    assert_eq!(records[4]["key"], base64(b"\xc3\x28"), "{}", records[4]);
    assert_eq!(records[4]["key_encoding"], "base64", "{}", records[4]);
    assert_eq!(records[4]["value"], "utf8-value", "{}", records[4]);
    assert!(records[4].get("value_encoding").is_none(), "{}", records[4]);
    assert_eq!(records[5]["key"], "plain-key", "{}", records[5]);
    assert_eq!(records[5]["value"], base64(b"\x80\x81"), "{}", records[5]);
    assert_eq!(records[5]["value_encoding"], "base64", "{}", records[5]);

    // `--output text` writes the value's bytes as they are.
    let consumed = run_cli(
        &[
            "-b",
            &bootstrap,
            "consume",
            TOPIC,
            "--output",
            "text",
            "--max",
            "3",
            "--timeout-ms",
            "5000",
        ],
        b"",
        CLI_TIMEOUT,
    );
    consumed.assert_success();
    // (stdout is read lossily; the bad bytes become U+FFFD, the rest must be intact.)
    assert_eq!(
        consumed.stdout, "ok1\n\u{fffd}\u{fffd} bad\nok2\n",
        "{consumed}"
    );
}
