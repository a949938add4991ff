//! The SSM JSON API through the real AWS SDK: shapes, SigV4, deny rules, throttling.

mod common;
use common::*;
use ssm_sim::{DenyRule, Identity, InstanceConfig, Sim, SimConfig};

#[tokio::test]
async fn start_describe_terminate_through_the_sdk() {
    let sim = Sim::start(SimConfig::default()).await.unwrap();
    let c = ssm(&sim);
    let s = start(
        &sim,
        Some("AWS-StartPortForwardingSession"),
        &[("portNumber", "80")],
    )
    .await;
    assert!(s.session_id.starts_with("alice-"), "{}", s.session_id);
    assert!(s.url.starts_with(&sim.gateway_url));
    assert!(s.url.ends_with("?role=publish_subscribe"));
    assert!(s.token.len() >= 32);

    let active = c
        .describe_sessions()
        .state(aws_sdk_ssm::types::SessionState::Active)
        .send()
        .await
        .unwrap();
    assert_eq!(active.sessions().len(), 1);
    assert_eq!(
        active.sessions()[0].document_name(),
        Some("AWS-StartPortForwardingSession")
    );

    let t = c
        .terminate_session()
        .session_id(&s.session_id)
        .send()
        .await
        .unwrap();
    assert_eq!(t.session_id(), Some(s.session_id.as_str()));
    assert_eq!(sim.stats().ended_by_api, 1);
    assert_eq!(sim.stats().sessions_open(), 0);
    let history = c
        .describe_sessions()
        .state(aws_sdk_ssm::types::SessionState::History)
        .send()
        .await
        .unwrap();
    assert_eq!(
        history.sessions()[0].status(),
        Some(&aws_sdk_ssm::types::SessionStatus::Terminated)
    );
    // A terminated session cannot be resumed: the token comes back null.
    let r = c
        .resume_session()
        .session_id(&s.session_id)
        .send()
        .await
        .unwrap();
    assert_eq!(r.token_value(), None);
}

#[tokio::test]
async fn describe_instance_information_filters_by_tag_and_id() {
    let cfg = SimConfig {
        instances: vec![
            InstanceConfig::new("i-0aaaaaaaaaaaaaaa1")
                .tag("Name", "web-1")
                .tag("Role", "web"),
            InstanceConfig::new("i-0aaaaaaaaaaaaaaa2")
                .tag("Name", "web-2")
                .tag("Role", "web"),
            InstanceConfig::new("mi-0123456789abcdef0")
                .tag("Name", "db-1")
                .offline(),
        ],
        ..SimConfig::default()
    };
    let sim = Sim::start(cfg).await.unwrap();
    let c = ssm(&sim);
    let f = |k: &str, v: &str| {
        aws_sdk_ssm::types::InstanceInformationStringFilter::builder()
            .key(k)
            .values(v)
            .build()
            .unwrap()
    };
    let all = c.describe_instance_information().send().await.unwrap();
    assert_eq!(all.instance_information_list().len(), 3);
    let web = c
        .describe_instance_information()
        .filters(f("tag:Role", "web"))
        .send()
        .await
        .unwrap();
    assert_eq!(web.instance_information_list().len(), 2);
    // Values match exactly: AWS documents no wildcards here, so the simulator has none.
    let pattern = c
        .describe_instance_information()
        .filters(f("tag:Name", "db-*"))
        .send()
        .await
        .unwrap();
    assert!(pattern.instance_information_list().is_empty());
    let named = c
        .describe_instance_information()
        .filters(f("tag:Name", "db-1"))
        .send()
        .await
        .unwrap();
    let db = &named.instance_information_list()[0];
    assert_eq!(db.instance_id(), Some("mi-0123456789abcdef0"));
    assert_eq!(
        db.ping_status(),
        Some(&aws_sdk_ssm::types::PingStatus::ConnectionLost)
    );
    assert_eq!(
        db.resource_type(),
        Some(&aws_sdk_ssm::types::ResourceType::ManagedInstance)
    );
    // Pagination.
    let p1 = c
        .describe_instance_information()
        .max_results(5)
        .send()
        .await
        .unwrap();
    assert!(p1.next_token().is_none());
    // Offline targets cannot start sessions.
    let err = c
        .start_session()
        .target("mi-0123456789abcdef0")
        .send()
        .await
        .unwrap_err();
    let e = err.into_service_error();
    assert!(e.is_target_not_connected(), "{e:?}");
}

