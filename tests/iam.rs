//! The IAM advice users paste, proven: the policy files in docs/policies are loaded as
//! they ship into the simulator, which evaluates them as IAM does, for an IAM user, an
//! SSO role session and a federated user. The seed's `${aws:username}` policy and the
//! earlier `${aws:userid}-*` advice (tests/policies) are run too, to show why they fail.

mod common;

use common::{doctor_check, doctor_json, fast, pattern, Harness, INSTANCE};
use ssm_sim::config::{Identity, DEFAULT_BUCKET, SECRET_ACCESS_KEY};
use ssm_sim::iam::Policy;
use ssm_sim::SimConfig;
use std::path::Path;

const TAG_KEY: &str = "ssm:resourceTag/aws:ssmmessages:session-id";

/// A shipped policy as the user pastes it, with the placeholders they replace: the
/// bucket, and the key prefix (empty, ssmcp's default).
fn shipped(name: &str) -> Policy {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("docs/policies")
        .join(name);
    let text = std::fs::read_to_string(&path).unwrap();
    let text = text.replace("BUCKET", DEFAULT_BUCKET).replace("PREFIX", "");
    Policy::parse(name, &text).unwrap()
}

/// One of the wrong policies kept for these tests.
fn wrong(name: &str) -> Policy {
    Policy::from_file(
        &Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/policies")
            .join(name),
    )
    .unwrap()
}

