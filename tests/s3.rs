//! The S3 transport end to end: the real binary stages the bundle in a real S3 server
//! (s3s-fs inside ssm-sim, and moto_server as a second, independent implementation),
//! Run Command runs the receiver for real on each simulated instance, and the files
//! land in each instance's own home.

mod common;
use common::*;
use serde_json::Value;
use ssm_sim::config::{InstanceConfig, DEFAULT_BUCKET};
use ssm_sim::SimConfig;
use std::path::Path;
use std::time::Duration;

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// `files` small files over nested directories, plus one of `big` bytes.
fn make_tree(root: &Path, files: usize, big: usize) {
    for i in 0..files {
        let dir = root.join(format!("d{:02}/e{}", i % 40, i % 3));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join(format!("f{i}.txt")),
            pattern(i as u64, 200 + i % 700),
        )
        .unwrap();
    }
    std::fs::write(root.join("big.bin"), pattern(7, big)).unwrap();
    std::os::unix::fs::symlink("big.bin", root.join("link")).unwrap();
}

fn fleet(n: usize) -> Vec<InstanceConfig> {
    (0..n)
        .map(|i| InstanceConfig::new(&format!("i-{i:017x}")).tag("Role", "web"))
        .collect()
}

fn s3_args<'a>(extra: &[&'a str]) -> Vec<&'a str> {
    let mut v = vec!["--transport", "s3", "--bucket", DEFAULT_BUCKET];
    v.extend_from_slice(extra);
    v
}

