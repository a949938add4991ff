//! docs/troubleshooting.md is a contract: every message documented under "Messages from
//! ssmcp" is produced here by the real binary against ssm-sim, and every exit code class
//! ssmcp has is on the page.

mod common;
use common::*;
use ssm_sim::config::{DenyRule, Identity, InstanceConfig};
use ssm_sim::SimConfig;
use std::time::Duration;

const PAGE: &str = include_str!("../docs/troubleshooting.md");

/// The documented messages: the backticked text of each `###` heading in the section.
fn documented() -> Vec<String> {
    let section = PAGE
        .split("## Messages from ssmcp")
        .nth(1)
        .expect("the section exists")
        .split("\n## ")
        .next()
        .unwrap();
    section
        .lines()
        .filter_map(|l| l.strip_prefix("### `")?.strip_suffix('`'))
        .map(str::to_string)
        .collect()
}

/// `…` matches anything; the literal pieces must appear in order.
fn matches(pattern: &str, text: &str) -> bool {
    let mut rest = text;
    for piece in pattern.split('…') {
        match rest.find(piece) {
            Some(at) => rest = &rest[at + piece.len()..],
            None => return false,
        }
    }
    true
}

fn file(h: &Harness, name: &str, bytes: &[u8]) -> String {
    let p = h.local().join(name);
    std::fs::write(&p, bytes).unwrap();
    p.display().to_string()
}

fn remote(path: &str) -> String {
    format!("{INSTANCE}:{path}")
}

async fn with(cfg: SimConfig) -> Harness {
    Harness::new(cfg).await
}

fn instance(f: impl FnOnce(InstanceConfig) -> InstanceConfig) -> SimConfig {
    SimConfig {
        instances: vec![f(InstanceConfig::new(INSTANCE))],
        ..fast()
    }
}

const S3: [&str; 4] = [
    "--transport",
    "s3",
    "--bucket",
    ssm_sim::config::DEFAULT_BUCKET,
];

