//! `ssmcp proxy` as OpenSSH's ProxyCommand, with the block `ssmcp ssh-config` prints
//! (docs/ssh/config), against a real sshd on 127.0.0.1 that the simulated agent dials:
//! ssh, scp, sftp and rsync, unchanged.

mod common;
use common::sshd::Sshd;
use common::*;
use ssm_sim::config::{DenyRule, InstanceConfig};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

fn user() -> String {
    let out = std::process::Command::new("id")
        .arg("-un")
        .output()
        .unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// An OpenSSH client set up as a user would: `ssmcp ssh-config`'s block as the config,
/// the sim's AWS settings in the environment (ssh passes it to the ProxyCommand).
struct Client<'a> {
    h: &'a Harness,
    sshd: &'a Sshd,
    config: PathBuf,
}

impl<'a> Client<'a> {
    async fn new(h: &'a Harness, sshd: &'a Sshd) -> Client<'a> {
        let (code, block, err) = h
            .run(&["ssh-config", "--ssmcp", env!("CARGO_BIN_EXE_ssmcp")])
            .await;
        assert_eq!(code, 0, "{err}");
        assert_eq!(
            block.trim_end(),
            include_str!("../docs/ssh/config")
                .replace("SSMCP", env!("CARGO_BIN_EXE_ssmcp"))
                .trim_end()
        );
        let config = h.home.path().join("ssh_config");
        std::fs::write(&config, block).unwrap();
        Client { h, sshd, config }
    }

    /// `program` (ssh, scp, sftp, rsync) with the options every run shares.
    fn command(&self, program: &str) -> tokio::process::Command {
        let mut c = tokio::process::Command::new(program);
        c.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", self.h.home.path())
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .envs(self.h.sim.env())
            .kill_on_drop(true);
        // ssh ends its ProxyCommand, ssmcp, with SIGHUP: that must not be ignored.
        with_default_signals(&mut c);
        let mut options = vec![
            "-F".to_string(),
            self.config.display().to_string(),
            "-i".to_string(),
            self.sshd.key().display().to_string(),
        ];
        for o in [
            "StrictHostKeyChecking=no",
            "UserKnownHostsFile=/dev/null",
            "BatchMode=yes",
            "LogLevel=ERROR",
        ] {
            options.extend(["-o".to_string(), o.to_string()]);
        }
        // scp and sftp spell the port -P, ssh -p.
        let port = if program == "ssh" { "-p" } else { "-P" };
        if program == "rsync" {
            let ssh = format!("ssh {} -p {}", options.join(" "), self.sshd.port);
            c.args(["-e", &ssh]);
        } else {
            c.args(options).args([port, &self.sshd.port.to_string()]);
        }
        c
    }

    async fn output(&self, mut c: tokio::process::Command, stdin: &[u8]) -> (i32, Vec<u8>, String) {
        use tokio::io::AsyncWriteExt;
        c.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = c.spawn().expect("the OpenSSH program runs");
        let mut input = child.stdin.take().unwrap();
        let data = stdin.to_vec();
        let feed = tokio::spawn(async move {
            let _ = input.write_all(&data).await;
        });
        let out = tokio::time::timeout(Duration::from_secs(120), child.wait_with_output())
            .await
            .expect("finished in time")
            .unwrap();
        let _ = feed.await;
        (
            out.status.code().unwrap_or(-1),
            out.stdout,
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// The `ssh` command line git should use (GIT_SSH_COMMAND).
    fn ssh_command_line(&self) -> String {
        format!(
            "ssh -F {} -i {} -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o BatchMode=yes -o LogLevel=ERROR",
            self.config.display(),
            self.sshd.key().display()
        )
    }

    async fn ssh(&self, host: &str, cmd: &str, stdin: &[u8]) -> (i32, Vec<u8>, String) {
        let mut c = self.command("ssh");
        c.arg(format!("{}@{host}", user())).arg(cmd);
        self.output(c, stdin).await
    }

    async fn run(&self, program: &str, args: &[&str]) -> (i32, String) {
        let mut c = self.command(program);
        c.args(args);
        let (code, _, err) = self.output(c, b"").await;
        (code, err)
    }
}

fn named(name: &str) -> ssm_sim::SimConfig {
    ssm_sim::SimConfig {
        instances: vec![InstanceConfig::new(INSTANCE).tag("Name", name)],
        ..fast()
    }
}

#[tokio::test]
async fn ssh_runs_commands_through_the_proxy_by_id_and_by_name() {
    let sshd = Sshd::start().await;
    let h = Harness::new(named("web-1")).await;
    let ssh = Client::new(&h, &sshd).await;
    let (code, out, err) = ssh.ssh(INSTANCE, "echo hi; exit 3", b"").await;
    assert_eq!((code, out.as_slice()), (3, &b"hi\n"[..]), "{err}");
    assert_eq!(err, "", "nothing on stderr when all is well");
    let (code, out, err) = ssh.ssh("web-1.ssm", "true", b"").await;
    assert_eq!((code, out.len()), (0, 0), "{err}");
    let data = pattern(11, 3 << 20);
    let (code, out, err) = ssh.ssh(INSTANCE, "cat", &data).await;
    assert_eq!(code, 0, "{err}");
    assert!(out == data, "3 MiB through cat came back changed");
    h.assert_no_sessions_left().await;
    let st = h.sim.stats();
    assert_eq!(st.protocol_violations(), 0, "{st:?}");
    assert_eq!(st.sessions_started, 3);
}

#[tokio::test]
async fn scp_sftp_and_rsync_round_trip_a_big_file_and_a_tree() {
    let sshd = Sshd::start().await;
    let h = Harness::new(fast()).await;
    let ssh = Client::new(&h, &sshd).await;
    let local = h.local();
    let far = tempfile::tempdir().unwrap(); // "the instance's" disk, reached through sshd
    let remote = |p: &str| format!("{}@{INSTANCE}:{}", user(), far.path().join(p).display());

    let big = local.join("big.bin");
    std::fs::write(&big, pattern(5, 32 << 20)).unwrap();
    let (code, err) = ssh
        .run("scp", &[big.to_str().unwrap(), &remote("big.bin")])
        .await;
    assert_eq!(code, 0, "scp up: {err}");
    let back = local.join("back.bin");
    let (code, err) = ssh
        .run("scp", &[&remote("big.bin"), back.to_str().unwrap()])
        .await;
    assert_eq!(code, 0, "scp down: {err}");
    assert!(std::fs::read(&back).unwrap() == pattern(5, 32 << 20));

    let tree = local.join("tree");
    for i in 0..2_000u64 {
        let d = tree.join(format!("d{:02}", i % 50));
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(
            d.join(format!("f{i}")),
            pattern(i, (i * 37 % 3000) as usize),
        )
        .unwrap();
    }
    let (code, err) = ssh
        .run("rsync", &["-a", tree.to_str().unwrap(), &remote("")])
        .await;
    assert_eq!(code, 0, "rsync up: {err}");
    let down = local.join("down");
    let (code, err) = ssh
        .run("scp", &["-r", &remote("tree"), down.to_str().unwrap()])
        .await;
    assert_eq!(code, 0, "scp -r down: {err}");
    assert_eq!(snapshot(&tree, false), snapshot(&down, false));
    let again = local.join("again");
    let (code, err) = ssh
        .run(
            "rsync",
            &[
                "-a",
                &format!("{}/", remote("tree")),
                again.to_str().unwrap(),
            ],
        )
        .await;
    assert_eq!(code, 0, "rsync down: {err}");
    assert_eq!(snapshot(&tree, false), snapshot(&again, false));

    let batch = local.join("batch");
    let got = local.join("via-sftp.bin");
    std::fs::write(
        &batch,
        format!(
            "get {} {}\n",
            far.path().join("big.bin").display(),
            got.display()
        ),
    )
    .unwrap();
    let (code, err) = ssh
        .run(
            "sftp",
            &[
                "-b",
                batch.to_str().unwrap(),
                &format!("{}@{INSTANCE}", user()),
            ],
        )
        .await;
    assert_eq!(code, 0, "sftp: {err}");
    assert!(std::fs::read(&got).unwrap() == pattern(5, 32 << 20));
    h.assert_no_sessions_left().await;
    let st = h.sim.stats();
    assert_eq!(st.protocol_violations(), 0, "{st:?}");
}

/// The seed's failure: TerminateSession denied. ssh works as if nothing happened; the
/// warning with the fix goes to stderr, on one line, and stdout carries only the
/// command's output.
#[tokio::test]
async fn a_terminate_session_denial_leaves_ssh_working_and_warns_on_stderr() {
    let sshd = Sshd::start().await;
    let h = Harness::new(ssm_sim::SimConfig {
        deny: vec![DenyRule::action("ssm:TerminateSession")],
        ..fast()
    })
    .await;
    let ssh = Client::new(&h, &sshd).await;
    let (code, out, err) = ssh.ssh(INSTANCE, "echo fine", b"").await;
    assert_eq!((code, out.as_slice()), (0, &b"fine\n"[..]), "{err}");
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "{err}");
    assert!(
        lines[0].starts_with("ssmcp: warning: session")
            && lines[0].contains("TerminateSession was denied")
            && lines[0].contains("ssm:resourceTag/aws:ssmmessages:session-id"),
        "{err}"
    );
    h.assert_no_sessions_left().await;
}