fn events(stdout: &str) -> Vec<Value> {
    stdout
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

#[tokio::test]
async fn a_tree_goes_through_s3_and_nothing_stays_in_the_bucket() {
    let h = Harness::new(fast()).await;
    let src = h.local().join("site");
    make_tree(&src, 2000, 12 << 20); // the big file makes the bundle multipart
    let (code, out, err) = h
        .run(&s3_args(&[
            "-r",
            "-p",
            "--json",
            s(&src),
            &format!("{INSTANCE}:www/"),
        ]))
        .await;
    assert_eq!(code, 0, "{err}");
    let placed = h.remote().join("www/site");
    assert_eq!(snapshot(&src, true), snapshot(&placed, true));
    assert_no_temporaries(&h.remote());
    assert_eq!(h.sim.s3_leftovers(), Vec::<String>::new());
    let ev = events(&out);
    let inst: Vec<_> = ev.iter().filter(|e| e["event"] == "instance").collect();
    assert_eq!(inst.len(), 1);
    assert_eq!(inst[0]["ok"], true);
    assert_eq!(inst[0]["files"], 2001);
    assert!(
        ev.iter()
            .any(|e| e["event"] == "summary" && e["files"] == 2001),
        "{out}"
    );
    assert!(!err.contains("X-Amz-Signature") && !out.contains("X-Amz-Signature"));
    assert_eq!(
        journal_files(&h),
        Vec::<std::path::PathBuf>::new(),
        "a run that cleaned up leaves no journal entry"
    );
}

#[tokio::test]
async fn a_one_gib_file_goes_through_s3() {
    let h = Harness::new(fast()).await;
    let src = h.local().join("disk.img");
    {
        use std::io::Write;
        let mut f = std::io::BufWriter::new(std::fs::File::create(&src).unwrap());
        for i in 0..1024u64 {
            f.write_all(&pattern(i, 1 << 20)).unwrap();
        }
    }
    let (code, _, err) = h
        .run(&s3_args(&[s(&src), &format!("{INSTANCE}:disk.img")]))
        .await;
    assert_eq!(code, 0, "{err}");
    let placed = h.remote().join("disk.img");
    assert_eq!(std::fs::metadata(&placed).unwrap().len(), 1 << 30);
    assert_eq!(file_sha(&src), file_sha(&placed));
    assert_eq!(h.sim.s3_leftovers(), Vec::<String>::new());
    std::fs::remove_file(&placed).unwrap();
}

fn file_sha(p: &Path) -> String {
    use sha2::{Digest, Sha256};
    let mut f = std::fs::File::open(p).unwrap();
    let mut h = Sha256::new();
    std::io::copy(&mut f, &mut h).unwrap();
    hex::encode(h.finalize())
}

/// 20 instances, 5 at a time; one is offline, one has no room for the files and one
/// is slow. With --max-errors 3 the other 18 get the tree, the table names the two, the
/// exit code says the copy failed.
#[tokio::test]
async fn fan_out_reports_each_instance_and_fails_for_the_two_that_did() {
    let mut instances = fleet(20);
    instances[3] = instances[3].clone().offline();
    instances[11] = instances[11].clone().file_size_limit(4096);
    instances[17] = instances[17].clone().slow(Duration::from_secs(2));
    let h = Harness::new(SimConfig {
        instances,
        ..fast()
    })
    .await;
    let src = h.local().join("app");
    make_tree(&src, 50, 64 << 10);
    let (code, out, err) = h
        .run(&s3_args(&[
            "-r",
            "--json",
            "--max-concurrency",
            "5",
            "--max-errors",
            "3",
            s(&src),
            "tag:Role=web:opt/",
        ]))
        .await;
    // The exit code is the class of the first failed instance by id: i-…03, offline.
    assert_eq!(code, 68, "{err}");
    let ev = events(&out);
    let inst: Vec<&Value> = ev.iter().filter(|e| e["event"] == "instance").collect();
    assert_eq!(inst.len(), 20, "{out}");
    let failed: Vec<&str> = inst
        .iter()
        .filter(|e| e["ok"] == false)
        .map(|e| e["instance"].as_str().unwrap())
        .collect();
    let offline = format!("i-{:017x}", 3);
    let full = format!("i-{:017x}", 11);
    assert_eq!(failed.len(), 2, "{out}");
    assert!(failed.contains(&offline.as_str()) && failed.contains(&full.as_str()));
    assert!(err.contains(&offline) && err.contains(&full), "{err}");
    assert!(err.contains("2 of 20 instances failed"), "{err}");
    for i in 0..20 {
        let id = format!("i-{i:017x}");
        let placed = h.instances.path().join(&id).join("opt/app");
        if i == 3 || i == 11 {
            assert!(!placed.exists(), "{id} has a partial tree");
            continue;
        }
        assert_eq!(snapshot(&src, false), snapshot(&placed, false), "{id}");
    }
    assert_no_temporaries(h.instances.path());
    assert_eq!(h.sim.s3_leftovers(), Vec::<String>::new());
}

#[tokio::test]
async fn the_result_table_names_every_instance() {
    let h = Harness::new(SimConfig {
        instances: fleet(3),
        ..fast()
    })
    .await;
    let src = h.local().join("f.txt");
    std::fs::write(&src, b"hello").unwrap();
    let ids: Vec<String> = (0..3).map(|i| format!("i-{i:017x}")).collect();
    let (code, _, err) = h
        .run(&s3_args(&[s(&src), &format!("{}:f.txt", ids.join(","))]))
        .await;
    assert_eq!(code, 0, "{err}");
    for id in &ids {
        assert!(
            err.lines()
                .any(|l| l.starts_with(id.as_str()) && l.contains("ok")),
            "{err}"
        );
        assert_eq!(
            std::fs::read(h.instances.path().join(id).join("f.txt")).unwrap(),
            b"hello"
        );
    }
}

#[tokio::test]
async fn a_name_pattern_reaches_every_managed_instance_it_matches() {
    let web1 = "i-0000000000000000a";
    let web2 = "i-0000000000000000b";
    let db1 = "i-0000000000000000c";
    let hybrid = "mi-0000000000000000d";
    let unmanaged = "i-0000000000000000e";
    let h = Harness::new(SimConfig {
        instances: vec![
            InstanceConfig::new(web1).tag("Name", "web-1"),
            InstanceConfig::new(web2).tag("Name", "web-2"),
            InstanceConfig::new(db1).tag("Name", "db-1"),
            InstanceConfig::new(hybrid).tag("Name", "web-3"),
        ],
        unmanaged_instances: vec![InstanceConfig::new(unmanaged).tag("Name", "web-4")],
        ..fast()
    })
    .await;
    let src = h.local().join("f.txt");
    std::fs::write(&src, b"to every web").unwrap();
    let (code, out, err) = h
        .run(&s3_args(&["--json", s(&src), "name:web-*:f.txt"]))
        .await;
    assert_eq!(code, 0, "{err}");
    let ev = events(&out);
    let reached: Vec<&str> = ev
        .iter()
        .filter(|e| e["event"] == "instance" && e["ok"] == true)
        .map(|e| e["instance"].as_str().unwrap())
        .collect();
    assert_eq!(reached, [web1, web2, hybrid], "{out}");
    for id in [web1, web2, hybrid] {
        assert_eq!(
            std::fs::read(h.instances.path().join(id).join("f.txt")).unwrap(),
            b"to every web"
        );
    }
    assert!(!h.instances.path().join(db1).join("f.txt").exists());
    // The unmanaged match is named in a warning (a note event under --json).
    assert!(
        ev.iter()
            .any(|e| e["event"] == "note"
                && e["text"].as_str().unwrap_or_default().contains(unmanaged)),
        "{out}"
    );
    assert_eq!(h.sim.s3_leftovers(), Vec::<String>::new());

    // Nothing matches: the target class, and nothing staged.
    let (code, _, err) = h.run(&s3_args(&[s(&src), "name:api-*:f.txt"])).await;
    assert_eq!(code, 68, "{err}");
    assert!(
        err.contains("no instance has a Name tag matching 'api-*'"),
        "{err}"
    );
    assert_eq!(h.sim.s3_leftovers(), Vec::<String>::new());
    // A pattern where one instance is needed is a usage error.
    let (code, _, err) = h.run(&["exec", "name:web-*", "--", "true"]).await;
    assert_eq!(code, 64, "{err}");
    assert!(err.contains("pattern"), "{err}");
    assert_eq!(h.sim.stats().sessions_started, 0);
}

#[tokio::test]
async fn interrupting_the_upload_leaves_nothing_in_s3() {
    let h = Harness::new(fast()).await;
    let src = h.local().join("big.bin");
    std::fs::write(&src, pattern(3, 40 << 20)).unwrap();
    // 40 MiB at 8 MB/s: the multipart upload is under way for seconds.
    let dest = format!("{INSTANCE}:big.bin");
    let args = s3_args(&["-l", "64000", s(&src), &dest]);
    let mut child = start_until(&h, &args, "no multipart upload started", || {
        multipart_under_way(&h)
    })
    .await;
    interrupt(&child);
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status.code(), Some(130));
    assert_eq!(h.sim.s3_leftovers(), Vec::<String>::new());
    assert!(!h.remote().join("big.bin").exists());
}

