//! The receiver's protocol (remote/receiver.py), as types: every request ssmcp sends
//! and every answer it reads. A request is one JSON line (on a port-session connection,
//! or on the receiver's stdin under Run Command); the answer's first line says whether
//! it worked and carries its numbers, and a field that is missing is an error, never
//! a silent 0. Binary data that follows some answers (bundles, listings, ranges) is
//! `bundle.rs`'s business.
//!
//! tests/fixtures/receiver-protocol.json holds one golden line per message; the Rust
//! types and receiver.py's own tests both check themselves against it.

use crate::error::{Error, Flag, Kind, Result, DAMAGED};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// Bytes as lowercase hex: paths are bytes, not text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Hex(pub Vec<u8>);

impl Serialize for Hex {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(&self.0))
    }
}

impl<'de> Deserialize<'de> for Hex {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Hex, D::Error> {
        let s = String::deserialize(d)?;
        hex::decode(s).map(Hex).map_err(serde::de::Error::custom)
    }
}

/// A top-level entry of an upload: where the destination logic applies.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Top {
    pub name: Hex,
    pub dir: bool,
}

/// Requests on a connection (and, with their extra fields, under Run Command).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase")]
pub(crate) enum Request {
    Push(Push),
    Inventory(Inventory),
    List(List),
    Read(Read),
}

/// Place the bundle that follows (or, under Run Command, the one at `url`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Push {
    /// The destination as typed (relative paths are under the home directory).
    pub dest: Hex,
    pub tops: Vec<Top>,
    pub preserve: bool,
    pub atomic: bool,
    pub compress: bool,
    /// --delete: remove what the destination trees hold beyond the bundle and `keep`.
    pub delete: bool,
    pub keep: Vec<Hex>,
    /// --sync: bundle paths of files left out because the destination has them; under
    /// --atomic the receiver carries them into the tree that replaces the destination.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unchanged: Vec<Hex>,
    /// The S3 transport: a presigned GET of the staged bundle.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
}

/// --sync: for each (bundle path, size), the destination file's SHA-256 when it is a
/// regular file of that size.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Inventory {
    pub dest: Hex,
    pub tops: Vec<Top>,
    pub files: Vec<(Hex, u64)>,
}

/// A source of a download.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Source {
    pub path: Hex,
    /// `dir/`: the directory's contents, not the directory.
    pub contents: bool,
}

/// List the sources of a download.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct List {
    pub sources: Vec<Source>,
    pub recursive: bool,
    /// The S3 transport: where the instance uploads the listing and the bytes.
    #[serde(flatten, default, skip_serializing_if = "Option::is_none")]
    pub export: Option<Export>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Export {
    /// A presigned PUT, and the headers it was signed with.
    pub url: String,
    pub headers: Vec<(String, String)>,
    /// A bigger spool is kept for a second, multipart command.
    pub put_limit: u64,
}

/// Send these ranges of the files a listing named: (index, offset, length).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Read {
    pub id: String,
    pub ranges: Vec<(u32, u64, u64)>,
    pub compress: bool,
}

/// Run Command's second step of a big download through S3: upload the kept spool in
/// parts (their URLs are at `url`), or, without `url`, only remove it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Parts {
    pub spool: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
}

/// What `Parts::url` serves: one presigned UploadPart URL per part.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct PartPlan {
    pub part_size: u64,
    pub urls: Vec<String>,
    pub headers: Vec<(String, String)>,
}

/// The answer to `Push`, after the commit.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub(crate) struct Pushed {
    pub files: u64,
    pub bytes: u64,
    pub deleted: u64,
    /// Temporaries of killed runs the receiver removed on the way.
    pub reaped: u64,
}

/// The answer to `Inventory`, before one flag (and digest) per file.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub(crate) struct Inventoried {
    pub count: u64,
}

/// The answer to `List`, before the listing's records.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub(crate) struct Listed {
    /// Names the listing in `Read` requests.
    pub id: String,
}

/// The answer to `Read`, before the ranges.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub(crate) struct Reading {}

/// Every Run Command mode's result line carries these.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub(crate) struct Counted {
    pub files: u64,
    pub bytes: u64,
}

