//! Renders transport progress events: an indicatif bar on a terminal, one JSON object per
//! line with `--json`, or nothing.

use crate::transport::Progress;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::{json, Value};
use std::io::Write;
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub enum Reporter {
    Bar(ProgressBar),
    Json(JsonLines),
    Silent { notes: bool },
}

pub struct JsonLines {
    state: Mutex<JsonState>,
}

struct JsonState {
    total: u64,
    done: u64,
    last: Option<Instant>,
}

/// JSON progress lines at most this often.
const JSON_EVERY: Duration = Duration::from_millis(500);

impl Reporter {
    /// `json` wins; otherwise a bar when stderr is a terminal and not `quiet`.
    pub fn new(json: bool, quiet: bool, verbose: bool) -> Reporter {
        if json {
            return Reporter::Json(JsonLines {
                state: Mutex::new(JsonState {
                    total: 0,
                    done: 0,
                    last: None,
                }),
            });
        }
        if !quiet && std::io::IsTerminal::is_terminal(&std::io::stderr()) {
            let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr());
            bar.set_style(
                ProgressStyle::with_template(
                    "{bytes}/{total_bytes} {bar:30} {bytes_per_sec} ETA {eta} {msg}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            return Reporter::Bar(bar);
        }
        Reporter::Silent {
            notes: verbose && !quiet,
        }
    }

    /// One JSON event (only in JSON mode).
    pub fn event(&self, v: Value) {
        if let Reporter::Json(_) = self {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{v}");
            let _ = out.flush();
        }
    }

    pub fn finish(&self) {
        if let Reporter::Bar(b) = self {
            b.finish_and_clear();
        }
    }
}

impl Progress for Reporter {
    fn plan(&self, files: u64, bytes: u64) {
        match self {
            Reporter::Bar(b) => {
                b.set_length(bytes);
                b.set_message(format!("0/{files} files"));
            }
            Reporter::Json(j) => {
                if let Ok(mut s) = j.state.lock() {
                    s.total = bytes;
                }
                self.event(json!({"event": "plan", "files": files, "bytes": bytes}));
            }
            Reporter::Silent { .. } => {}
        }
    }

    fn advance(&self, bytes: u64) {
        match self {
            Reporter::Bar(b) => b.inc(bytes),
            Reporter::Json(j) => {
                let due = match j.state.lock() {
                    Ok(mut s) => {
                        s.done += bytes;
                        let due = s.last.is_none_or(|t| t.elapsed() >= JSON_EVERY);
                        if due {
                            s.last = Some(Instant::now());
                        }
                        due.then_some((s.done, s.total))
                    }
                    Err(_) => None,
                };
                if let Some((done, total)) = due {
                    self.event(json!({"event": "progress", "bytes": done, "total": total}));
                }
            }
            Reporter::Silent { .. } => {}
        }
    }

    fn file_done(&self, path: &[u8], bytes: u64) {
        match self {
            Reporter::Bar(b) => {
                let files = b.message();
                if let Some((done, total)) = files.split_once('/') {
                    let done: u64 = done.parse().unwrap_or(0) + 1;
                    b.set_message(format!("{done}/{total}"));
                }
            }
            Reporter::Json(_) => self.event(json!({
                "event": "file",
                "path": String::from_utf8_lossy(path),
                "bytes": bytes,
            })),
            Reporter::Silent { .. } => {}
        }
    }

    fn note(&self, text: &str) {
        match self {
            Reporter::Bar(b) => b.println(format!("ssmcp: {text}")),
            Reporter::Json(_) => self.event(json!({"event": "note", "text": text})),
            Reporter::Silent { notes: true } => eprintln!("ssmcp: {text}"),
            Reporter::Silent { notes: false } => {}
        }
    }
}
