//! KMS-encrypted sessions end to end: the simulated agent decrypts the data key ssmcp
//! made through the simulator's KMS (as the instance's role), seals its output and opens
//! ssmcp's input; nothing here shares the agent's keys with the client but the handshake.

mod common;
use common::*;
use ssm_sim::config::KmsKey;
use ssm_sim::policy::Policy;
use ssm_sim::SimConfig;
use std::path::Path;

fn kms(challenge: bool) -> SimConfig {
    SimConfig {
        kms_challenge: challenge,
        ..fast()
    }
    .with_kms_sessions("ssm-sessions")
}

fn remote_arg(path: &str) -> String {
    format!("{INSTANCE}:{path}")
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// exec and both transports, with the agent's encryption challenge and without it (older
/// agents): byte-identical round trips, and the simulator saw every session encrypted.
#[tokio::test]
async fn exec_and_both_transports_work_over_encrypted_sessions() {
    for challenge in [true, false] {
        let h = Harness::new(kms(challenge)).await;
        let data = pattern(7, 300_000);
        let src = h.local().join("data.bin");
        std::fs::write(&src, &data).unwrap();
        for transport in ["pty", "stream"] {
            let name = format!("up-{transport}.bin");
            let (code, _, err) = h
                .run(&["--transport", transport, s(&src), &remote_arg(&name)])
                .await;
            assert_eq!(code, 0, "{transport}, challenge {challenge}: {err}");
            assert_eq!(
                std::fs::read(h.remote().join(&name)).unwrap(),
                data,
                "{transport}"
            );
            let back = h.local().join(format!("back-{transport}.bin"));
            let (code, _, err) = h
                .run(&["--transport", transport, &remote_arg(&name), s(&back)])
                .await;
            assert_eq!(code, 0, "{transport}, challenge {challenge}: {err}");
            assert_eq!(std::fs::read(&back).unwrap(), data, "{transport}");
        }
        let (code, out, err) = h
            .run(&[
                "exec",
                INSTANCE,
                "--",
                "sha256sum up-pty.bin; echo to-stderr >&2; exit 5",
            ])
            .await;
        assert_eq!(code, 5, "{err}");
        assert_eq!(out, format!("{}  up-pty.bin\n", sha(&data)));
        assert_eq!(err, "to-stderr\n");
        let (code, out, err) = h
            .run(&["exec", "-t", INSTANCE, "--", "echo in a terminal"])
            .await;
        assert_eq!((code, out.as_str()), (0, "in a terminal\n"), "{err}");
        h.assert_no_sessions_left().await;
        let st = h.sim.stats();
        assert!(st.kms_sessions >= 6, "{st:?}");
        let challenges = if challenge { st.kms_sessions } else { 0 };
        assert_eq!(st.kms_challenges_passed, challenges, "{st:?}");
        assert_eq!(st.protocol_violations(), 0, "{st:?}");
    }
}

/// One bit flipped in one sealed agent message (its digest recomputed, as someone who
/// can rewrite the stream would): the copy stops with an integrity error and nothing is
/// placed; exec stops too.
#[tokio::test]
async fn a_tampered_message_fails_the_copy_and_places_nothing() {
    let mut cfg = kms(true);
    cfg.faults.tamper_sealed_output = Some(40);
    let h = Harness::new(cfg).await;
    std::fs::write(h.remote().join("data.bin"), pattern(3, 200_000)).unwrap();
    let dest = h.local().join("data.bin");
    let (code, _, err) = h
        .run(&["--transport", "pty", &remote_arg("data.bin"), s(&dest)])
        .await;
    assert_eq!(code, 74, "{err}");
    assert!(err.contains("failed its integrity check"), "{err}");
    assert!(!dest.exists());
    assert_no_temporaries(&h.local());
    h.assert_no_sessions_left().await;
}

#[tokio::test]
async fn a_tampered_message_stops_exec() {
    let mut cfg = kms(true);
    // ~24 KB of output needs dozens of messages of at most 1 KiB, so the fifth comes
    // before the exit status however the agent's reads happen to split it (a short
    // output may arrive whole in one message, the status with it).
    cfg.faults.tamper_sealed_output = Some(5);
    let h = Harness::new(cfg).await;
    let (code, _, err) = h.run(&["exec", INSTANCE, "--", "seq 1 5000"]).await;
    assert_eq!(code, 74, "{err}");
    assert!(err.contains("failed its integrity check"), "{err}");
    h.assert_no_sessions_left().await;
}

fn with_policy_text(name: &str, text: &str) -> Policy {
    Policy::parse(name, text).unwrap()
}

/// Each way KMS can refuse gets its own message, naming the key and the fix, and an exit
/// class: the caller's permission is `auth`, the key or the instance is `target`.
#[tokio::test]
async fn kms_refusals_say_what_to_fix() {
    let denied = SimConfig {
        deny: vec![ssm_sim::config::DenyRule::action("kms:GenerateDataKey")],
        ..kms(true)
    };
    let mut disabled = kms(true);
    disabled.kms_keys[0] = disabled.kms_keys[0].clone().disabled();
    let missing = SimConfig {
        kms_key_id: Some("alias/no-such-key".into()),
        ..kms(true)
    };
    let far_key = KmsKey::new("far").in_region("eu-west-1");
    let far = SimConfig {
        kms_key_id: Some(format!(
            "arn:aws:kms:eu-west-1:123456789012:key/{}",
            far_key.id
        )),
        kms_keys: vec![far_key],
        ..fast()
    };
    let role_without_decrypt = SimConfig {
        instance_policies: vec![with_policy_text(
            "core",
            r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"ssm:UpdateInstanceInformation","Resource":"*"}]}"#,
        )],
        ..kms(true)
    };
    let cases = [
        ("denied", denied, 77, "allow kms:GenerateDataKey"),
        ("disabled", disabled, 68, "enable the key"),
        ("missing", missing, 68, "KMS keys are regional"),
        ("other region", far, 68, "KMS keys are regional"),
        (
            "instance role",
            role_without_decrypt,
            68,
            "needs kms:Decrypt",
        ),
    ];
    for (what, cfg, want, fix) in cases {
        let h = Harness::new(cfg).await;
        let (code, out, err) = h.run(&["exec", INSTANCE, "--", "echo ran"]).await;
        assert_eq!(code, want, "{what}: {err}");
        assert!(err.contains(fix), "{what}: {err}");
        assert_eq!(out, "", "{what}");
        assert!(!err.contains("panicked"), "{what}: {err}");
        h.assert_no_sessions_left().await;
    }
}