#[tokio::test]
async fn the_instance_without_python_fails_clearly() {
    let h = Harness::new(SimConfig {
        instances: vec![InstanceConfig::new(INSTANCE).without(&["python3"])],
        ..fast()
    })
    .await;
    let src = h.local().join("f.txt");
    std::fs::write(&src, b"x").unwrap();
    let (code, _, err) = h
        .run(&s3_args(&[s(&src), &format!("{INSTANCE}:f.txt")]))
        .await;
    assert_eq!(code, 68, "{err}");
    assert!(err.contains("no python3"), "{err}");
    assert_eq!(h.sim.s3_leftovers(), Vec::<String>::new());
}

#[tokio::test]
async fn wrong_use_is_refused_before_anything_is_created() {
    let h = Harness::new(SimConfig {
        instances: fleet(2),
        ..fast()
    })
    .await;
    let src = h.local().join("f.txt");
    std::fs::write(&src, b"x").unwrap();
    let two = format!("i-{:017x},i-{:017x}:f.txt", 0, 1);
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec![s(&src), &two], "needs a bucket"),
        (
            vec!["--transport", "stream", s(&src), &two],
            "goes through S3",
        ),
        (
            vec!["--bucket", DEFAULT_BUCKET, "--sync", s(&src), &two],
            "--sync and --delete need a session",
        ),
        (
            vec![
                "--transport",
                "s3",
                "--bucket",
                DEFAULT_BUCKET,
                "--exclude",
                "*.log",
                "i-00000000000000000:f.txt",
                s(&src),
            ],
            "--exclude and --dry-run are not supported for downloads through S3",
        ),
    ];
    for (args, says) in cases {
        let (code, _, err) = h.run(&args).await;
        assert_eq!(code, 64, "{args:?}: {err}");
        assert!(err.contains(says), "{args:?}: {err}");
    }
    let (code, _, err) = h
        .run(&[
            "--transport",
            "s3",
            "--bucket",
            "no-such-bucket",
            s(&src),
            &format!("{INSTANCE}:f.txt"),
        ])
        .await;
    assert_eq!(code, 64, "{err}");
    assert!(err.contains("bucket does not exist"), "{err}");
    assert_eq!(h.sim.s3_leftovers(), Vec::<String>::new());
}