/// Produce the documented message `heading`: (exit code, stderr).
async fn produce(heading: &str) -> (i32, String) {
    let key = heading.trim_start_matches("ssmcp: ");
    let (code, err) = match key {
        k if k.starts_with("StartSession was denied by IAM") => {
            let h = with(SimConfig {
                deny: vec![DenyRule::action("ssm:StartSession")],
                ..fast()
            })
            .await;
            let f = file(&h, "f", b"x");
            let (c, _, e) = h.run(&[&f, &remote("")]).await;
            (c, e)
        }
        k if k.starts_with("warning: session") => {
            let h = with(SimConfig {
                identity: Identity::sso_role("AWSReservedSSO_Dev_abc", "alice"),
                deny: vec![DenyRule::action("ssm:TerminateSession")],
                ..fast()
            })
            .await;
            let f = file(&h, "f", b"x");
            let (c, _, e) = h.run(&[&f, &remote("")]).await;
            (c, e)
        }
        k if k.starts_with("ResumeSession was denied by IAM") => {
            let mut cfg = SimConfig {
                identity: Identity::sso_role("AWSReservedSSO_Dev_abc", "alice"),
                deny: vec![DenyRule::action("ssm:ResumeSession")],
                ..SimConfig::default()
            };
            cfg.faults.cut_after_bytes = vec![256 * 1024];
            let h = with(cfg).await;
            std::fs::write(h.remote().join("data"), pattern(6, 1024 * 1024)).unwrap();
            let out = h.local().join("data");
            let (c, _, e) = h
                .run(&["--parallel", "1", &remote("data"), out.to_str().unwrap()])
                .await;
            assert!(!out.exists(), "nothing partial");
            (c, e)
        }
        k if k.starts_with("StartSession: the instance is not reachable") => {
            let h = with(instance(|i| i.offline())).await;
            let f = file(&h, "f", b"x");
            let (c, _, e) = h.run(&[&f, &remote("")]).await;
            (c, e)
        }
        k if k.starts_with("no managed instance has the Name tag") => {
            let h = with(fast()).await;
            let f = file(&h, "f", b"x");
            let (c, _, e) = h.run(&[&f, "name:nobody:"]).await;
            (c, e)
        }
        k if k.starts_with("a download from … goes into a directory") => {
            let h = with(fast()).await;
            let missing = h.local().join("missing");
            let (c, _, e) = h
                .run(&[
                    &format!("{INSTANCE},{INSTANCE}:f"),
                    &missing.display().to_string(),
                ])
                .await;
            (c, e)
        }
        k if k.starts_with("no instance has a Name tag matching") => {
            let h = with(fast()).await;
            let f = file(&h, "f", b"x");
            let (c, _, e) = h.run(&[&S3[..], &[&f, "name:nobody-*:"]].concat()).await;
            (c, e)
        }
        k if k.starts_with("the instances named like") => {
            let h = with(SimConfig {
                unmanaged_instances: vec![InstanceConfig::new(INSTANCE).tag("Name", "web-1")],
                instances: vec![],
                ..fast()
            })
            .await;
            let f = file(&h, "f", b"x");
            let (c, _, e) = h.run(&[&S3[..], &[&f, "name:web-*:"]].concat()).await;
            (c, e)
        }
        k if k.starts_with("StartSession: AWS rejected the credentials") => {
            let h = with(fast()).await;
            let f = file(&h, "f", b"x");
            let (c, _, e) = h
                .run_env(
                    &[("AWS_SECRET_ACCESS_KEY", Some("wrong"))],
                    &[&f, &remote("")],
                )
                .await;
            (c, e)
        }
        k if k.starts_with("StartSession: no usable AWS credentials") => {
            let h = with(fast()).await;
            let f = file(&h, "f", b"x");
            let (c, _, e) = h
                .run_env(
                    &[("AWS_ACCESS_KEY_ID", None), ("AWS_SECRET_ACCESS_KEY", None)],
                    &[&f, &remote("")],
                )
                .await;
            (c, e)
        }
        k if k.starts_with("StartSession: AWS throttled") => {
            let h = with(SimConfig {
                throttle: vec![ssm_sim::Throttle::first("StartSession", 20)],
                ..fast()
            })
            .await;
            let f = file(&h, "f", b"x");
            let (c, _, e) = h.run(&[&f, &remote("")]).await;
            (c, e)
        }
        k if k.starts_with("warning: … of … download sessions could not start") => {
            let h = with(SimConfig {
                throttle: vec![ssm_sim::Throttle::after("StartSession", 3, 1000)],
                ..fast()
            })
            .await;
            std::fs::write(h.remote().join("big"), vec![5u8; 4 << 20]).unwrap();
            let out = h.local().join("big");
            let (c, _, e) = h.run(&[&remote("big"), out.to_str().unwrap()]).await;
            (c, e)
        }
        k if k.starts_with("StartSession: cannot reach the AWS endpoint") => {
            let h = with(fast()).await;
            let f = file(&h, "f", b"x");
            let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let url = format!("http://{}", closed.local_addr().unwrap());
            drop(closed);
            let (c, _, e) = h
                .run_env(&[("AWS_ENDPOINT_URL_SSM", Some(&url))], &[&f, &remote("")])
                .await;
            (c, e)
        }
        k if k.starts_with("StartSession: the endpoint's TLS certificate") => {
            let h = with(SimConfig {
                tls: true,
                ..fast()
            })
            .await;
            let f = file(&h, "f", b"x");
            let (c, _, e) = h
                .run_env(
                    &[("AWS_CA_BUNDLE", None), ("SSL_CERT_FILE", None)],
                    &[&f, &remote("")],
                )
                .await;
            (c, e)
        }
        k if k.starts_with("KMS refused to make this session's encryption key") => {
            let h = with(SimConfig {
                deny: vec![DenyRule::action("kms:GenerateDataKey")],
                ..fast().with_kms_sessions("ssm")
            })
            .await;
            let (c, _, e) = h.run(&["exec", INSTANCE, "--", "true"]).await;
            (c, e)
        }
        k if k.contains("that this account's sessions must be encrypted with cannot be used") => {
            let mut cfg = fast().with_kms_sessions("ssm");
            cfg.kms_keys[0].enabled = false;
            let h = with(cfg).await;
            let (c, _, e) = h.run(&["exec", INSTANCE, "--", "true"]).await;
            (c, e)
        }
        k if k.contains("that this account's sessions must be encrypted with was not found") => {
            let h = with(SimConfig {
                kms_key_id: Some("alias/missing".into()),
                ..fast()
            })
            .await;
            let (c, _, e) = h.run(&["exec", INSTANCE, "--", "true"]).await;
            (c, e)
        }
        k if k.starts_with("the instance ended the session while setting up KMS") => {
            let no_decrypt = ssm_sim::policy::Policy::parse(
                "core",
                r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"ssm:UpdateInstanceInformation","Resource":"*"}]}"#,
            )
            .unwrap();
            let h = with(SimConfig {
                instance_policies: vec![no_decrypt],
                ..fast().with_kms_sessions("ssm")
            })
            .await;
            let (c, _, e) = h.run(&["exec", INSTANCE, "--", "true"]).await;
            (c, e)
        }
        k if k.starts_with("a message from the instance failed its integrity check") => {
            let mut cfg = fast().with_kms_sessions("ssm");
            cfg.faults.tamper_sealed_output = Some(1);
            let h = with(cfg).await;
            let (c, _, e) = h.run(&["exec", INSTANCE, "--", "echo hello"]).await;
            (c, e)
        }
        "… is a directory" => {
            let h = with(fast()).await;
            let (c, _, e) = h.run(&[h.local().to_str().unwrap(), &remote("")]).await;
            (c, e)
        }
        "…: No such file or directory" => {
            let h = with(fast()).await;
            let missing = h.local().join("missing");
            let (c, _, e) = h.run(&[missing.to_str().unwrap(), &remote("")]).await;
            (c, e)
        }
        k if k.starts_with("on the instance: the destination directory") => {
            let h = with(fast()).await;
            let f = file(&h, "f", b"x");
            let (c, _, e) = h.run(&[&f, &remote("no/such/f")]).await;
            (c, e)
        }
        k if k.starts_with("on the instance: … is not a directory") => {
            let h = with(fast()).await;
            let (a, b) = (file(&h, "a", b"a"), file(&h, "b", b"b"));
            let (c, _, e) = h.run(&[&a, &b, &remote("single")]).await;
            (c, e)
        }
        "neither side is on an instance" => {
            let h = with(fast()).await;
            let f = file(&h, "f", b"x");
            let (c, _, e) = h.run(&[&f, "elsewhere"]).await;
            (c, e)
        }
        k if k.starts_with("on the instance: cannot … Permission denied") => {
            let h = with(fast()).await;
            let f = file(&h, "f", b"x");
            let (c, _, e) = h.run(&[&f, &remote("/sys/kernel/")]).await;
            (c, e)
        }
        k if k.starts_with("on the instance: cannot write …: File too large") => {
            let h = with(instance(|i| i.file_size_limit(64 * 1024))).await;
            let f = file(&h, "f", &vec![1u8; 1024 * 1024]);
            let (c, _, e) = h.run(&[&f, &remote("")]).await;
            (c, e)
        }
        k if k.starts_with("sudo on the instance needs a password") => {
            let sudo = "#!/bin/sh\necho 'sudo: a password is required' >&2\nexit 1\n";
            let h = with(instance(|i| i.command("sudo", sudo))).await;
            let f = file(&h, "f", b"x");
            let (c, _, e) = h.run(&["--sudo", &f, &remote("")]).await;
            (c, e)
        }
        k if k.starts_with("the instance has no python3, which the stream") => {
            let h = with(instance(|i| i.without(&["python3"]))).await;
            let f = file(&h, "f", b"x");
            let (c, _, e) = h.run(&["--transport", "stream", &f, &remote("")]).await;
            (c, e)
        }
        k if k.starts_with("warning: the instance has no python3: running the command") => {
            let h = with(instance(|i| i.without(&["python3"]))).await;
            let (c, _, e) = h.run(&["exec", INSTANCE, "--", "true"]).await;
            (c, e)
        }
        k if k.starts_with("warning: the instance has no python3: falling back") => {
            let h = with(instance(|i| i.without(&["python3"]))).await;
            let f = file(&h, "f", b"x");
            let (c, _, e) = h.run(&[&f, &remote("")]).await;
            (c, e)
        }
        k if k.starts_with("the s3 transport needs a bucket") => {
            let h = with(fast()).await;
            let f = file(&h, "f", b"x");
            let two = format!("{INSTANCE},{INSTANCE}:");
            let (c, _, e) = h.run(&[&f, &two]).await;
            (c, e)
        }
        k if k.starts_with("PutObject: the bucket does not exist") => {
            let h = with(fast()).await;
            let f = file(&h, "f", b"x");
            let args = [
                "--transport",
                "s3",
                "--bucket",
                "no-such-bucket",
                &f,
                &remote(""),
            ];
            let (c, _, e) = h.run(&args).await;
            (c, e)
        }
        k if k.starts_with("the instance has no python3, which the s3") => {
            let h = with(instance(|i| i.without(&["python3"]))).await;
            let f = file(&h, "f", b"x");
            let (c, _, e) = h.run(&[S3[0], S3[1], S3[2], S3[3], &f, &remote("")]).await;
            (c, e)
        }
        k if k.starts_with("… of … instances failed") => {
            let other = "i-00000000000000001";
            let h = with(SimConfig {
                instances: vec![
                    InstanceConfig::new(INSTANCE),
                    InstanceConfig::new(other).offline(),
                ],
                ..fast()
            })
            .await;
            let f = file(&h, "f", b"x");
            let two = format!("{INSTANCE},{other}:");
            let (c, _, e) = h.run(&[S3[0], S3[1], S3[2], S3[3], &f, &two]).await;
            (c, e)
        }
        k if k.starts_with("interrupted; the staged object was removed") => {
            let h = with(fast()).await;
            let f = file(&h, "big", &pattern(4, 32 * 1024 * 1024));
            let mut args = S3.to_vec();
            args.extend(["-l", "20000", &f]);
            let dest = remote("");
            args.push(&dest);
            let child =
                start_until(&h, &args, "no upload started", || multipart_under_way(&h)).await;
            interrupt(&child);
            let out = finish(child).await;
            assert_eq!(h.sim.s3_leftovers(), Vec::<String>::new());
            out
        }
        k if k.starts_with("the instance sent a path outside") => {
            let extra = (
                "    key = manifests.add(files)\n",
                "    files.append(files[0])\n    records.append(b\"M\" + bytes16(b\".bashrc\") + records[0][-24:])\n    key = manifests.add(files)\n",
            );
            let h = with(instance(|i| {
                i.command("python3", &hostile_python(&[extra]))
            }))
            .await;
            std::fs::write(h.remote().join("f"), b"x").unwrap();
            let out = h.local().join("in");
            std::fs::create_dir_all(&out).unwrap();
            let (c, _, e) = h.run(&[&remote("f"), out.to_str().unwrap()]).await;
            assert_eq!(
                std::fs::read_dir(&out).unwrap().count(),
                0,
                "nothing written"
            );
            (c, e)
        }
        k if k.starts_with("the download is") => {
            let lie = (
                "records.append(b\"M\" + bytes16(top) + meta_of(st) + U64.pack(st.st_size))",
                "records.append(b\"M\" + bytes16(top) + meta_of(st) + U64.pack(1 << 49))",
            );
            let h = with(instance(|i| i.command("python3", &hostile_python(&[lie])))).await;
            std::fs::write(h.remote().join("f"), b"x").unwrap();
            let (c, _, e) = h.run(&[&remote("f"), h.local().to_str().unwrap()]).await;
            (c, e)
        }
        k if k.contains("shrank while it was being copied") => {
            let h = with(fast()).await;
            let f = file(&h, "shrinking", &pattern(8, 3 * 1024 * 1024));
            let child = interrupt_midway(&h, &["-l", "8000", &f, &remote("")], &h.remote()).await;
            std::fs::OpenOptions::new()
                .write(true)
                .open(&f)
                .unwrap()
                .set_len(10)
                .unwrap();
            finish(child).await
        }
        k if k.contains("grew while it was being copied") => {
            let h = with(fast()).await;
            let f = file(&h, "growing", &pattern(8, 3 * 1024 * 1024));
            let child = interrupt_midway(&h, &["-l", "8000", &f, &remote("")], &h.remote()).await;
            {
                use std::io::Write;
                let mut a = std::fs::OpenOptions::new().append(true).open(&f).unwrap();
                a.write_all(b"more").unwrap();
            }
            finish(child).await
        }
        k if k.contains("is not an AWS region name") => {
            let h = with(fast()).await;
            let f = file(&h, "f", b"x");
            let (c, _, e) = h.run(&["--region", "eu_west_1", &f, &remote("")]).await;
            (c, e)
        }
        k if k.starts_with("the connection to the receiver was lost") => receiver_killed().await,
        k if k.starts_with("interrupted; nothing partial") => interrupted_copy().await,
        other => panic!("no scenario produces the documented message `{other}`"),
    };
    (code, err)
}

