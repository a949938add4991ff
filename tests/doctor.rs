//! `ssmcp doctor` end to end: every check's pass and fail case against ssm-sim, and the
//! seed's scenario (an SSO role whose TerminateSession is denied).

mod common;
use common::*;
use ssm_sim::config::{DenyRule, Identity, InstanceConfig};

#[tokio::test]
async fn a_healthy_target_passes_every_check() {
    let h = Harness::new(fast()).await;
    let (code, out, err) = h.run(&["doctor", INSTANCE]).await;
    assert_eq!(code, 0, "{out}{err}");
    for name in [
        "region and endpoint",
        "credentials",
        "identity",
        "instance",
        "platform",
        "agent features",
        "start and end a session",
        "session encryption",
        "python3 on the instance",
    ] {
        let line = out
            .lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("{name}: {out}"));
        assert!(line.contains(" ok "), "{line}");
    }
    assert!(out.contains("${aws:username} = "), "{out}");
    h.assert_no_sessions_left().await;
}

#[tokio::test]
async fn the_sso_terminate_pitfall_is_flagged_and_copies_still_work() {
    let mut cfg = fast();
    cfg.identity = Identity::sso_role("AWSReservedSSO_Dev_abc", "alice");
    cfg.deny = vec![DenyRule::action("ssm:TerminateSession")];
    let h = Harness::new(cfg).await;
    let (code, out, err) = h.run(&["doctor", "--json", INSTANCE]).await;
    assert_eq!(code, 0, "a warning, not a failure: {out}{err}");
    let report = doctor_json(&out);
    assert_eq!(doctor_check(&report, "identity")["status"], "ok");
    assert!(doctor_check(&report, "identity")["detail"]
        .as_str()
        .unwrap()
        .contains("${aws:username} is undefined"));
    let s = doctor_check(&report, "start and end a session");
    assert_eq!(s["status"], "warn", "{s}");
    assert!(
        s["detail"]
            .as_str()
            .unwrap()
            .contains("ssm:TerminateSession"),
        "{s}"
    );
    assert!(s["fix"].as_str().unwrap().contains("${aws:userid}"), "{s}");

    // The copy itself succeeds, with one warning that carries the fix.
    let f = h.local().join("f");
    std::fs::write(&f, b"deployed").unwrap();
    let (code, _, err) = h.run(&[f.to_str().unwrap(), &format!("{INSTANCE}:")]).await;
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("${aws:userid}"), "{err}");
    assert_eq!(
        err.matches("warning").count(),
        2,
        "one warning and its repeat count: {err}"
    );
    assert_eq!(std::fs::read(h.remote().join("f")).unwrap(), b"deployed");
    h.assert_no_sessions_left().await;
}