#[tokio::test]
async fn bad_signature_and_unknown_key_are_rejected() {
    let sim = Sim::start(SimConfig::default()).await.unwrap();
    let err = ssm_with_secret(&sim, "wrong-secret")
        .describe_instance_information()
        .send()
        .await
        .unwrap_err();
    let meta = err.into_service_error();
    let code = aws_sdk_ssm::error::ProvideErrorMetadata::code(&meta);
    assert_eq!(code, Some("InvalidSignatureException"));
}

#[tokio::test]
async fn deny_rule_answers_in_aws_wording() {
    let cfg = SimConfig {
        identity: Identity::sso_role("AWSReservedSSO_Dev_abc", "alice"),
        deny: vec![DenyRule::action("ssm:TerminateSession")],
        ..SimConfig::default()
    };
    let sim = Sim::start(cfg).await.unwrap();
    let s = start(&sim, None, &[]).await;
    let err = ssm(&sim)
        .terminate_session()
        .session_id(&s.session_id)
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    let msg = aws_sdk_ssm::error::ProvideErrorMetadata::message(&err)
        .unwrap()
        .to_string();
    assert_eq!(
        aws_sdk_ssm::error::ProvideErrorMetadata::code(&err),
        Some("AccessDeniedException")
    );
    assert_eq!(
        msg,
        format!(
            "User: arn:aws:sts::123456789012:assumed-role/AWSReservedSSO_Dev_abc/alice is not \
             authorized to perform: ssm:TerminateSession on resource: \
             arn:aws:ssm:us-east-1:123456789012:session/{} because no identity-based policy \
             allows the ssm:TerminateSession action",
            s.session_id
        )
    );
    assert_eq!(
        sim.stats().sessions_open(),
        1,
        "a denied terminate ends nothing"
    );
}

#[tokio::test]
async fn throttling_is_injected_then_clears() {
    let cfg = SimConfig {
        throttle: vec![ssm_sim::Throttle::first("DescribeInstanceInformation", 1)],
        ..SimConfig::default()
    };
    let sim = Sim::start(cfg).await.unwrap();
    let c = ssm(&sim);
    let err = c
        .describe_instance_information()
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert_eq!(
        aws_sdk_ssm::error::ProvideErrorMetadata::code(&err),
        Some("ThrottlingException")
    );
    c.describe_instance_information().send().await.unwrap();
}

#[tokio::test]
async fn unknown_document_and_missing_parameter() {
    let sim = Sim::start(SimConfig::default()).await.unwrap();
    let c = ssm(&sim);
    let e = c
        .start_session()
        .target(ssm_sim::config::DEFAULT_INSTANCE)
        .document_name("No-Such-Doc")
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert!(e.is_invalid_document(), "{e:?}");
    let e = c
        .start_session()
        .target(ssm_sim::config::DEFAULT_INSTANCE)
        .document_name("AWS-StartInteractiveCommand")
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert_eq!(
        aws_sdk_ssm::error::ProvideErrorMetadata::code(&e),
        Some("InvalidParameters")
    );
}

