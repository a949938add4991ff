//! Run Command through the real SDK: commands run for real in each instance's home, with
//! MaxConcurrency, MaxErrors, statuses, truncation and cancellation as the service has.

mod common;
use aws_sdk_ssm::types::{CommandInvocationStatus, Target};
use common::ssm;
use ssm_sim::config::InstanceConfig;
use ssm_sim::{Sim, SimConfig};
use std::time::Duration;

fn fleet(n: usize) -> Vec<InstanceConfig> {
    (0..n)
        .map(|i| {
            InstanceConfig::new(&format!("i-{i:017x}"))
                .tag("Role", if i % 2 == 0 { "web" } else { "db" })
        })
        .collect()
}

async fn sim(instances: Vec<InstanceConfig>, home: &std::path::Path) -> Sim {
    Sim::start(SimConfig {
        instances,
        home_root: Some(home.to_path_buf()),
        pacing: false,
        ..SimConfig::default()
    })
    .await
    .unwrap()
}

/// Poll until every invocation of the command is terminal; returns (instance, status).
async fn wait(client: &aws_sdk_ssm::Client, id: &str) -> Vec<(String, CommandInvocationStatus)> {
    for _ in 0..400 {
        let out = client
            .list_command_invocations()
            .command_id(id)
            .send()
            .await
            .unwrap();
        let list: Vec<_> = out
            .command_invocations()
            .iter()
            .map(|i| {
                (
                    i.instance_id().unwrap_or_default().to_string(),
                    i.status().cloned().unwrap(),
                )
            })
            .collect();
        let busy = list.iter().any(|(_, s)| {
            matches!(
                s,
                CommandInvocationStatus::Pending | CommandInvocationStatus::InProgress
            )
        });
        if !busy {
            return list;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("command {id} did not finish");
}

#[tokio::test]
async fn commands_run_in_each_instance_home_and_report_output_and_codes() {
    let home = tempfile::tempdir().unwrap();
    let s = sim(fleet(4), home.path()).await;
    let client = ssm(&s);
    let sent = client
        .send_command()
        .document_name("AWS-RunShellScript")
        .targets(Target::builder().key("tag:Role").values("web").build())
        .parameters(
            "commands",
            vec![
                "pwd > where".into(),
                "echo out; echo err >&2; exit 3".into(),
            ],
        )
        .send()
        .await
        .unwrap();
    let id = sent.command().unwrap().command_id().unwrap().to_string();
    let done = wait(&client, &id).await;
    assert_eq!(done.len(), 2, "two web instances: {done:?}");
    for (instance, status) in &done {
        assert_eq!(*status, CommandInvocationStatus::Failed);
        let inv = client
            .get_command_invocation()
            .command_id(&id)
            .instance_id(instance)
            .send()
            .await
            .unwrap();
        assert_eq!(inv.response_code(), 3);
        assert_eq!(inv.standard_output_content(), Some("out\n"));
        assert_eq!(inv.standard_error_content(), Some("err\n"));
        let here = std::fs::read_to_string(home.path().join(instance).join("where")).unwrap();
        assert!(here.trim().ends_with(instance.as_str()), "{here}");
    }
}

#[tokio::test]
async fn concurrency_is_capped_and_errors_stop_new_targets() {
    let home = tempfile::tempdir().unwrap();
    let mut instances = fleet(8);
    instances[0] = instances[0].clone().offline();
    let s = sim(instances, home.path()).await;
    let client = ssm(&s);
    let log = home.path().join("concurrency.log");
    // Each run notes start and end; fail on two chosen instances.
    let script = format!(
        "echo start >> '{0}'; sleep 0.2; echo end >> '{0}'; case \"$HOME\" in *0001|*0002) exit 1;; esac",
        log.display()
    );
    let ids: Vec<String> = (0..8).map(|i| format!("i-{i:017x}")).collect();
    let sent = client
        .send_command()
        .document_name("AWS-RunShellScript")
        .set_instance_ids(Some(ids))
        .max_concurrency("2")
        .max_errors("1")
        .parameters("commands", vec![script])
        .send()
        .await
        .unwrap();
    let id = sent.command().unwrap().command_id().unwrap().to_string();
    let done = wait(&client, &id).await;
    let status = |i: usize| done[i].1.clone();
    assert_eq!(
        status(0),
        CommandInvocationStatus::Failed,
        "offline: {done:?}"
    );
    let offline = client
        .list_command_invocations()
        .command_id(&id)
        .instance_id("i-00000000000000000")
        .send()
        .await
        .unwrap();
    assert_eq!(
        offline.command_invocations()[0].status_details(),
        Some("Undeliverable")
    );
    assert_eq!(status(1), CommandInvocationStatus::Failed);
    assert_eq!(status(2), CommandInvocationStatus::Failed);
    // Two errors exceed MaxErrors 1: nothing new starts after that.
    let cancelled = done
        .iter()
        .filter(|(_, s)| *s == CommandInvocationStatus::Cancelled)
        .count();
    assert!(cancelled >= 3, "{done:?}");
    // Never more than two at once.
    let mut running = 0;
    let mut peak = 0;
    for line in std::fs::read_to_string(&log).unwrap().lines() {
        running += if line == "start" { 1 } else { -1 };
        peak = peak.max(running);
    }
    assert!(peak <= 2, "peak concurrency {peak}");
}

#[tokio::test]
async fn output_is_truncated_and_commands_can_be_cancelled() {
    let home = tempfile::tempdir().unwrap();
    let s = sim(fleet(2), home.path()).await;
    let client = ssm(&s);
    let sent = client
        .send_command()
        .document_name("AWS-RunShellScript")
        .instance_ids("i-00000000000000000")
        .parameters(
            "commands",
            vec![
                "head -c 30000 /dev/zero | tr '\\0' a; head -c 9000 /dev/zero | tr '\\0' b >&2"
                    .into(),
            ],
        )
        .send()
        .await
        .unwrap();
    let id = sent.command().unwrap().command_id().unwrap().to_string();
    wait(&client, &id).await;
    let inv = client
        .get_command_invocation()
        .command_id(&id)
        .instance_id("i-00000000000000000")
        .send()
        .await
        .unwrap();
    assert_eq!(inv.standard_output_content().unwrap().len(), 24_000);
    assert_eq!(inv.standard_error_content().unwrap().len(), 8_000);

    let sent = client
        .send_command()
        .document_name("AWS-RunShellScript")
        .instance_ids("i-00000000000000001")
        .parameters("commands", vec!["sleep 30".into()])
        .send()
        .await
        .unwrap();
    let id = sent.command().unwrap().command_id().unwrap().to_string();
    tokio::time::sleep(Duration::from_millis(200)).await;
    client
        .cancel_command()
        .command_id(&id)
        .send()
        .await
        .unwrap();
    let done = wait(&client, &id).await;
    assert_eq!(done[0].1, CommandInvocationStatus::Cancelled);
}

#[tokio::test]
async fn bad_requests_get_aws_errors() {
    let home = tempfile::tempdir().unwrap();
    let s = sim(fleet(1), home.path()).await;
    let client = ssm(&s);
    let e = client
        .send_command()
        .document_name("AWS-NoSuchDocument")
        .instance_ids("i-00000000000000000")
        .parameters("commands", vec!["true".into()])
        .send()
        .await
        .unwrap_err();
    assert_eq!(
        e.into_service_error().meta().code(),
        Some("InvalidDocument")
    );
    let e = client
        .send_command()
        .document_name("AWS-RunShellScript")
        .instance_ids("i-0fffffffffffffff0")
        .parameters("commands", vec!["true".into()])
        .send()
        .await
        .unwrap_err();
    assert_eq!(
        e.into_service_error().meta().code(),
        Some("InvalidInstanceId")
    );
    let e = client
        .get_command_invocation()
        .command_id("nope")
        .instance_id("i-00000000000000000")
        .send()
        .await
        .unwrap_err();
    assert_eq!(
        e.into_service_error().meta().code(),
        Some("InvalidCommandId")
    );
}

#[tokio::test]
async fn the_api_reference_constraints_are_enforced() {
    let home = tempfile::tempdir().unwrap();
    let s = sim(fleet(2), home.path()).await;
    let client = ssm(&s);
    let send = || {
        client
            .send_command()
            .document_name("AWS-RunShellScript")
            .parameters("commands", vec!["true".into()])
    };
    let long_comment = send()
        .instance_ids(format!("i-{:017x}", 0))
        .comment("x".repeat(101))
        .send()
        .await
        .unwrap_err();
    let six_targets = (0..6).fold(send(), |r, i| {
        r.targets(
            Target::builder()
                .key(format!("tag:K{i}"))
                .values("v")
                .build(),
        )
    });
    let six_targets = six_targets.send().await.unwrap_err();
    for (what, e) in [("comment", long_comment), ("targets", six_targets)] {
        let se = e.into_service_error();
        assert_eq!(
            se.meta().code(),
            Some("ValidationException"),
            "{what}: {se:?}"
        );
        assert!(
            se.meta().message().unwrap_or_default().contains(what),
            "{se:?}"
        );
    }
}