fn shipped(name: &str, key_id: &str) -> Policy {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("docs/policies")
        .join(name);
    let text = std::fs::read_to_string(path)
        .unwrap()
        .replace("KEY_ID", key_id);
    with_policy_text(name, &text)
}

/// docs/policies/kms-session-caller.json and kms-instance-role.json, as shipped, are
/// what an encrypted session needs beyond the session policy; without either it fails
/// with the message that names it.
#[tokio::test]
async fn the_shipped_kms_policies_are_enough_and_each_is_needed() {
    let base = kms(true);
    let key = base.kms_keys[0].id.clone();
    let session = shipped("session-caller.json", &key);
    let caller = shipped("kms-session-caller.json", &key);
    let role = shipped("kms-instance-role.json", &key);
    let unrelated_role = with_policy_text(
        "core",
        r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"ssm:UpdateInstanceInformation","Resource":"*"}]}"#,
    );
    let cases = [
        (
            vec![session.clone(), caller.clone()],
            vec![role.clone()],
            0,
            "ran",
        ),
        (
            vec![session.clone()],
            vec![role],
            77,
            "docs/policies/kms-session-caller.json",
        ),
        (
            vec![session, caller],
            vec![unrelated_role],
            68,
            "docs/policies/kms-instance-role.json",
        ),
    ];
    for (policies, instance_policies, want, says) in cases {
        let h = Harness::new(SimConfig {
            policies,
            instance_policies,
            ..base.clone()
        })
        .await;
        let (code, out, err) = h.run(&["exec", INSTANCE, "--", "echo ran"]).await;
        assert_eq!(code, want, "{err}");
        assert!(out.contains(says) || err.contains(says), "{out}{err}");
        h.assert_no_sessions_left().await;
    }
}

/// doctor says whether the instance's sessions are encrypted and with which key, and
/// which end cannot use the key.
#[tokio::test]
async fn doctor_reports_session_encryption() {
    let cases = [
        (fast(), 0, "ok", "not KMS-encrypted"),
        (kms(true), 0, "ok", "KMS-encrypted with alias/ssm-sessions"),
        (
            SimConfig {
                deny: vec![ssm_sim::config::DenyRule::action("kms:GenerateDataKey")],
                ..kms(true)
            },
            77,
            "fail",
            "allow kms:GenerateDataKey",
        ),
    ];
    for (cfg, want, status, says) in cases {
        let h = Harness::new(cfg).await;
        let (code, out, err) = h.run(&["doctor", "--json", INSTANCE]).await;
        assert_eq!(code, want, "{out}{err}");
        let report = doctor_json(&out);
        let check = doctor_check(&report, "session encryption");
        assert_eq!(check["status"], status, "{check}");
        assert!(check.to_string().contains(says), "{check}");
        h.assert_no_sessions_left().await;
    }
}