#[tokio::test]
async fn federated_callers_are_recognised() {
    let mut cfg = fast();
    cfg.identity = Identity::federated("carol");
    let h = Harness::new(cfg).await;
    let (code, out, _) = h.run(&["doctor", "--json", INSTANCE]).await;
    assert_eq!(code, 0);
    let id = doctor_check(&doctor_json(&out), "identity")["detail"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(id.contains("federated") && id.contains(":carol"), "{id}");
}

#[tokio::test]
async fn unknown_and_offline_instances_fail_with_the_target_class() {
    let mut cfg = fast();
    cfg.instances = vec![
        InstanceConfig::new(INSTANCE),
        InstanceConfig::new("i-0aaaaaaaaaaaaaaa1").offline(),
    ];
    let h = Harness::new(cfg).await;
    let (code, out, _) = h.run(&["doctor", "i-0fffffffffffffff0"]).await;
    assert_eq!(code, 68, "{out}");
    assert!(
        out.contains("not a managed instance") && out.contains("fix:"),
        "{out}"
    );
    let (code, out, _) = h.run(&["doctor", "i-0aaaaaaaaaaaaaaa1"]).await;
    assert_eq!(code, 68, "{out}");
    assert!(out.contains("ConnectionLost"), "{out}");
    assert_eq!(h.sim.stats().sessions_started, 0);
}

#[tokio::test]
async fn old_agents_and_missing_python_are_reported() {
    let mut cfg = fast();
    cfg.instances = vec![
        InstanceConfig::new(INSTANCE)
            .agent_version("3.0.161.0")
            .without(&["python3"]),
        InstanceConfig::new("i-0bbbbbbbbbbbbbbb2").agent_version("2.3.500.0"),
    ];
    let h = Harness::new(cfg).await;
    let (code, out, _) = h.run(&["doctor", "--json", INSTANCE]).await;
    assert_eq!(code, 0, "{out}");
    let report = doctor_json(&out);
    let features = doctor_check(&report, "agent features");
    assert_eq!(features["status"], "warn", "{features}");
    assert!(
        features["detail"].as_str().unwrap().contains("smux"),
        "{features}"
    );
    assert_eq!(
        doctor_check(&report, "python3 on the instance")["status"],
        "warn"
    );
    // Too old for port forwarding at all: a failure, and no session is tried.
    let before = h.sim.stats().sessions_started;
    let (code, out, _) = h.run(&["doctor", "i-0bbbbbbbbbbbbbbb2"]).await;
    assert_eq!(code, 68, "{out}");
    assert!(out.contains("port forwarding (needs 2.3.672.0)"), "{out}");
    assert_eq!(h.sim.stats().sessions_started, before);
    h.assert_no_sessions_left().await;
}

#[tokio::test]
async fn denied_start_session_names_the_action() {
    let mut cfg = fast();
    cfg.deny = vec![DenyRule::action("ssm:StartSession")];
    let h = Harness::new(cfg).await;
    let (code, out, _) = h.run(&["doctor", INSTANCE]).await;
    assert_eq!(code, 77, "{out}");
    assert!(out.contains("ssm:StartSession"), "{out}");
}

#[tokio::test]
async fn bad_credentials_fail_first_and_skip_the_rest() {
    let h = Harness::new(fast()).await;
    let (code, out, _) = h
        .run_env(
            &[("AWS_SECRET_ACCESS_KEY", Some("wrong"))],
            &["doctor", INSTANCE],
        )
        .await;
    assert_eq!(code, 77, "{out}");
    assert!(out.contains("credentials") && out.contains("skip"), "{out}");
    assert_eq!(h.sim.stats().sessions_started, 0);
}

#[tokio::test]
async fn the_bucket_and_the_instances_way_to_s3_are_checked() {
    let h = Harness::new(fast()).await;
    let (code, out, err) = h
        .run(&["doctor", "--json", "--bucket", "ssmcp-sim", INSTANCE])
        .await;
    assert_eq!(code, 0, "{out}{err}");
    let report = doctor_json(&out);
    assert_eq!(
        doctor_check(&report, "s3 bucket")["status"],
        "ok",
        "{report}"
    );
    assert_eq!(
        doctor_check(&report, "instance reaches S3")["status"],
        "ok",
        "{report}"
    );
    assert_eq!(
        h.sim.s3_leftovers(),
        Vec::<String>::new(),
        "the probe is removed"
    );

    let (code, out, _) = h
        .run(&["doctor", "--json", "--bucket", "no-such-bucket", INSTANCE])
        .await;
    assert_eq!(code, 64, "{out}");
    let report = doctor_json(&out);
    assert_eq!(doctor_check(&report, "s3 bucket")["status"], "fail");
    assert_eq!(
        doctor_check(&report, "instance reaches S3")["status"],
        "skip"
    );
}

#[tokio::test]
async fn an_instance_that_cannot_fetch_from_s3_fails_the_check() {
    let mut cfg = fast();
    cfg.instances = vec![InstanceConfig::new(INSTANCE).without(&["python3"])];
    let h = Harness::new(cfg).await;
    let (code, out, err) = h
        .run(&["doctor", "--json", "--bucket", "ssmcp-sim", INSTANCE])
        .await;
    assert_eq!(code, 68, "{out}{err}");
    let report = doctor_json(&out);
    let c = doctor_check(&report, "instance reaches S3");
    assert_eq!(c["status"], "fail", "{report}");
    assert!(
        c["fix"].as_str().unwrap().contains("VPC gateway endpoint"),
        "{report}"
    );
    assert_eq!(h.sim.s3_leftovers(), Vec::<String>::new());
}