/// Kill the receiver while an upload is under way.
async fn receiver_killed() -> (i32, String) {
    let h = with(fast()).await;
    let f = file(&h, "big", &pattern(3, 32 * 1024 * 1024));
    let child = interrupt_midway(&h, &["-l", "20000", &f, &remote("")], &h.remote()).await;
    assert!(kill_receivers(&h.remote()) > 0, "found the receiver");
    finish(child).await
}

async fn interrupted_copy() -> (i32, String) {
    let h = with(fast()).await;
    let f = file(&h, "big", &pattern(4, 32 * 1024 * 1024));
    let child = interrupt_midway(&h, &["-l", "20000", &f, &remote("")], &h.remote()).await;
    interrupt(&child);
    finish(child).await
}

async fn finish(child: tokio::process::Child) -> (i32, String) {
    let (code, err) = wait_for(child, Duration::from_secs(60)).await;
    (code.unwrap_or(-1), err)
}

/// The exit code a heading's entry documents ("Exit NN"), if any.
fn documented_exit(heading: &str) -> Option<i32> {
    let entry = PAGE.split(&format!("### `{heading}`")).nth(1)?;
    let body = entry.split("\n### ").next()?;
    let rest = body.split("Exit ").nth(1)?;
    rest.get(..3)?
        .trim_end_matches(|c: char| !c.is_ascii_digit())
        .parse()
        .ok()
}