#[tokio::test]
async fn tagging_get_resources_lists_tagged_instances_managed_or_not() {
    let cfg = SimConfig {
        instances: vec![
            InstanceConfig::new("i-0aaaaaaaaaaaaaaa1").tag("Name", "web-1"),
            InstanceConfig::new("mi-0aaaaaaaaaaaaaaa2")
                .tag("Name", "web-2")
                .tag("Role", "web"),
            InstanceConfig::new("i-0aaaaaaaaaaaaaaa3"),
        ],
        unmanaged_instances: vec![InstanceConfig::new("i-0bbbbbbbbbbbbbbb4").tag("Name", "web-4")],
        deny: vec![],
        ..SimConfig::default()
    };
    let sim = Sim::start(cfg).await.unwrap();
    let c = tagging(&sim);
    let name_key = aws_sdk_resourcegroupstagging::types::TagFilter::builder()
        .key("Name")
        .build();
    let mut arns = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let page = c
            .get_resources()
            .tag_filters(name_key.clone())
            .resource_type_filters("ec2:instance")
            .resource_type_filters("ssm:managed-instance")
            .resources_per_page(1)
            .set_pagination_token(token.clone())
            .send()
            .await
            .unwrap();
        for m in page.resource_tag_mapping_list() {
            arns.push(m.resource_arn().unwrap_or_default().to_string());
        }
        match page.pagination_token() {
            Some(t) if !t.is_empty() => token = Some(t.to_string()),
            _ => break,
        }
    }
    assert_eq!(
        arns,
        [
            "arn:aws:ec2:us-east-1:123456789012:instance/i-0aaaaaaaaaaaaaaa1",
            "arn:aws:ssm:us-east-1:123456789012:managed-instance/mi-0aaaaaaaaaaaaaaa2",
            "arn:aws:ec2:us-east-1:123456789012:instance/i-0bbbbbbbbbbbbbbb4",
        ]
    );
    // Values are alternatives matched exactly; filters are all required.
    let role = c
        .get_resources()
        .tag_filters(
            aws_sdk_resourcegroupstagging::types::TagFilter::builder()
                .key("Role")
                .values("web")
                .build(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(role.resource_tag_mapping_list().len(), 1);
    assert_eq!(role.resource_tag_mapping_list()[0].tags().len(), 2);
    let ec2_only = c
        .get_resources()
        .resource_type_filters("ec2:instance")
        .send()
        .await
        .unwrap();
    assert_eq!(ec2_only.resource_tag_mapping_list().len(), 2);
    let err = c
        .get_resources()
        .resources_per_page(500)
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert!(err.is_invalid_parameter_exception(), "{err:?}");
}

#[tokio::test]
async fn tagging_get_resources_can_be_denied() {
    let cfg = SimConfig {
        deny: vec![DenyRule::action("tag:GetResources")],
        ..SimConfig::default()
    };
    let sim = Sim::start(cfg).await.unwrap();
    let err = tagging(&sim).get_resources().send().await.unwrap_err();
    let text = format!("{:?}", err.into_service_error());
    assert!(
        text.contains("not authorized to perform: tag:GetResources"),
        "{text}"
    );
}

#[tokio::test]
async fn tls_exports_the_ca_for_aws_tools_and_for_go_programs() {
    let sim = Sim::start(SimConfig {
        tls: true,
        ..SimConfig::default()
    })
    .await
    .unwrap();
    let env: std::collections::HashMap<String, String> = sim.env().into_iter().collect();
    let ca = env.get("AWS_CA_BUNDLE").expect("AWS_CA_BUNDLE exported");
    // Go's crypto/x509 (the official plugin) reads SSL_CERT_FILE, not AWS_CA_BUNDLE.
    assert_eq!(env.get("SSL_CERT_FILE"), Some(ca));
    let pem = std::fs::read_to_string(ca).unwrap();
    assert!(pem.contains("BEGIN CERTIFICATE"), "{pem}");
}

/// The latency profile: every API call costs a round trip (plus the connection's set-up
/// once), StartSession its service time, and a websocket frame the one-way delay each
/// way; a fast loopback simulator costs none of it.
#[tokio::test]
async fn latency_is_charged_to_the_api_and_the_data_channel() {
    use std::time::{Duration, Instant};
    let latency = Duration::from_millis(40);
    let sim = Sim::start(SimConfig {
        latency,
        start_session_delay: Duration::from_millis(150),
        ..SimConfig::default()
    })
    .await
    .unwrap();
    let c = ssm(&sim);
    // The first call opens the connection: TCP's round trip, then the request's.
    let t = Instant::now();
    c.describe_instance_information().send().await.unwrap();
    assert!(t.elapsed() >= latency * 4, "{:?}", t.elapsed());
    let t = Instant::now();
    c.describe_instance_information().send().await.unwrap();
    let one = t.elapsed();
    assert!(
        one >= latency * 2 && one < latency * 2 + Duration::from_millis(150),
        "{one:?}"
    );
    let t = Instant::now();
    let s = start(
        &sim,
        Some("AWS-StartPortForwardingSession"),
        &[("portNumber", "9")],
    )
    .await;
    assert!(
        t.elapsed() >= latency * 2 + Duration::from_millis(150),
        "{:?}",
        t.elapsed()
    );
    // The websocket: TCP and the upgrade before the first frame, then the handshake
    // request arrives one way later than the agent sent it.
    let t = Instant::now();
    let mut raw = RawClient::connect(&s).await;
    raw.handshake("1.2.0.0").await;
    assert!(t.elapsed() >= latency * 5, "{:?}", t.elapsed());
    raw.close().await;

    let fast = Sim::start(SimConfig::default()).await.unwrap();
    let t = Instant::now();
    ssm(&fast)
        .describe_instance_information()
        .send()
        .await
        .unwrap();
    assert!(t.elapsed() < latency, "{:?}", t.elapsed());
}
