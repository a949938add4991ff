//! `--json` is an interface: docs/json-events.schema.json says what each event carries,
//! docs/json.md explains it, and nothing else may come out. Every run through the test
//! harness validates the events it sees (tests/common `check_events`); this file makes
//! sure each event type is produced at least once, and that the code can emit no event
//! the schema does not know.

mod common;
use common::*;
use ssm_sim::config::{DenyRule, InstanceConfig};
use std::collections::BTreeSet;
use std::path::Path;

fn schema_events() -> BTreeSet<String> {
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/json-events.schema.json"),
    )
    .unwrap();
    let schema: serde_json::Value = serde_json::from_str(&text).unwrap();
    schema["oneOf"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            v["properties"]["event"]["const"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect()
}

fn events_in(out: &str) -> Vec<serde_json::Value> {
    out.lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap_or_else(|e| panic!("{l}: {e}"))
        })
        .collect()
}

#[tokio::test]
async fn every_event_type_is_produced_and_matches_the_schema() {
    let mut cfg = fast();
    cfg.instances = vec![
        InstanceConfig::new(INSTANCE).tag("Role", "web"),
        InstanceConfig::new("i-0bbbbbbbbbbbbbbb2").tag("Role", "web"),
    ];
    cfg.deny = vec![DenyRule::action("ssm:TerminateSession")];
    let h = Harness::new(cfg).await;
    let src = h.local().join("site");
    std::fs::create_dir_all(src.join("sub")).unwrap();
    std::fs::write(src.join("sub/a.bin"), pattern(1, 3_000_000)).unwrap();
    std::fs::write(src.join("b.txt"), b"b").unwrap();
    let dest = format!("{INSTANCE}:site");
    std::fs::create_dir_all(h.local().join("fleet")).unwrap();
    let mut seen = BTreeSet::new();
    let mut runs: Vec<(i32, String)> = Vec::new();
    for args in [
        // plan, progress, file, summary; the denied TerminateSession is a warning note.
        vec!["--json", "-r", src.to_str().unwrap(), dest.as_str()],
        vec![
            "--json",
            "--dry-run",
            "-r",
            src.to_str().unwrap(),
            dest.as_str(),
        ],
        vec![
            "--json",
            "-r",
            &dest,
            h.local().join("back").to_str().unwrap(),
        ],
        // A failure's error event.
        vec![
            "--json",
            "-r",
            &format!("{INSTANCE}:no-such-dir"),
            h.local().to_str().unwrap(),
        ],
        // Several instances: one instance event each.
        vec![
            "--json",
            "-r",
            "tag:Role=web:site",
            h.local().join("fleet").to_str().unwrap(),
        ],
    ] {
        let (code, out, err) = h.run(&args).await;
        runs.push((code, err));
        for e in events_in(&out) {
            seen.insert(e["event"].as_str().unwrap().to_string());
        }
    }
    assert_eq!(runs[0].0, 0, "{}", runs[0].1);
    assert_ne!(runs[3].0, 0);
    assert_eq!(seen, schema_events(), "runs: {runs:?}");
}

/// Every `"event": "NAME"` the source can write is in the schema and has its section
/// in docs/json.md.
#[test]
fn the_code_emits_only_documented_events() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let known = schema_events();
    let page = std::fs::read_to_string(root.join("docs/json.md")).unwrap();
    let mut emitted = BTreeSet::new();
    for entry in walkdir::WalkDir::new(root.join("src")) {
        let entry = entry.unwrap();
        if entry.path().extension().is_none_or(|e| e != "rs") {
            continue;
        }
        let text = std::fs::read_to_string(entry.path()).unwrap();
        let mut rest = text.as_str();
        while let Some(at) = rest.find("\"event\": \"") {
            rest = &rest[at + "\"event\": \"".len()..];
            emitted.insert(rest.split('"').next().unwrap().to_string());
        }
    }
    assert!(emitted.len() >= 7, "{emitted:?}");
    for e in &emitted {
        assert!(
            known.contains(e),
            "src emits {e:?}, which the schema does not describe"
        );
    }
    for e in &known {
        assert!(
            page.contains(&format!("### `{e}`")),
            "docs/json.md has no section for {e}"
        );
    }
}

/// Off a terminal (CI logs, pipes) there is no progress bar and no terminal escape
/// sequence; `NO_COLOR` keeps them out of a terminal's logs too.
#[tokio::test]
async fn off_a_terminal_stderr_has_no_bar_and_no_escapes() {
    let h = Harness::new(fast()).await;
    let f = h.local().join("f.bin");
    std::fs::write(&f, pattern(2, 2_000_000)).unwrap();
    let dest = format!("{INSTANCE}:f.bin");
    let (code, out, err) = h.run(&["-vv", f.to_str().unwrap(), &dest]).await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "");
    assert!(!err.contains('\r') && !err.contains('\u{1b}'), "{err:?}");
    // In a terminal (util-linux `script` gives one) the log is coloured, unless
    // NO_COLOR is set (no-color.org).
    let cmd = format!("{} -vv {} {dest}", env!("CARGO_BIN_EXE_ssmcp"), f.display());
    for (no_color, coloured) in [(None, true), (Some("1"), false)] {
        let mut c = tokio::process::Command::new("script");
        c.args(["-qec", &cmd, "/dev/null"])
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", h.home.path())
            .env("TERM", "xterm")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .envs(h.sim.env())
            .stdin(std::process::Stdio::null());
        if let Some(v) = no_color {
            c.env("NO_COLOR", v);
        }
        let out = tokio::time::timeout(std::time::Duration::from_secs(60), c.output())
            .await
            .unwrap()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{text}");
        assert!(
            text.contains("DEBUG"),
            "the -vv log reached the terminal: {text:?}"
        );
        assert_eq!(
            has_colour(&text),
            coloured,
            "NO_COLOR={no_color:?}: {text:?}"
        );
    }
    h.assert_no_sessions_left().await;
}

/// Whether `text` holds an SGR (colour) sequence, ESC [ … m.
fn has_colour(text: &str) -> bool {
    text.split('\u{1b}').skip(1).any(|s| {
        s.strip_prefix('[').is_some_and(|rest| {
            rest.chars()
                .find(|c| !c.is_ascii_digit() && *c != ';')
                .is_some_and(|c| c == 'm')
        })
    })
}