/// The export's result: the spool's size; `spool` when it was too big for one PUT.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub(crate) struct Exported {
    pub files: u64,
    pub bytes: u64,
    #[serde(default)]
    pub spool: Option<String>,
}

/// The parts' result: the ETag S3 gave each part, in order.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub(crate) struct PartsUploaded {
    pub etags: Vec<String>,
}

/// A refusal: its class decides the exit code (`transport::remote_failure`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
struct Failed {
    #[serde(default)]
    class: Option<String>,
    #[serde(default)]
    error: Option<String>,
}

/// A failure the receiver (or a pty script) reported, by its class: what it maps to
/// and what to do about it.
pub(crate) fn remote_failure(class: &str, message: &str) -> Error {
    let (kind, hint) = match class {
        "permission" => (
            Kind::Write,
            Some(format!("the session's user cannot write there; use {} or user@ to write as another user", Flag::Sudo)),
        ),
        "space" => (Kind::Write, Some("free some space on the instance".to_string())),
        "write" => (Kind::Write, None),
        "usage" | "source" => (Kind::Usage, None),
        "integrity" => (Kind::Transfer, Some(DAMAGED.to_string())),
        "aborted" => (Kind::Transfer, None),
        // Under Run Command: the instance could not reach S3.
        "fetch" => (
            Kind::Target,
            Some("the instance must reach S3 over HTTPS (a NAT gateway, or a VPC gateway endpoint for S3)".to_string()),
        ),
        _ => (Kind::Protocol, None),
    };
    let e = Error::new(kind, format!("on the instance: {message}"));
    match hint {
        Some(h) => e.hint(h),
        None => e,
    }
}

/// One request as its JSON line (newline included).
pub(crate) fn line<T: Serialize>(request: &T) -> Result<Vec<u8>> {
    let mut line = serde_json::to_vec(request).map_err(|e| Error::protocol(e.to_string()))?;
    line.push(b'\n');
    Ok(line)
}

/// An answer line: `T` when it says `"ok": true`, the receiver's failure when it says
/// `false`, a protocol error when it is not JSON or lacks one of `T`'s fields.
pub(crate) fn answer<T: DeserializeOwned>(line: &[u8]) -> Result<T> {
    let v: serde_json::Value = serde_json::from_slice(line)
        .map_err(|e| Error::protocol(format!("the receiver's answer is not JSON: {e}")))?;
    answer_of(v)
}

/// As `answer`, for an answer already parsed.
pub(crate) fn answer_of<T: DeserializeOwned>(v: serde_json::Value) -> Result<T> {
    match v.get("ok").and_then(serde_json::Value::as_bool) {
        Some(true) => serde_json::from_value(v)
            .map_err(|e| Error::protocol(format!("the receiver's answer is incomplete: {e}"))),
        _ => Err(failure_of(v)),
    }
}

/// The failure an answer reports (one that says nothing is still a failure).
fn failure_of(v: serde_json::Value) -> Error {
    let f: Failed = serde_json::from_value(v).unwrap_or(Failed {
        class: None,
        error: None,
    });
    remote_failure(
        f.class.as_deref().unwrap_or("protocol"),
        f.error.as_deref().unwrap_or("unknown failure"),
    )
}