fn callers() -> [(&'static str, Identity); 3] {
    [
        ("IAM user", Identity::iam_user("alice")),
        (
            "SSO role",
            Identity::sso_role("AWSReservedSSO_Dev_0123456789abcdef", "alice@example.com"),
        ),
        ("federated user", Identity::federated("carol")),
    ]
}

fn sso() -> Identity {
    Identity::sso_role("AWSReservedSSO_Dev_0123456789abcdef", "alice@example.com")
}

fn with(identity: Identity, policies: Vec<Policy>, base: SimConfig) -> SimConfig {
    SimConfig {
        identity,
        policies,
        ..base
    }
}

/// Copy a small tree up: (exit code, stderr).
async fn copy_tree(h: &Harness) -> (i32, String) {
    let src = h.local().join("dist");
    std::fs::create_dir_all(src.join("sub")).unwrap();
    std::fs::write(src.join("a.txt"), b"a").unwrap();
    std::fs::write(src.join("sub/b.bin"), pattern(1, 70_000)).unwrap();
    let (code, _, err) = h
        .run(&["-r", src.to_str().unwrap(), &format!("{INSTANCE}:")])
        .await;
    if code == 0 {
        assert_eq!(
            std::fs::read(h.remote().join("dist/sub/b.bin")).unwrap(),
            pattern(1, 70_000)
        );
    }
    (code, err)
}

/// A paced download through a websocket that is cut once: ResumeSession decides.
async fn download_through_a_cut(identity: Identity, policies: Vec<Policy>) -> (i32, String) {
    let mut cfg = with(identity, policies, SimConfig::default());
    cfg.faults.cut_after_bytes = vec![256 * 1024];
    let h = Harness::new(cfg).await;
    std::fs::write(h.remote().join("data"), pattern(6, 1024 * 1024)).unwrap();
    let out = h.local().join("data");
    let (code, _, err) = h
        .run(&[
            "--parallel",
            "1",
            &format!("{INSTANCE}:data"),
            out.to_str().unwrap(),
        ])
        .await;
    if code == 0 {
        assert_eq!(std::fs::read(&out).unwrap(), pattern(6, 1024 * 1024));
        assert!(h.sim.stats().resumes >= 1, "the cut was resumed");
        h.assert_no_sessions_left().await;
    } else {
        assert!(!out.exists(), "nothing partial");
        // The cut session can be ended neither in-band nor by the API: say so.
        assert!(
            err.contains("may stay open until the service's idle timeout"),
            "{err}"
        );
    }
    (code, err)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_seed_policy_copies_with_one_warning_that_shows_the_tag_condition() {
    let h = Harness::new(with(sso(), vec![wrong("seed-username.json")], fast())).await;
    let (code, err) = copy_tree(&h).await;
    assert_eq!(code, 0, "{err}");
    let warnings: Vec<&str> = err
        .lines()
        .filter(|l| l.starts_with("ssmcp: warning: session"))
        .collect();
    assert_eq!(warnings.len(), 1, "{err}");
    assert!(warnings[0].contains("ssm:TerminateSession"), "{err}");
    assert!(
        err.contains(&format!("\"{TAG_KEY}\": \"${{aws:userid}}\"")),
        "the statement, ready to paste: {err}"
    );
    assert!(
        warnings[0].contains("because no identity-based policy allows"),
        "{err}"
    );
    h.assert_no_sessions_left().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_old_userid_advice_is_denied_the_same_way() {
    let h = Harness::new(with(sso(), vec![wrong("old-advice-userid.json")], fast())).await;
    let (code, err) = copy_tree(&h).await;
    assert_eq!(code, 0, "{err}");
    let warnings: Vec<&str> = err
        .lines()
        .filter(|l| l.starts_with("ssmcp: warning: session"))
        .collect();
    assert_eq!(warnings.len(), 1, "{err}");
    assert!(
        warnings[0].contains("is not authorized to perform: ssm:TerminateSession"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shipped_policy_works_for_every_kind_of_caller_without_a_warning() {
    for (who, identity) in callers() {
        let h = Harness::new(with(identity, vec![shipped("session-caller.json")], fast())).await;
        let (code, err) = copy_tree(&h).await;
        assert_eq!(code, 0, "{who}: {err}");
        assert!(!err.contains("warning"), "{who}: {err}");
        // exec and a download use the same statements.
        let (code, out, err) = h.run(&["exec", INSTANCE, "--", "echo", "hi"]).await;
        assert_eq!((code, out.as_str()), (0, "hi\n"), "{who}: {err}");
        assert!(!err.contains("warning"), "{who}: {err}");
        h.assert_no_sessions_left().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_seed_policy_is_fine_for_an_iam_user() {
    let h = Harness::new(with(
        Identity::iam_user("alice"),
        vec![wrong("seed-username.json")],
        fast(),
    ))
    .await;
    let (code, err) = copy_tree(&h).await;
    assert_eq!(code, 0, "{err}");
    assert!(!err.contains("warning"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_after_a_cut_follows_the_same_three_outcomes() {
    for policy in ["seed-username.json", "old-advice-userid.json"] {
        let (code, err) = download_through_a_cut(sso(), vec![wrong(policy)]).await;
        assert_eq!(code, 77, "{policy}: {err}");
        assert!(
            err.contains("ResumeSession was denied by IAM"),
            "{policy}: {err}"
        );
        assert!(err.contains(TAG_KEY), "{policy}: the fix: {err}");
    }
    for (who, identity) in callers() {
        let (code, err) =
            download_through_a_cut(identity, vec![shipped("session-caller.json")]).await;
        assert_eq!(code, 0, "{who}: {err}");
        assert!(!err.contains("warning"), "{who}: {err}");
    }
}

fn sdk(h: &Harness, caller: &Identity) -> aws_sdk_ssm::Client {
    let conf = aws_sdk_ssm::Config::builder()
        .behavior_version(aws_sdk_ssm::config::BehaviorVersion::latest())
        .region(aws_sdk_ssm::config::Region::new("us-east-1"))
        .endpoint_url(&h.sim.api_url)
        .credentials_provider(aws_sdk_ssm::config::Credentials::new(
            &caller.access_key_id,
            SECRET_ACCESS_KEY,
            None,
            None,
            "test",
        ))
        .build();
    aws_sdk_ssm::Client::from_conf(conf)
}

fn denial<E, R>(
    r: Result<E, aws_sdk_ssm::error::SdkError<impl aws_sdk_ssm::error::ProvideErrorMetadata, R>>,
) -> String {
    match r {
        Ok(_) => panic!("expected AccessDeniedException"),
        Err(e) => {
            let meta = e.as_service_error().expect("a service error");
            assert_eq!(meta.code(), Some("AccessDeniedException"));
            meta.message().unwrap_or_default().to_string()
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shipped_policy_really_scopes_to_the_caller_s_own_sessions() {
    let alice = sso();
    let bob = Identity::sso_role("AWSReservedSSO_Dev_0123456789abcdef", "bob@example.com")
        .signing_with("AKIASSMSIMCALLERBOB1");
    let cfg = SimConfig {
        identity: alice.clone(),
        other_callers: vec![bob.clone()],
        policies: vec![shipped("session-caller.json")],
        ..fast()
    };
    let h = Harness::new(cfg).await;
    let (a, b) = (sdk(&h, &alice), sdk(&h, &bob));
    let start = |c: aws_sdk_ssm::Client| async move {
        c.start_session()
            .target(INSTANCE)
            .document_name("AWS-StartPortForwardingSession")
            .parameters("portNumber", vec!["9".to_string()])
            .send()
            .await
            .unwrap()
            .session_id()
            .unwrap()
            .to_string()
    };
    let alices = start(a.clone()).await;
    let bobs = start(b.clone()).await;
    assert!(alices.starts_with("alice@example.com-"), "{alices}");
    assert!(bobs.starts_with("bob@example.com-"), "{bobs}");

    let said = denial(b.terminate_session().session_id(&alices).send().await);
    assert!(
        said.contains("assumed-role/AWSReservedSSO_Dev_0123456789abcdef/bob@example.com is not authorized to perform: ssm:TerminateSession")
            && said.contains(&format!("session/{alices} because no identity-based policy allows the ssm:TerminateSession action")),
        "{said}"
    );
    denial(b.resume_session().session_id(&alices).send().await);
    denial(a.resume_session().session_id(&bobs).send().await);

    // Each may end their own.
    a.resume_session().session_id(&alices).send().await.unwrap();
    a.terminate_session()
        .session_id(&alices)
        .send()
        .await
        .unwrap();
    b.terminate_session()
        .session_id(&bobs)
        .send()
        .await
        .unwrap();
    h.assert_no_sessions_left().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_explicit_deny_reads_as_aws_says_it() {
    let deny = Policy::parse(
        "deny.json",
        r#"{"Version":"2012-10-17","Statement":[{"Effect":"Deny","Action":"ssm:StartSession","Resource":"arn:aws:ec2:*:*:instance/*"}]}"#,
    )
    .unwrap();
    let h = Harness::new(with(
        sso(),
        vec![shipped("session-caller.json"), deny],
        fast(),
    ))
    .await;
    let (code, _, err) = h.run(&["exec", INSTANCE, "--", "true"]).await;
    assert_eq!(code, 77, "{err}");
    assert!(
        err.contains(&format!(
            "ssm:StartSession on resource: arn:aws:ec2:us-east-1:123456789012:instance/{INSTANCE} with an explicit deny in an identity-based policy"
        )),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_names_the_wrong_statement_and_prints_the_fix_for_each_caller_and_policy() {
    for (who, identity) in callers() {
        for (policy, ok) in [
            (shipped("session-caller.json"), true),
            (wrong("seed-username.json"), who == "IAM user"),
            (wrong("old-advice-userid.json"), false),
        ] {
            let name = policy.name.clone();
            let h = Harness::new(with(identity.clone(), vec![policy], fast())).await;
            let (code, out, err) = h.run(&["doctor", "--json", INSTANCE]).await;
            assert_eq!(code, 0, "{who} {name}: {out}{err}");
            let report = doctor_json(&out);
            let id = doctor_check(&report, "identity")["detail"]
                .as_str()
                .unwrap()
                .to_string();
            assert!(
                id.contains(&format!(
                    "aws:ssmmessages:session-id = {}",
                    identity.user_id
                )) && id.contains(&format!("\"{}-\"", identity.session_prefix)),
                "{who}: {id}"
            );
            let s = doctor_check(&report, "start and end a session");
            if ok {
                assert_eq!(s["status"], "ok", "{who} {name}: {s}");
            } else {
                assert_eq!(s["status"], "warn", "{who} {name}: {s}");
                let detail = s["detail"].as_str().unwrap();
                assert!(detail.contains("ssm:TerminateSession"), "{detail}");
                let fix = s["fix"].as_str().unwrap();
                assert!(
                    fix.contains(TAG_KEY) && fix.contains("${aws:userid}"),
                    "{fix}"
                );
            }
            for c in report["checks"].as_array().unwrap() {
                if c["check"] != "start and end a session" {
                    assert_ne!(c["status"], "fail", "{who} {name}: {c}");
                }
            }
            h.assert_no_sessions_left().await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_s3_transport_policy_is_enough_for_an_s3_copy() {
    let policies = vec![
        shipped("s3-transport-caller.json"),
        shipped("session-caller.json"),
    ];
    let h = Harness::new(with(sso(), policies, fast())).await;
    let f = h.local().join("big.bin");
    std::fs::write(&f, pattern(3, 300_000)).unwrap();
    let (code, _, err) = h.upload_via_s3(&f).await;
    assert_eq!(code, 0, "{err}");
    assert!(!err.contains("warning"), "{err}");
    assert_eq!(
        std::fs::read(h.remote().join("big.bin")).unwrap(),
        pattern(3, 300_000)
    );
    assert!(
        h.sim.s3_leftovers().is_empty(),
        "{:?}",
        h.sim.s3_leftovers()
    );
}

/// docs/iam.md: a caller with only the session policy needs the probe policy for
/// `doctor --bucket`, and nothing more.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_session_and_probe_policies_are_enough_for_doctor_s_s3_checks() {
    let policies = vec![
        shipped("session-caller.json"),
        shipped("doctor-s3-probe.json"),
    ];
    let h = Harness::new(with(sso(), policies, fast())).await;
    let (code, out, err) = h
        .run(&["doctor", "--json", "--bucket", DEFAULT_BUCKET, INSTANCE])
        .await;
    assert_eq!(code, 0, "{out}{err}");
    for c in doctor_json(&out)["checks"].as_array().unwrap() {
        assert_eq!(c["status"], "ok", "{c}");
    }
    assert!(h.sim.s3_leftovers().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_refuses_what_the_policy_does_not_allow() {
    // The session policy alone grants nothing in S3: the simulator's S3 evaluates too.
    let h = Harness::new(with(sso(), vec![shipped("session-caller.json")], fast())).await;
    let f = h.local().join("f");
    std::fs::write(&f, b"x").unwrap();
    let (code, _, err) = h.upload_via_s3(&f).await;
    assert_eq!(code, 77, "{err}");
    assert!(err.contains("denied"), "{err}");
    assert!(h.sim.s3_leftovers().is_empty());
}

/// docs/iam.md shows each shipped policy; the block after each marker must be the file.
#[test]
fn the_docs_show_exactly_the_shipped_files() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut seen = 0;
    for doc in ["docs/iam.md", "docs/transports.md", "README.md"] {
        let text = std::fs::read_to_string(root.join(doc)).unwrap();
        let mut rest = text.as_str();
        while let Some(at) = rest.find("<!-- policy: ") {
            rest = &rest[at + "<!-- policy: ".len()..];
            let file = rest.split(" -->").next().unwrap();
            let block = rest
                .split("```json\n")
                .nth(1)
                .and_then(|b| b.split("\n```").next())
                .unwrap_or_else(|| panic!("{doc}: no json block after {file}"));
            let shown: serde_json::Value = serde_json::from_str(block)
                .unwrap_or_else(|e| panic!("{doc}: the block for {file}: {e}"));
            let shipped: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(root.join(file)).unwrap()).unwrap();
            assert_eq!(shown, shipped, "{doc} shows {file} differently");
            seen += 1;
        }
    }
    assert!(
        seen >= 5,
        "every shipped policy is shown somewhere ({seen})"
    );
    // The statement ssmcp prints is the one in the session policy.
    let read = |f: &str| -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(root.join(f)).unwrap()).unwrap()
    };
    let policy = read("docs/policies/session-caller.json");
    let statement = read("docs/policies/own-sessions-statement.json");
    assert!(policy["Statement"].as_array().unwrap().contains(&statement));
    // Each file loads in the simulator as shipped (placeholders aside).
    for f in std::fs::read_dir(root.join("docs/policies")).unwrap() {
        let name = f.unwrap().file_name().into_string().unwrap();
        if name.ends_with(".json") && name != "own-sessions-statement.json" {
            shipped(&name);
        }
    }
}