#[tokio::test]
async fn every_documented_message_is_produced() {
    let headings = documented();
    assert!(headings.len() >= 20, "{headings:?}");
    for heading in headings {
        let (code, err) = produce(&heading).await;
        assert!(
            matches(&heading, &err),
            "documented `{heading}` but ssmcp printed:\n{err}"
        );
        match documented_exit(&heading) {
            Some(want) => assert_eq!(code, want, "`{heading}`: {err}"),
            None => assert_eq!(code, 0, "`{heading}` is documented as a warning: {err}"),
        }
    }
}

#[test]
fn every_exit_code_class_is_on_the_page() {
    use ssmcp::error::Kind;
    for kind in Kind::ALL {
        let row = format!("| {} |", kind.exit_code());
        assert!(
            PAGE.contains(&row),
            "exit code {} ({kind:?}) is not documented",
            kind.exit_code()
        );
    }
}

#[test]
fn the_pattern_matcher_is_strict() {
    assert!(matches("a … b", "xx a 123 b yy"));
    assert!(!matches("a … b", "b then a"));
    assert!(matches("no wildcard", "say no wildcard here"));
}

/// Every `§N` / `§N.M` a comment in this repository cites names a section that
/// docs/protocol.md has: the protocol reference the comments point to lives here.
#[test]
fn every_section_the_code_cites_is_in_docs_protocol() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let doc = std::fs::read_to_string(root.join("docs/protocol.md")).unwrap();
    let mut cited = std::collections::BTreeSet::new();
    let mut dirs = vec![root.join("src"), root.join("crates")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs" || e == "py") {
                let text = std::fs::read_to_string(&path).unwrap();
                for (i, _) in text.match_indices('§') {
                    let rest = &text[i + '§'.len_utf8()..];
                    let n: String = rest
                        .chars()
                        .take_while(|c| c.is_ascii_digit() || *c == '.')
                        .collect();
                    let n = n.trim_end_matches('.').to_string();
                    if !n.is_empty() {
                        cited.insert(n);
                    }
                }
            }
        }
    }
    assert!(cited.len() > 20, "found only {cited:?}");
    for n in &cited {
        let top = n.split('.').next().unwrap();
        assert!(
            doc.contains(&format!("\n## {top}. ")),
            "docs/protocol.md has no section {top} (cited as §{n})"
        );
        if n.contains('.') {
            assert!(
                doc.contains(&format!("§{n}")),
                "docs/protocol.md does not name §{n}"
            );
        }
    }
}