/// The failure an answer line reports, if it is one: what the receiver said before it
/// closed a connection our write then broke on.
pub(crate) fn refusal(line: &[u8]) -> Option<Error> {
    let v: serde_json::Value = serde_json::from_slice(line).ok()?;
    (v.get("ok").and_then(serde_json::Value::as_bool) == Some(false)).then(|| failure_of(v))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    /// The golden lines, shared with receiver.py's tests.
    fn fixtures() -> Value {
        let text = include_str!("../../tests/fixtures/receiver-protocol.json");
        serde_json::from_str(text).expect("the fixture file is JSON")
    }

    fn fixture(section: &str, name: &str) -> Value {
        fixtures()[section][name].clone()
    }

    /// Each request type writes exactly its golden line, and reads it back.
    #[test]
    fn requests_are_their_golden_lines() {
        let tops = vec![
            Top {
                name: Hex(b"dist".to_vec()),
                dir: true,
            },
            Top {
                name: Hex(b"run.sh".to_vec()),
                dir: false,
            },
        ];
        let requests: Vec<(&str, Value)> = vec![
            (
                "push",
                serde_json::to_value(Request::Push(Push {
                    dest: Hex(b"app".to_vec()),
                    tops: tops.clone(),
                    preserve: true,
                    atomic: false,
                    compress: false,
                    delete: true,
                    keep: vec![Hex(b"dist/old.txt".to_vec())],
                    unchanged: Vec::new(),
                    url: None,
                }))
                .unwrap(),
            ),
            (
                "inventory",
                serde_json::to_value(Request::Inventory(Inventory {
                    dest: Hex(b"app".to_vec()),
                    tops,
                    files: vec![(Hex(b"dist/a.txt".to_vec()), 3)],
                }))
                .unwrap(),
            ),
            (
                "list",
                serde_json::to_value(Request::List(List {
                    sources: vec![
                        Source {
                            path: Hex(b"app/dist/".to_vec()),
                            contents: true,
                        },
                        Source {
                            path: Hex(b"app/run.sh".to_vec()),
                            contents: false,
                        },
                    ],
                    recursive: true,
                    export: None,
                }))
                .unwrap(),
            ),
            (
                "read",
                serde_json::to_value(Request::Read(Read {
                    id: "m1".into(),
                    ranges: vec![(0, 0, 3), (1, 0, 5)],
                    compress: false,
                }))
                .unwrap(),
            ),
            (
                "parts",
                serde_json::to_value(Parts {
                    spool: "ssmcp-spool-abc".into(),
                    url: None,
                })
                .unwrap(),
            ),
        ];
        for (name, got) in requests {
            assert_eq!(got, fixture("requests", name), "{name}");
            let back: Value = if name == "parts" {
                serde_json::to_value(serde_json::from_value::<Parts>(got.clone()).unwrap()).unwrap()
            } else {
                serde_json::to_value(serde_json::from_value::<Request>(got.clone()).unwrap())
                    .unwrap()
            };
            assert_eq!(back, got, "{name} round trip");
        }
    }

    #[test]
    fn answers_are_read_into_their_types() {
        let a = |name: &str| fixture("answers", name);
        assert_eq!(
            answer_of::<Pushed>(a("pushed")).unwrap(),
            Pushed {
                files: 2,
                bytes: 8,
                deleted: 1,
                reaped: 0
            }
        );
        assert_eq!(answer_of::<Inventoried>(a("inventoried")).unwrap().count, 1);
        assert_eq!(answer_of::<Listed>(a("listed")).unwrap().id, "m1");
        answer_of::<Reading>(a("reading")).unwrap();
        let exported: Exported = answer_of(a("exported")).unwrap();
        assert_eq!((exported.files, exported.spool), (2, None));
        let kept: Exported = answer_of(a("exported_kept")).unwrap();
        assert_eq!(kept.spool.as_deref(), Some("ssmcp-spool-abc"));
        let parts: PartsUploaded = answer_of(a("parts_uploaded")).unwrap();
        assert_eq!(parts.etags, ["\"e1\"", "\"e2\""]);
        let failed = answer_of::<Pushed>(a("refused")).unwrap_err();
        assert_eq!(failed.kind, Kind::Write);
        assert!(failed.message.contains("Permission denied"), "{failed}");
    }

    #[test]
    fn a_missing_field_is_an_error_not_a_zero() {
        let e = answer::<Pushed>(br#"{"ok": true, "files": 2, "bytes": 8}"#).unwrap_err();
        assert_eq!(e.kind, Kind::Protocol);
        assert!(e.message.contains("deleted"), "{e}");
        let e = answer::<Listed>(br#"{"ok": true}"#).unwrap_err();
        assert_eq!(e.kind, Kind::Protocol);
        let e = answer::<Listed>(b"not json").unwrap_err();
        assert_eq!(e.kind, Kind::Protocol);
        // A failure without its fields is still a failure.
        let e = answer::<Reading>(br#"{"ok": false}"#).unwrap_err();
        assert_eq!(e.kind, Kind::Protocol);
        assert!(refusal(br#"{"ok": true}"#).is_none());
        assert!(refusal(br#"{"ok": false, "class": "space", "error": "full"}"#).is_some());
    }
}
