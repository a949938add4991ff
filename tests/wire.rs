//! Every byte once (#17): on a clean link with a region's latency and an agent that
//! spends on each input message what the real one does, an upload goes over the wire
//! once; under injected loss, what is resent stays close to what was dropped.

mod common;

use common::{pattern, sha, Harness, INSTANCE};
use ssm_sim::SimConfig;
use std::time::Duration;

/// The `wire` object of ssmcp's `--json` summary.
fn wire(stdout: &str) -> serde_json::Value {
    stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|e| e["event"] == "summary")
        .map(|e| e["wire"].clone())
        .unwrap_or_else(|| panic!("no summary: {stdout}"))
}

async fn upload(cfg: SimConfig, len: usize) -> (Harness, serde_json::Value) {
    let h = Harness::new(cfg).await;
    let f = h.local().join("big.bin");
    let data = pattern(17, len);
    std::fs::write(&f, &data).unwrap();
    let (code, out, err) = h
        .run(&["--json", f.to_str().unwrap(), &format!("{INSTANCE}:")])
        .await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        sha(&std::fs::read(h.remote().join("big.bin")).unwrap()),
        sha(&data)
    );
    let w = wire(&out);
    (h, w)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clean_link_carries_an_upload_once() {
    let cfg = SimConfig {
        latency: Duration::from_millis(10),
        // Slower than the client can produce even in a debug build, so the agent is
        // the bottleneck and a queue builds in front of it, as on the real service.
        input_cost: Duration::from_micros(250),
        ..SimConfig::default()
    };
    let (h, w) = upload(cfg, 64 << 20).await;
    let st = h.sim.stats();
    eprintln!("clean link: {st:?} {w}");
    let distinct = st.client_stream_messages - st.duplicate_client_messages;
    assert!(distinct > 60_000, "{st:?}");
    assert!(
        st.duplicate_client_messages * 100 <= distinct,
        "{} of {distinct} messages arrived twice: {st:?}",
        st.duplicate_client_messages
    );
    let (sent, resent) = (
        w["messages_sent"].as_u64().unwrap(),
        w["retransmitted"].as_u64().unwrap(),
    );
    assert!(sent >= distinct, "{w}");
    assert!(
        resent * 100 <= sent,
        "the client resent {resent} of {sent}: {w}"
    );
    h.assert_no_sessions_left().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_loss_the_resends_stay_near_what_was_dropped() {
    for pct in [1.0, 5.0] {
        let mut cfg = SimConfig {
            latency: Duration::from_millis(5),
            input_cost: Duration::from_micros(100),
            ..SimConfig::default()
        };
        cfg.faults.seed = 17;
        cfg.faults.to_agent.drop_pct = pct;
        cfg.faults.to_client.drop_pct = pct;
        let (h, w) = upload(cfg, 8 << 20).await;
        let st = h.sim.stats();
        eprintln!("{pct} % loss: {st:?} {w}");
        let dropped = st.dropped_to_agent + st.dropped_to_client;
        let resent = w["retransmitted"].as_u64().unwrap();
        assert!(dropped > 0, "{st:?}");
        assert!(
            resent <= 3 * dropped + 64,
            "{pct} %: {resent} resent for {dropped} dropped frames: {w} {st:?}"
        );
        h.assert_no_sessions_left().await;
    }
}
