//! The instance-side receiver on its own: a real python3 process fed hand-made bundles,
//! including hostile ones a compromised client (or a bug) could send.

use ssmcp::copy::bundle::{Meta, Mtime, Record};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};

struct Receiver {
    _child: Child,
    port: u16,
    token: String,
    home: tempfile::TempDir,
}

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/src/remote/receiver.py");

async fn start(file_size_limit: Option<u64>) -> Receiver {
    let home = tempfile::tempdir().unwrap();
    let mut cmd = Command::new("python3");
    cmd.arg(SCRIPT)
        .env("HOME", home.path())
        .current_dir(home.path())
        .stdin(Stdio::piped()) // its terminal: kept open, so it stays up
        .stdout(Stdio::piped())
        .kill_on_drop(true);
    if let Some(limit) = file_size_limit {
        // A quota in miniature: writes past `limit` bytes fail with EFBIG, as a full
        // disk fails with ENOSPC (python ignores SIGXFSZ).
        // SAFETY: setrlimit is async-signal-safe.
        unsafe {
            cmd.pre_exec(move || {
                let r = libc::rlimit {
                    rlim_cur: limit,
                    rlim_max: limit,
                };
                if libc::setrlimit(libc::RLIMIT_FSIZE, &r) == 0 {
                    Ok(())
                } else {
                    Err(std::io::Error::last_os_error())
                }
            });
        }
    }
    let mut child = cmd.spawn().expect("python3 runs");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let line = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let rest = line.strip_prefix("\x1eSSMCP-READY ").expect("READY line");
    let mut words = rest.split_whitespace();
    let port = words.next().unwrap().parse().unwrap();
    let token = words.next().unwrap().to_string();
    Receiver {
        _child: child,
        port,
        token,
        home,
    }
}

fn meta(path: &[u8]) -> Meta {
    Meta {
        path: path.to_vec(),
        mode: 0o644,
        mtime: Mtime { secs: 0, nanos: 0 },
    }
}

fn file(path: &[u8], content: &[u8]) -> Vec<u8> {
    use sha2::Digest;
    let mut b = Record::File {
        meta: meta(path),
        size: content.len() as u64,
    }
    .encode();
    b.extend_from_slice(content);
    b.extend_from_slice(&sha2::Sha256::digest(content));
    b
}

/// Send a push request with `tops` and `body`, return the receiver's answer.
async fn push(r: &Receiver, dest: &str, tops: &[(&str, bool)], body: Vec<u8>) -> serde_json::Value {
    let mut s = TcpStream::connect(("127.0.0.1", r.port)).await.unwrap();
    let tops: Vec<_> = tops
        .iter()
        .map(|(n, d)| serde_json::json!({"name": hex::encode(n), "dir": d}))
        .collect();
    let req = serde_json::json!({"op": "push", "dest": hex::encode(dest), "tops": tops});
    let mut msg = format!("{}\n{}\n", r.token, req).into_bytes();
    msg.extend_from_slice(&body);
    // The receiver may refuse and close before reading everything; that is fine.
    let _ = s.write_all(&msg).await;
    let mut answer = String::new();
    let _ = tokio::time::timeout(
        Duration::from_secs(20),
        BufReader::new(s).read_line(&mut answer),
    )
    .await
    .unwrap();
    serde_json::from_str(&answer).unwrap_or(serde_json::Value::Null)
}

fn entries(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = walkdir::WalkDir::new(dir)
        .min_depth(1)
        .into_iter()
        .map(|e| e.unwrap().path().to_path_buf())
        .collect();
    v.sort();
    v
}

fn end(count: u64) -> Vec<u8> {
    Record::End { count }.encode()
}

#[tokio::test]
async fn a_good_bundle_lands() {
    let r = start(None).await;
    let mut body = Record::Dir(meta(b"t")).encode();
    body.extend(file(b"t/a", b"hello"));
    body.extend(end(2));
    let answer = push(&r, "", &[("t", true)], body).await;
    assert_eq!(answer["ok"], true, "{answer}");
    assert_eq!(std::fs::read(r.home.path().join("t/a")).unwrap(), b"hello");
}

