//! `ssmcp forward` end to end: bytes identical both ways in smux and basic mode, several
//! connections at once, faults, and no session left behind.

mod common;
use common::*;
use ssm_sim::{DirectionFaults, Faults, InstanceConfig, SimConfig};
use std::time::Duration;

const MIB: usize = 1 << 20;

async fn exchange_through_forward(h: &Harness, n: usize, conns: usize) {
    let (server_port, mut server_shas) = exchange_server(n, 7).await;
    let (mut child, local) = h.forward(&[INSTANCE, &format!("0:{server_port}")]).await;
    let mut clients = Vec::new();
    for _ in 0..conns {
        clients.push(tokio::spawn(exchange_client(local, n, 9)));
    }
    for c in clients {
        assert_eq!(
            c.await.unwrap(),
            sha(&pattern(7, n)),
            "client received the server's bytes"
        );
        let s = tokio::time::timeout(Duration::from_secs(60), server_shas.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(s, sha(&pattern(9, n)), "server received the client's bytes");
    }
    interrupt(&child);
    let status = tokio::time::timeout(Duration::from_secs(20), child.wait())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status.code(), Some(0));
    h.assert_no_sessions_left().await;
    let st = h.sim.stats();
    assert_eq!(st.protocol_violations(), 0, "{st:?}");
    assert_eq!(st.ended_by_flag, 1, "ended in-band: {st:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smux_64_mib_each_way() {
    let h = Harness::new(fast()).await;
    exchange_through_forward(&h, 64 * MIB, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smux_several_connections_at_once() {
    let h = Harness::new(fast()).await;
    exchange_through_forward(&h, 4 * MIB, 4).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_mode_64_mib_each_way_with_an_old_agent() {
    let cfg = SimConfig {
        instances: vec![InstanceConfig::new(INSTANCE).agent_version("3.0.161.0")],
        ..fast()
    };
    let h = Harness::new(cfg).await;
    exchange_through_forward(&h, 64 * MIB, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn survives_loss_duplication_reordering_and_two_cuts() {
    let dir = DirectionFaults {
        drop_pct: 5.0,
        duplicate_pct: 5.0,
        reorder_pct: 5.0,
        ..Default::default()
    };
    let cfg = SimConfig {
        faults: Faults {
            seed: 7,
            to_client: dir.clone(),
            to_agent: dir,
            cut_after_bytes: vec![400_000, 1_200_000],
            connection_max_age: None,
            tamper_sealed_output: None,
        },
        ..fast()
    };
    let h = Harness::new(cfg).await;
    exchange_through_forward(&h, MIB, 1).await;
    let st = h.sim.stats();
    assert_eq!(st.websocket_connections, 3, "{st:?}");
    assert!(st.resumes >= 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminate_denied_still_exits_zero_with_one_explanation() {
    let cfg = SimConfig {
        identity: ssm_sim::Identity::sso_role("AWSReservedSSO_Dev_abc", "alice"),
        deny: vec![ssm_sim::DenyRule::action("ssm:TerminateSession")],
        ..fast()
    };
    let h = Harness::new(cfg).await;
    let (code, out, err) = h.run(&["exec", INSTANCE, "--", "echo", "hi"]).await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "hi\n");
    assert_eq!(
        err.matches("ssm:resourceTag/aws:ssmmessages:session-id")
            .count(),
        1,
        "one explanation, with the own-session statement: {err}"
    );
    assert!(err.contains("ssm:TerminateSession"), "{err}");
    h.assert_no_sessions_left().await;
}

#[tokio::test]
async fn start_denied_names_action_resource_and_fix() {
    let cfg = SimConfig {
        deny: vec![ssm_sim::DenyRule::action("ssm:StartSession")],
        ..fast()
    };
    let h = Harness::new(cfg).await;
    let (code, _, err) = h.run(&["forward", INSTANCE, "80"]).await;
    assert_eq!(code, 77, "{err}");
    assert!(err.contains("ssm:StartSession"), "{err}");
    assert!(err.contains(&format!("instance/{INSTANCE}")), "{err}");
    assert!(err.contains("hint: grant ssm:StartSession"), "{err}");
    assert_eq!(h.sim.stats().sessions_started, 0);
}

#[tokio::test]
async fn offline_target_is_a_target_error() {
    let cfg = SimConfig {
        instances: vec![InstanceConfig::new(INSTANCE).offline()],
        ..fast()
    };
    let h = Harness::new(cfg).await;
    let (code, _, err) = h.run(&["exec", INSTANCE, "--", "true"]).await;
    assert_eq!(code, 68, "{err}");
    assert!(err.contains("not reachable through SSM"), "{err}");
}

#[tokio::test]
async fn bad_target_is_a_usage_error() {
    let h = Harness::new(fast()).await;
    let (code, _, err) = h.run(&["exec", "web-1", "--", "true"]).await;
    assert_eq!(code, 64, "{err}");
    assert!(err.contains("not an instance target"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn survives_the_service_closing_connections_on_a_timer() {
    // The service drops data-channel websockets after a fixed lifetime (60 minutes in
    // AWS). Here each connection lives 1.5 s while a paced (real-agent speed) transfer
    // runs for several seconds, so it crosses more than one.
    let n = 3 * MIB;
    let cfg = SimConfig {
        faults: Faults {
            connection_max_age: Some(Duration::from_millis(1500)),
            ..Default::default()
        },
        ..SimConfig::default()
    };
    let h = Harness::new(cfg).await;
    let (server_port, mut shas) = exchange_server(n, 1).await;
    let (mut child, local) = h.forward(&[INSTANCE, &format!("{server_port}")]).await;
    let got = exchange_client(local, n, 2).await;
    assert_eq!(got, sha(&pattern(1, n)));
    assert_eq!(shas.recv().await.unwrap(), sha(&pattern(2, n)));
    interrupt(&child);
    child.wait().await.unwrap();
    h.assert_no_sessions_left().await;
    let st = h.sim.stats();
    assert!(st.resumes >= 1, "{st:?}");
    assert_eq!(st.protocol_violations(), 0, "{st:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_publication_holds_sending_until_start() {
    let n = 32 * MIB;
    let h = Harness::new(fast()).await;
    let (server_port, mut shas) = exchange_server(n, 3).await;
    let (mut child, local) = h.forward(&[INSTANCE, &format!("{server_port}")]).await;
    let id = h.sim.session_ids().pop().unwrap();
    let frame = |t: ssm_proto::MessageType| {
        ssm_proto::Message::new(t, 0, 0, 0, vec![], uuid::Uuid::new_v4(), 1)
            .encode()
            .unwrap()
    };
    let client = tokio::spawn(exchange_client(local, n, 4));
    tokio::time::sleep(Duration::from_millis(200)).await;
    h.sim
        .send_to_client(&id, frame(ssm_proto::MessageType::PausePublication))
        .await;
    // Let what was already on its way arrive (frames numbered before the pause, up to a
    // window of them, still drain from the client's queues; on a loaded machine that
    // takes a while and can stall for a few hundred ms midway, which once passed for
    // the end of it), then watch for new data.
    let settle_by = tokio::time::Instant::now() + Duration::from_secs(20);
    let mut last = h.sim.stats().client_stream_messages;
    let mut quiet = 0;
    while quiet < 4 && tokio::time::Instant::now() < settle_by {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let now = h.sim.stats().client_stream_messages;
        quiet = if now == last { quiet + 1 } else { 0 };
        last = now;
    }
    let before = h.sim.stats().client_stream_messages;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let during = h.sim.stats().client_stream_messages - before;
    h.sim
        .send_to_client(&id, frame(ssm_proto::MessageType::StartPublication))
        .await;
    assert_eq!(client.await.unwrap(), sha(&pattern(3, n)));
    assert_eq!(shas.recv().await.unwrap(), sha(&pattern(4, n)));
    // Paused, the client sends acks only: no new data and no retransmissions.
    assert!(
        during < 20,
        "client kept sending data while paused: {during}"
    );
    assert!(
        before < (n / 1024) as u64,
        "the upload finished before the pause"
    );
    interrupt(&child);
    child.wait().await.unwrap();
    h.assert_no_sessions_left().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_host_document_is_used() {
    let h = Harness::new(fast()).await;
    let (server_port, mut shas) = exchange_server(64 * 1024, 5).await;
    let (mut child, local) = h
        .forward(&[
            INSTANCE,
            &format!("{server_port}"),
            "--remote-host",
            "127.0.0.1",
        ])
        .await;
    assert_eq!(
        exchange_client(local, 64 * 1024, 6).await,
        sha(&pattern(5, 64 * 1024))
    );
    assert_eq!(shas.recv().await.unwrap(), sha(&pattern(6, 64 * 1024)));
    interrupt(&child);
    child.wait().await.unwrap();
    h.assert_no_sessions_left().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forward_over_tls() {
    let h = Harness::new(SimConfig {
        tls: true,
        ..fast()
    })
    .await;
    exchange_through_forward(&h, 2 * MIB, 2).await;
}
