//! The `ssm-sim` binary's IAM switches: a policy outside the evaluated subset is refused
//! at start with the reason (never silently ignored), and `--identity` decides who STS
//! says the caller is.

use std::process::Command;

fn sim() -> Command {
    Command::new(env!("CARGO_BIN_EXE_ssm-sim"))
}

#[test]
fn a_policy_outside_the_subset_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.json");
    std::fs::write(
        &bad,
        r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"ssm:*","Resource":"*","Condition":{"IpAddress":{"aws:SourceIp":"10.0.0.0/8"}}}]}"#,
    )
    .unwrap();
    let out = sim().arg("--policy").arg(&bad).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad.json") && err.contains("IpAddress is not supported"),
        "{err}"
    );
}

#[test]
fn a_malformed_identity_is_refused_with_the_accepted_forms() {
    let out = sim()
        .args(["--identity", "sso-role:alice"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("sso-role:PERMISSION_SET/USER"), "{err}");
}

/// README's reproduction of the SSO problem, exactly as written there: the simulator
/// starts with that caller and that policy file and prints its environment.
#[tokio::test]
async fn the_readme_s_reproduction_command_starts() {
    use tokio::io::AsyncBufReadExt;
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let line = "ssm-sim --identity sso-role:Dev/alice@example.com --policy tests/policies/seed-username.json";
    assert!(readme.contains(line), "README no longer shows: {line}");
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_ssm-sim"))
        .args(line.split_whitespace().skip(1))
        .current_dir(&root)
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let exports = tokio::time::timeout(std::time::Duration::from_secs(30), async {
        let mut seen = String::new();
        while let Ok(Some(l)) = lines.next_line().await {
            seen.push_str(&l);
            seen.push('\n');
            if l.starts_with("export AWS_DEFAULT_REGION=") {
                break;
            }
        }
        seen
    })
    .await
    .expect("ssm-sim printed its environment in time");
    assert!(
        exports.contains("export AWS_ENDPOINT_URL_SSM="),
        "{exports}"
    );
}