#[tokio::test]
async fn paths_that_escape_are_refused_and_nothing_is_written() {
    let r = start(None).await;
    for bad in [
        &b"t/../../escape"[..],
        b"/tmp/abs",
        b"t//x",
        b"other/x",
        b"t/./x",
    ] {
        let mut body = Record::Dir(meta(b"t")).encode();
        body.extend(file(bad, b"x"));
        body.extend(end(2));
        let answer = push(&r, "", &[("t", true)], body).await;
        assert_eq!(answer["ok"], false, "{}", String::from_utf8_lossy(bad));
        assert_eq!(answer["class"], "protocol", "{answer}");
        assert!(
            entries(r.home.path()).is_empty(),
            "{:?}",
            entries(r.home.path())
        );
    }
}

#[tokio::test]
async fn a_symlink_then_a_file_through_it_is_refused() {
    let r = start(None).await;
    let outside = tempfile::tempdir().unwrap();
    let mut body = Record::Dir(meta(b"t")).encode();
    body.extend(
        Record::Link {
            meta: meta(b"t/evil"),
            target: outside.path().as_os_str().as_encoded_bytes().to_vec(),
        }
        .encode(),
    );
    body.extend(file(b"t/evil/owned", b"x"));
    body.extend(end(3));
    let answer = push(&r, "", &[("t", true)], body).await;
    assert_eq!(answer["ok"], false, "{answer}");
    assert!(
        answer["error"].as_str().unwrap().contains("symlink"),
        "{answer}"
    );
    assert!(entries(outside.path()).is_empty());
    assert!(
        entries(r.home.path()).is_empty(),
        "{:?}",
        entries(r.home.path())
    );

    // An existing symlink in the destination is not written through either.
    std::fs::create_dir(r.home.path().join("t")).unwrap();
    std::os::unix::fs::symlink(outside.path(), r.home.path().join("t/link")).unwrap();
    let mut body = file(b"t/link/owned", b"x");
    body.extend(end(1));
    let answer = push(&r, "", &[("t", true)], body).await;
    assert_eq!(answer["ok"], false, "{answer}");
    assert!(entries(outside.path()).is_empty());
}

#[tokio::test]
async fn a_damaged_file_is_refused_and_the_previous_one_stays() {
    let r = start(None).await;
    std::fs::write(r.home.path().join("f"), b"previous").unwrap();
    let mut body = file(b"f", b"new content");
    let n = body.len();
    body[n - 1] ^= 1; // the digest no longer matches
    body.extend(end(1));
    let answer = push(&r, "f", &[("f", false)], body).await;
    assert_eq!(answer["class"], "integrity", "{answer}");
    assert_eq!(std::fs::read(r.home.path().join("f")).unwrap(), b"previous");
    assert_eq!(entries(r.home.path()).len(), 1);
}

#[tokio::test]
async fn the_wrong_token_gets_nothing() {
    let r = start(None).await;
    let mut s = TcpStream::connect(("127.0.0.1", r.port)).await.unwrap();
    s.write_all(b"not-the-token\n{\"op\":\"list\",\"sources\":[]}\n")
        .await
        .unwrap();
    let mut got = Vec::new();
    let n = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut got))
        .await
        .unwrap()
        .unwrap_or(0);
    assert_eq!(n, 0, "{}", String::from_utf8_lossy(&got));
}

#[tokio::test]
async fn a_full_disk_is_a_space_failure_and_leaves_nothing() {
    let r = start(Some(64 * 1024)).await;
    let mut body = Record::Dir(meta(b"t")).encode();
    body.extend(file(b"t/small", b"fits"));
    body.extend(file(b"t/large", &vec![7u8; 256 * 1024]));
    body.extend(end(3));
    let answer = push(&r, "", &[("t", true)], body).await;
    assert_eq!(answer["ok"], false, "{answer}");
    assert_eq!(answer["class"], "space", "{answer}");
    assert!(
        entries(r.home.path()).is_empty(),
        "{:?}",
        entries(r.home.path())
    );
}