#[tokio::test]
async fn auto_picks_s3_for_a_large_upload_when_a_bucket_is_configured() {
    let h = Harness::new(fast()).await;
    let src = h.local().join("big.bin");
    std::fs::write(&src, pattern(5, 65 << 20)).unwrap();
    let (code, _, err) = h
        .run_env(
            &[("SSMCP_BUCKET", Some(DEFAULT_BUCKET))],
            &["-v", s(&src), &format!("{INSTANCE}:big.bin")],
        )
        .await;
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("transport auto chose s3"), "{err}");
    assert_eq!(file_sha(&src), file_sha(&h.remote().join("big.bin")));
    assert_eq!(h.sim.s3_leftovers(), Vec::<String>::new());
}

/// moto_server (PyPI), an S3 written independently of s3s, on an ephemeral port.
/// scripts/test installs it into target/pyenv; SSMCP_MOTO_SERVER names another one.
struct Moto {
    // Held so the server is killed when the test ends.
    _child: tokio::process::Child,
    url: String,
    client: aws_sdk_s3::Client,
}

impl Moto {
    async fn start() -> Moto {
        let exe = std::env::var_os("SSMCP_MOTO_SERVER")
            .map(std::path::PathBuf::from)
            .unwrap_or_else(|| {
                Path::new(env!("CARGO_MANIFEST_DIR")).join("target/pyenv/bin/moto_server")
            });
        assert!(
            exe.exists(),
            "{} is missing: run scripts/test, which installs moto_server (or set SSMCP_MOTO_SERVER)",
            exe.display()
        );
        let mut child = tokio::process::Command::new(&exe)
            .args(["-H", "127.0.0.1", "-p", "0"])
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        use tokio::io::AsyncBufReadExt;
        let mut lines = tokio::io::BufReader::new(child.stderr.take().unwrap()).lines();
        let url = tokio::time::timeout(Duration::from_secs(60), async {
            while let Some(l) = lines.next_line().await.unwrap() {
                if let Some(at) = l.find("http://127.0.0.1:") {
                    return l[at..].trim().to_string();
                }
            }
            panic!("moto_server exited before listening");
        })
        .await
        .expect("moto_server listens within 60 s");
        // Keep draining its log so it never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        let conf = aws_sdk_s3::config::Builder::new()
            .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
            .region(aws_sdk_s3::config::Region::new("us-east-1"))
            .endpoint_url(&url)
            .force_path_style(true)
            .credentials_provider(aws_sdk_s3::config::Credentials::new(
                ssm_sim::config::ACCESS_KEY_ID,
                ssm_sim::config::SECRET_ACCESS_KEY,
                None,
                None,
                "test",
            ))
            .build();
        let client = aws_sdk_s3::Client::from_conf(conf);
        client
            .create_bucket()
            .bucket(DEFAULT_BUCKET)
            .send()
            .await
            .unwrap();
        Moto {
            _child: child,
            url,
            client,
        }
    }

