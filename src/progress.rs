//! The reporter: the one place that writes what users read. Progress events as an
//! indicatif bar on a terminal, one JSON object per line with `--json`, or nothing;
//! notes (`-v`), status lines and warnings on stderr (or as JSON notes); dry-run
//! listings and result tables. Lower layers hand it events and text; they never print.

// The one module allowed to print (lib.rs denies it everywhere else).
#![allow(clippy::print_stdout, clippy::print_stderr)]

use crate::copy::bundle::Record;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::{json, Value};
use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Progress events from the transports; `Reporter` renders them as bars or JSON lines.
pub(crate) trait Progress: Send + Sync {
    /// The whole job is known: how many files and bytes will move.
    fn plan(&self, files: u64, bytes: u64);
    /// More bytes moved (and were verified or are being verified).
    fn advance(&self, bytes: u64);
    /// One file is complete on the receiving side (staged, verified).
    fn file_done(&self, path: &[u8], bytes: u64);
    /// Something the user should know (transport chosen, skipped entries).
    fn note(&self, text: &str);
    /// Something the user must hear about even without -v (a source that grew).
    fn warn(&self, text: &str);
}

pub enum Reporter {
    Bar(Bar),
    Json(JsonLines),
    Silent { notes: bool, warnings: bool },
}

/// Where a warning lands: stderr unless -q, a bar's line above it, or under --json a
/// `note` event with `"level": "warning"` (its text starts with `warning: `).
fn warning_event(text: &str) -> Value {
    json!({"event": "note", "level": "warning", "text": format!("warning: {text}")})
}

/// The terminal bar and the file counts its message shows.
pub struct Bar {
    bar: ProgressBar,
    files_done: AtomicU64,
    files: AtomicU64,
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
            return Reporter::Bar(Bar {
                bar,
                files_done: AtomicU64::new(0),
                files: AtomicU64::new(0),
            });
        }
        Reporter::Silent {
            notes: verbose && !quiet,
            warnings: !quiet,
        }
    }

    /// Status for commands without progress (`exec`, `forward`): stderr notes and
    /// warnings, never a bar.
    pub fn plain(quiet: bool, verbose: bool) -> Reporter {
        Reporter::Silent {
            notes: verbose && !quiet,
            warnings: !quiet,
        }
    }

    /// A status line the user sees without -v (not under -q).
    pub fn info(&self, text: &str) {
        match self {
            Reporter::Bar(b) => b.bar.println(format!("ssmcp: {text}")),
            Reporter::Json(_) => self.event(json!({"event": "note", "text": text})),
            Reporter::Silent { warnings: true, .. } => eprintln!("ssmcp: {text}"),
            Reporter::Silent { .. } => {}
        }
    }

    /// One line of a command's result on stdout (`gc`'s removals, `doctor`'s report).
    pub fn out(&self, line: &str) {
        println!("{line}");
    }

    /// A table for people (per-instance results), on stderr after the bar is gone;
    /// nothing under --json (the events carry it) or -q.
    pub fn table(&self, text: &str) {
        match self {
            Reporter::Json(_)
            | Reporter::Silent {
                warnings: false, ..
            } => {}
            _ => {
                self.finish();
                eprint!("{text}");
            }
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

    /// --dry-run: one line (or `plan-entry` event) per entry, then the total; the
    /// files and bytes the copy would move.
    pub fn dry_run<'a>(&self, records: impl Iterator<Item = &'a Record>, to: &str) -> (u64, u64) {
        let (mut files, mut bytes) = (0, 0);
        for r in records {
            let (kind, path, size) = match r {
                Record::Dir(m) => ("dir", &m.path, 0),
                Record::File { meta, size } | Record::Listed { meta, size } => {
                    files += 1;
                    bytes += size;
                    ("file", &meta.path, *size)
                }
                Record::Link { meta, .. } => ("link", &meta.path, 0),
                _ => continue,
            };
            let path = String::from_utf8_lossy(path);
            if matches!(self, Reporter::Json(_)) {
                self.event(
                    json!({"event": "plan-entry", "kind": kind, "path": path, "bytes": size}),
                );
            } else {
                println!("{kind}\t{size}\t{path}");
            }
        }
        if !matches!(self, Reporter::Json(_)) {
            println!("would copy {files} files, {bytes} bytes to {to}");
        }
        (files, bytes)
    }

    pub fn finish(&self) {
        if let Reporter::Bar(b) = self {
            b.bar.finish_and_clear();
        }
    }
}

impl Progress for Reporter {
    fn plan(&self, files: u64, bytes: u64) {
        match self {
            Reporter::Bar(b) => {
                b.files.store(files, Ordering::Relaxed);
                b.bar.set_length(bytes);
                b.bar.set_message(format!("0/{files} files"));
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
            Reporter::Bar(b) => b.bar.inc(bytes),
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
                let done = b.files_done.fetch_add(1, Ordering::Relaxed) + 1;
                let files = b.files.load(Ordering::Relaxed);
                b.bar.set_message(format!("{done}/{files} files"));
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
            Reporter::Bar(b) => b.bar.println(format!("ssmcp: {text}")),
            Reporter::Json(_) => self.event(json!({"event": "note", "text": text})),
            Reporter::Silent { notes: true, .. } => eprintln!("ssmcp: {text}"),
            Reporter::Silent { notes: false, .. } => {}
        }
    }

    fn warn(&self, text: &str) {
        match self {
            Reporter::Bar(b) => b.bar.println(format!("ssmcp: warning: {text}")),
            Reporter::Json(_) => self.event(warning_event(text)),
            Reporter::Silent { warnings: true, .. } => eprintln!("ssmcp: warning: {text}"),
            Reporter::Silent {
                warnings: false, ..
            } => {}
        }
    }
}