#[test]
fn the_receiver_is_python_3_6_grammar() {
    // ast.parse with feature_version rejects syntax newer than 3.6 (walrus, positional-only
    // parameters, …); the machine's python3 is newer, the instances may not be.
    let check = "import ast,sys; ast.parse(open(sys.argv[1]).read(), feature_version=(3, 6))";
    let out = std::process::Command::new("python3")
        .args(["-c", check, SCRIPT])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Start a push of one file of `size` bytes and send only its first half; returns the
/// connection (kept open) once the receiver has staged the temporary.
async fn half_a_push(r: &Receiver, size: usize) -> TcpStream {
    let mut s = TcpStream::connect(("127.0.0.1", r.port)).await.unwrap();
    let tops = [serde_json::json!({"name": hex::encode("big"), "dir": false})];
    let req = serde_json::json!({"op": "push", "dest": hex::encode(""), "tops": tops});
    let mut msg = format!("{}\n{}\n", r.token, req).into_bytes();
    msg.extend(
        Record::File {
            meta: meta(b"big"),
            size: size as u64,
        }
        .encode(),
    );
    msg.extend(vec![7u8; size / 2]);
    s.write_all(&msg).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while temporaries(r.home.path()).is_empty() {
        assert!(tokio::time::Instant::now() < deadline, "nothing staged");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    s
}

fn temporaries(dir: &Path) -> Vec<String> {
    entries(dir)
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .filter(|n| n.contains(".ssmcp-"))
        .collect()
}

#[tokio::test]
async fn temporaries_name_their_owner_never_the_connection_token() {
    let r = start(None).await;
    let _conn = half_a_push(&r, 1 << 20).await;
    let pid = r._child.id().unwrap();
    for name in temporaries(r.home.path()) {
        assert!(!name.contains(&r.token), "the token is readable in {name}");
        assert!(name.starts_with(&format!(".big.ssmcp-{pid}-")), "{name}");
    }
}

#[tokio::test]
async fn sigterm_and_sighup_undo_the_uploads_under_way() {
    for sig in [
        nix::sys::signal::Signal::SIGTERM,
        nix::sys::signal::Signal::SIGHUP,
    ] {
        let mut r = start(None).await;
        let _conn = half_a_push(&r, 1 << 20).await;
        let pid = nix::unistd::Pid::from_raw(r._child.id().unwrap() as i32);
        nix::sys::signal::kill(pid, sig).unwrap();
        let status = tokio::time::timeout(Duration::from_secs(10), r._child.wait())
            .await
            .unwrap()
            .unwrap();
        assert!(!status.success(), "{sig}: {status:?}");
        assert!(
            entries(r.home.path()).is_empty(),
            "{sig}: {:?}",
            entries(r.home.path())
        );
    }
}

#[tokio::test]
async fn the_next_upload_reaps_what_a_killed_receiver_left() {
    let mut r = start(None).await;
    let conn = half_a_push(&r, 1 << 20).await;
    r._child.kill().await.unwrap();
    drop(conn);
    let left = temporaries(r.home.path());
    assert_eq!(left.len(), 1, "SIGKILL leaves the temporary");
    // A live owner's temporary is not touched (pid 1 is always running).
    let live = r.home.path().join(".other.ssmcp-1-0123456789ab.tmp");
    std::fs::write(&live, b"x").unwrap();
    let next = start(None).await;
    let home = r.home.path().to_path_buf();
    let mut body = file(b"small", b"next");
    body.extend(end(1));
    // The new receiver writes into the same directory.
    let dest = home.display().to_string() + "/";
    let answer = push(&next, &dest, &[("small", false)], body).await;
    assert_eq!(answer["ok"], true, "{answer}");
    assert_eq!(answer["reaped"], 1, "{answer}");
    assert_eq!(
        temporaries(&home),
        vec![".other.ssmcp-1-0123456789ab.tmp".to_string()]
    );
}