    /// Objects and unfinished multipart uploads left in the bucket.
    async fn leftovers(&self) -> Vec<String> {
        let objects = self
            .client
            .list_objects_v2()
            .bucket(DEFAULT_BUCKET)
            .send()
            .await
            .unwrap();
        let uploads = self
            .client
            .list_multipart_uploads()
            .bucket(DEFAULT_BUCKET)
            .send()
            .await
            .unwrap();
        let mut out: Vec<String> = objects
            .contents()
            .iter()
            .filter_map(|o| o.key().map(str::to_string))
            .collect();
        out.extend(
            uploads
                .uploads()
                .iter()
                .map(|u| format!("upload:{}", u.upload_id().unwrap_or_default())),
        );
        out
    }
}

#[tokio::test]
async fn moto_as_the_s3_server_up_down_and_interrupt() {
    let moto = Moto::start().await;
    let h = Harness::new(fast()).await;
    let env = [("AWS_ENDPOINT_URL_S3", Some(moto.url.as_str()))];
    let src = h.local().join("site");
    make_tree(&src, 300, 12 << 20);
    let mut args = s3_args(&["-r", "-p", s(&src)]);
    let dest = format!("{INSTANCE}:www/");
    args.push(&dest);
    let (code, _, err) = h.run_env(&env, &args).await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        snapshot(&src, true),
        snapshot(&h.remote().join("www/site"), true)
    );
    assert_eq!(moto.leftovers().await, Vec::<String>::new());
    assert_eq!(
        h.sim.s3_leftovers(),
        Vec::<String>::new(),
        "nothing went to s3s"
    );

    // And back down: the instance PUTs through a presigned URL, ssmcp reads the object.
    let back = h.local().join("back");
    let mut args = s3_args(&["-r", "-p"]);
    let from = format!("{INSTANCE}:www/site");
    args.extend([from.as_str(), s(&back)]);
    let (code, _, err) = h.run_env(&env, &args).await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(snapshot(&src, true), snapshot(&back, true));
    assert_eq!(moto.leftovers().await, Vec::<String>::new());

    // And as a download too big for one PUT (told 6 MiB): presigned parts on moto.
    let parts = h.local().join("parts");
    let in_parts = [
        ("AWS_ENDPOINT_URL_S3", Some(moto.url.as_str())),
        ("SSMCP_S3_PUT_LIMIT", Some("6291456")),
    ];
    let mut args = s3_args(&["-r", "-v"]);
    args.extend([from.as_str(), s(&parts)]);
    let (code, _, err) = h.run_env(&in_parts, &args).await;
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("the instance uploads"), "{err}");
    assert_eq!(snapshot(&src, false), snapshot(&parts, false));
    assert_eq!(moto.leftovers().await, Vec::<String>::new());

    // ^C while the multipart upload is under way.
    let big = h.local().join("big.bin");
    std::fs::write(&big, pattern(3, 40 << 20)).unwrap();
    let mut child = h
        .ssmcp()
        .env("AWS_ENDPOINT_URL_S3", &moto.url)
        .args(s3_args(&[
            "-l",
            "64000",
            s(&big),
            &format!("{INSTANCE}:big.bin"),
        ]))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !moto
        .leftovers()
        .await
        .iter()
        .any(|l| l.starts_with("upload:"))
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no multipart upload started"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    interrupt(&child);
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status.code(), Some(130));
    assert_eq!(moto.leftovers().await, Vec::<String>::new());
}

/// Every file in the journal directory: entries (`.json`) and updates being written
/// (`.tmp`, until renamed over their entry).
fn journal_files(h: &Harness) -> Vec<std::path::PathBuf> {
    let dir = h.home.path().join(".local/state/ssmcp/staged");
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .collect()
}

fn is_entry(p: &Path) -> bool {
    p.extension().is_some_and(|x| x == "json")
}

/// What the entries say (not updates half-way through being saved).
fn journal_text(h: &Harness) -> String {
    journal_files(h)
        .iter()
        .filter(|p| is_entry(p))
        .filter_map(|p| std::fs::read_to_string(p).ok())
        .collect()
}