/// StartSession denied: ssmcp's one line, with the cause and the fix, comes before
/// ssh's own complaint.
#[tokio::test]
async fn a_start_session_denial_is_explained_before_sshs_error() {
    let sshd = Sshd::start().await;
    let h = Harness::new(ssm_sim::SimConfig {
        deny: vec![DenyRule::action("ssm:StartSession")],
        ..fast()
    })
    .await;
    let ssh = Client::new(&h, &sshd).await;
    let (code, out, err) = ssh.ssh(INSTANCE, "true", b"").await;
    assert_eq!((code, out.len()), (255, 0), "{err}");
    let lines: Vec<&str> = err.lines().collect();
    assert!(
        lines.len() >= 2
            && lines[0].starts_with("ssmcp: StartSession was denied by IAM")
            && lines[0].contains("hint: grant ssm:StartSession"),
        "{err}"
    );
    assert!(!lines[1].starts_with("ssmcp"), "{err}");
    h.assert_no_sessions_left().await;
}

/// `git ARGS` in `dir`, over ssh through the proxy (async: the simulator shares this
/// runtime, so a blocking wait would stall it).
async fn git(h: &Harness, ssh: &Client<'_>, dir: &Path, args: &[&str]) {
    let out = tokio::process::Command::new("git")
        .current_dir(dir)
        .env("HOME", h.home.path())
        .envs(h.sim.env())
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("GIT_SSH_COMMAND", ssh.ssh_command_line())
        .args(["-c", "user.name=t", "-c", "user.email=t@example.com"])
        .args(args)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(120), out)
        .await
        .expect("git finished in time")
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// git over ssh: push to a bare repository on "the instance" and clone it back.
#[tokio::test]
async fn git_pushes_and_clones_over_ssh_through_the_proxy() {
    let sshd = Sshd::start().await;
    let h = Harness::new(fast()).await;
    let ssh = Client::new(&h, &sshd).await;
    let far = tempfile::tempdir().unwrap();
    let bare = far.path().join("repo.git");
    let work = h.local().join("work");
    git(
        &h,
        &ssh,
        far.path(),
        &["init", "-q", "--bare", bare.to_str().unwrap()],
    )
    .await;
    std::fs::create_dir_all(&work).unwrap();
    git(&h, &ssh, &work, &["init", "-q", "-b", "main"]).await;
    std::fs::write(work.join("app.conf"), pattern(2, 50_000)).unwrap();
    git(&h, &ssh, &work, &["add", "app.conf"]).await;
    git(&h, &ssh, &work, &["commit", "-q", "-m", "first"]).await;
    let url = format!(
        "ssh://{}@{INSTANCE}:{}{}",
        user(),
        sshd.port,
        bare.display()
    );
    git(&h, &ssh, &work, &["push", "-q", &url, "main"]).await;
    let clone = h.local().join("clone");
    let args = ["clone", "-q", "-b", "main", &url, clone.to_str().unwrap()];
    git(&h, &ssh, &h.local(), &args).await;
    assert!(std::fs::read(clone.join("app.conf")).unwrap() == pattern(2, 50_000));
    h.assert_no_sessions_left().await;
}

/// docs/policies/session-caller.json, as shipped, is all an SSO caller needs for ssh
/// through the proxy: no warning, no session left.
#[tokio::test]
async fn the_shipped_session_policy_is_enough_for_ssh() {
    let sshd = Sshd::start().await;
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/policies/session-caller.json");
    let policy = ssm_sim::iam::Policy::from_file(&path).unwrap();
    let h = Harness::new(ssm_sim::SimConfig {
        identity: ssm_sim::config::Identity::sso_role(
            "AWSReservedSSO_Dev_0123456789abcdef",
            "alice@example.com",
        ),
        policies: vec![policy],
        ..fast()
    })
    .await;
    let ssh = Client::new(&h, &sshd).await;
    let (code, out, err) = ssh.ssh(INSTANCE, "echo ok", b"").await;
    assert_eq!((code, out.as_slice(), err.as_str()), (0, &b"ok\n"[..], ""));
    h.assert_no_sessions_left().await;
}
