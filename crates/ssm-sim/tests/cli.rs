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