fn journal_entries(h: &Harness) -> usize {
    journal_files(h).iter().filter(|p| is_entry(p)).count()
}

#[tokio::test]
async fn gc_removes_what_a_killed_run_left() {
    let h = Harness::new(fast()).await;
    let src = h.local().join("big.bin");
    std::fs::write(&src, pattern(9, 40 << 20)).unwrap();
    let dest = format!("{INSTANCE}:big.bin");
    let args = s3_args(&["-l", "64000", s(&src), &dest]);
    // Killed once the journal knows the multipart upload (s3s-fs cannot list uploads,
    // so an id that never reached the journal could not be found; see docs).
    let mut child = start_until(&h, &args, "no upload noted", || {
        journal_text(&h).contains("\"upload_id\":\"")
    })
    .await;
    child.start_kill().unwrap(); // SIGKILL: no cleanup of its own
    child.wait().await.unwrap();
    assert!(!h.sim.s3_leftovers().is_empty());
    assert_eq!(journal_entries(&h), 1);

    let (code, out, err) = h.run(&["gc", "--dry-run"]).await;
    assert_eq!(code, 0, "{err}");
    assert!(
        out.starts_with("would remove s3://ssmcp-sim/ssmcp-"),
        "{out}"
    );
    assert!(out.contains("unfinished multipart upload"), "{out}");
    assert!(
        !h.sim.s3_leftovers().is_empty(),
        "a dry run removes nothing"
    );

    let (code, out, err) = h.run(&["gc"]).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("removed s3://ssmcp-sim/ssmcp-"), "{out}");
    assert_eq!(h.sim.s3_leftovers(), Vec::<String>::new());
    assert_eq!(journal_files(&h), Vec::<std::path::PathBuf>::new());
    let (code, _, err) = h.run(&["gc"]).await;
    assert_eq!(code, 0);
    assert!(err.contains("nothing to clean up"), "{err}");
}

#[tokio::test]
async fn a_tree_comes_back_through_s3() {
    let h = Harness::new(fast()).await;
    let there = h.remote().join("logs");
    make_tree(&there, 500, 9 << 20);
    std::fs::write(there.join("empty"), b"").unwrap();
    let back = h.local().join("back");
    let (code, out, err) = h
        .run(&s3_args(&[
            "-r",
            "-p",
            "--json",
            &format!("{INSTANCE}:logs"),
            s(&back),
        ]))
        .await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(snapshot(&there, true), snapshot(&back, true));
    assert!(events(&out)
        .iter()
        .any(|e| e["event"] == "summary" && e["direction"] == "download" && e["files"] == 502));
    assert_eq!(h.sim.s3_leftovers(), Vec::<String>::new());
    assert_eq!(journal_files(&h), Vec::<std::path::PathBuf>::new());

    // A source that does not exist fails on the instance; nothing is created here.
    let (code, _, err) = h
        .run(&s3_args(&[
            &format!("{INSTANCE}:nope"),
            s(&h.local().join("nope")),
        ]))
        .await;
    assert_eq!(code, 64, "{err}");
    assert!(err.contains("nope"), "{err}");
    assert!(!h.local().join("nope").exists());
    assert_eq!(h.sim.s3_leftovers(), Vec::<String>::new());
}

/// --sse-kms-key: every request that stores the staged object asks for SSE-KMS with the
/// key: the PUT or multipart upload from here, and the instance's presigned PUT (whose
/// signature covers the headers, so the instance must send exactly them).
#[tokio::test]
async fn staged_objects_are_encrypted_with_the_kms_key_given() {
    let h = Harness::new(fast()).await;
    let key = "alias/ssmcp-staging";
    let src = h.local().join("big.bin");
    std::fs::write(&src, pattern(11, 9 << 20)).unwrap();
    let (code, _, err) = h
        .run(&s3_args(&[
            "--sse-kms-key",
            key,
            s(&src),
            &format!("{INSTANCE}:big.bin"),
        ]))
        .await;
    assert_eq!(code, 0, "{err}");
    std::fs::write(h.remote().join("small.txt"), b"x").unwrap();
    let back = h.local().join("small.txt");
    let (code, _, err) = h
        .run(&s3_args(&[
            "--sse-kms-key",
            key,
            &format!("{INSTANCE}:small.txt"),
            s(&back),
        ]))
        .await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(std::fs::read(&back).unwrap(), b"x");
    let log = h.sim.s3_encryption_requests();
    // CreateMultipartUpload (POST ?uploads) for the 9 MiB upload, the presigned PUT of
    // the download.
    assert_eq!(log.len(), 2, "{log:?}");
    assert!(log[0].starts_with("POST /ssmcp-sim/ssmcp-"), "{log:?}");
    assert!(log[1].starts_with("PUT /ssmcp-sim/ssmcp-"), "{log:?}");
    for l in &log {
        assert!(l.ends_with(&format!(" aws:kms {key}")), "{l}");
    }
    assert_eq!(h.sim.s3_leftovers(), Vec::<String>::new());
}

/// A bucket in another region than the instances': ssmcp finds its region (S3's
/// x-amz-bucket-region) and signs requests and presigned URLs for it; the simulator
/// answers anything signed for another region with 301, as S3 does.
#[tokio::test]
async fn a_bucket_in_another_region_is_found_and_used() {
    let h = Harness::new(SimConfig {
        s3_bucket_regions: vec![("west-bucket".into(), "us-west-2".into())],
        ..fast()
    })
    .await;
    let src = h.local().join("big.bin");
    std::fs::write(&src, pattern(12, 9 << 20)).unwrap();
    let (code, _, err) = h
        .run(&[
            "-v",
            "--transport",
            "s3",
            "--bucket",
            "west-bucket",
            s(&src),
            &format!("{INSTANCE}:big.bin"),
        ])
        .await;
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("the bucket west-bucket is in us-west-2"),
        "{err}"
    );
    assert_eq!(file_sha(&src), file_sha(&h.remote().join("big.bin")));
    let back = h.local().join("back.bin");
    let (code, _, err) = h
        .run(&[
            "--transport",
            "s3",
            "--bucket",
            "west-bucket",
            &format!("{INSTANCE}:big.bin"),
            s(&back),
        ])
        .await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(file_sha(&src), file_sha(&back));
    assert_eq!(h.sim.s3_leftovers(), Vec::<String>::new());
}

#[tokio::test]
async fn a_download_from_instances_named_like_a_pattern_goes_through_s3() {
    let ids = ["i-0000000000000000a", "i-0000000000000000b"];
    let h = Harness::new(SimConfig {
        instances: vec![
            InstanceConfig::new(ids[0]).tag("Name", "web-1"),
            InstanceConfig::new(ids[1]).tag("Name", "web-2"),
        ],
        ..fast()
    })
    .await;
    for id in ids {
        let etc = h.instances.path().join(id).join("etc");
        std::fs::create_dir_all(&etc).unwrap();
        std::fs::write(etc.join("conf"), format!("conf of {id}")).unwrap();
    }
    let out = h.local().join("out");
    std::fs::create_dir(&out).unwrap();
    let (code, out_json, err) = h
        .run(&s3_args(&["-r", "--json", "name:web-*:etc", s(&out)]))
        .await;
    assert_eq!(code, 0, "{err}");
    for id in ids {
        assert_eq!(
            std::fs::read_to_string(out.join(id).join("etc/conf")).unwrap(),
            format!("conf of {id}")
        );
    }
    let ev = events(&out_json);
    assert_eq!(
        ev.iter()
            .filter(|e| e["event"] == "instance" && e["ok"] == true)
            .count(),
        2,
        "{out_json}"
    );
    assert_eq!(h.sim.s3_leftovers(), Vec::<String>::new());
}

#[tokio::test]
async fn a_download_too_big_for_one_put_goes_up_in_parts() {
    // S3 takes at most 5 GiB in one PUT; here the simulated S3 takes 6 MiB, and ssmcp is
    // told the same, so a 21 MiB download must travel as a multipart upload.
    const LIMIT: u64 = 6 << 20;
    let h = Harness::new(SimConfig {
        s3_max_put: LIMIT,
        ..fast()
    })
    .await;
    let tree = h.remote().join("data");
    make_tree(&tree, 30, 21 << 20);
    // What killed runs left in the instance's temporary directory: a day-old spool is
    // reaped by the next export, a recent one (maybe another run's) is not.
    let tmp = h.instances.path().join(format!("{INSTANCE}.tmp"));
    std::fs::create_dir_all(&tmp).unwrap();
    std::fs::write(tmp.join("ssmcp-spool-old"), b"x").unwrap();
    let two_days_ago = filetime::FileTime::from_unix_time(
        filetime::FileTime::now().unix_seconds() - 2 * 86_400,
        0,
    );
    filetime::set_file_mtime(tmp.join("ssmcp-spool-old"), two_days_ago).unwrap();
    std::fs::write(tmp.join("ssmcp-spool-recent"), b"x").unwrap();
    let limit = LIMIT.to_string();
    let env = [("SSMCP_S3_PUT_LIMIT", Some(limit.as_str()))];
    let down = h.local().join("down");
    let (code, out, err) = h
        .run_env(
            &env,
            &s3_args(&["-r", "-v", "--json", &format!("{INSTANCE}:data"), s(&down)]),
        )
        .await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(snapshot(&tree, false), snapshot(&down, false));
    assert!(
        out.contains("uploads 4 parts of up to 6291456 bytes"),
        "{out}"
    );
    assert_eq!(h.sim.s3_leftovers(), Vec::<String>::new());
    let spools: Vec<_> = std::fs::read_dir(&tmp)
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(spools, ["ssmcp-spool-recent"], "spools on the instance");
    std::fs::remove_file(tmp.join("ssmcp-spool-recent")).unwrap();

    // Without being told, the one PUT is refused as S3 refuses it, and nothing stays.
    let (code, _, err) = h
        .run(&s3_args(&[
            "-r",
            &format!("{INSTANCE}:data"),
            s(&h.local().join("again")),
        ]))
        .await;
    assert!(
        (code == 68 && err.contains("HTTP 400"))
            || (code == 74 && err.contains("S3 closed the connection")),
        "{code}: {err}"
    );
    assert!(!h.local().join("again").exists());
    assert_eq!(h.sim.s3_leftovers(), Vec::<String>::new());
    assert_eq!(std::fs::read_dir(&tmp).unwrap().count(), 0);
}

#[tokio::test]
async fn interrupting_a_download_between_its_two_commands_leaves_nothing() {
    const LIMIT: u64 = 6 << 20;
    // A slow instance keeps each command waiting 3 s before it starts, so the run is
    // caught with the spool kept on the instance and the multipart upload started.
    let h = Harness::new(SimConfig {
        s3_max_put: LIMIT,
        instances: vec![InstanceConfig::new(INSTANCE).slow(Duration::from_secs(3))],
        ..fast()
    })
    .await;
    std::fs::write(h.remote().join("big"), pattern(8, 13 << 20)).unwrap();
    let tmp = h.instances.path().join(format!("{INSTANCE}.tmp"));
    let down = h.local().join("big");
    let from = format!("{INSTANCE}:big");
    let args = s3_args(&[&from, s(&down)]);
    let mut cmd = h.ssmcp();
    cmd.env("SSMCP_S3_PUT_LIMIT", LIMIT.to_string());
    let child = start_cmd_until(cmd, &args, "the parts never started", || {
        multipart_under_way(&h)
    })
    .await;
    let (code, err) = interrupt_and_wait(child).await;
    assert_eq!(code, Some(130), "{err}");
    assert_eq!(h.sim.s3_leftovers(), Vec::<String>::new());
    assert!(!down.exists());
    // ssmcp asked the instance to drop the spool; that command waits its 3 s too.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while std::fs::read_dir(&tmp).map_or(0, |d| d.count()) > 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the spool stayed on the instance"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
