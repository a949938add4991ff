//! Session Manager sessions that ssmcp owns from start to end: StartSession, the data
//! channel, and an end that always happens — the in-band TerminateSession flag (needs no
//! IAM) and then the TerminateSession API, whose denial is reported, not fatal.

pub(crate) mod channel;
pub(crate) mod channel_core;
pub(crate) mod command;
pub(crate) mod encryption;
pub(crate) mod handshake;
pub(crate) mod port;
pub(crate) mod reliable;

use crate::aws::error as aws_error;
use crate::error::{Error, Result};
use channel::{Channel, ChannelConfig, Inbound, Resumer};
use ssm_proto::{Flag, PayloadType};
use std::sync::Arc;
use std::time::Duration;

/// Work that must finish before the process exits even when the future that began it
/// was cancelled (^C while a session starts, an early return): ending sessions. Tasks
/// spawned on a tokio runtime die with it, so `main` waits for these, bounded, after the
/// command has returned; every session of a command is registered with the same one.
#[derive(Clone, Debug, Default)]
pub struct Cleanup(tokio_util::task::TaskTracker);

impl Cleanup {
    pub fn spawn<F>(&self, work: F)
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            self.0.spawn_on(work, &rt);
        }
    }

    /// Wait up to `bound` for everything spawned; true when it all finished.
    pub async fn finish(&self, bound: Duration) -> bool {
        self.0.close();
        tokio::time::timeout(bound, self.0.wait()).await.is_ok()
    }
}

/// What every session of one run reports to: the session ends `main` waits for before
/// exiting, and the wire counters the summaries show. `main` makes one and hands it to
/// the command.
#[derive(Clone, Debug, Default)]
pub struct Tracking {
    pub cleanup: Cleanup,
    pub wire: reliable::WireStats,
}

#[derive(Debug, Clone)]
pub(crate) struct SessionSpec {
    pub target: String,
    pub document: String,
    pub parameters: Vec<(String, String)>,
}

/// A started session. Call [`Session::end`]; if it is dropped without that, the guard
/// still asks the service to terminate it.
pub(crate) struct Session {
    pub id: String,
    ssm: aws_sdk_ssm::Client,
    ended: bool,
    cleanup: Cleanup,
}

/// How the end went; `warning` is for the user when the API call was refused.
#[derive(Debug, Default)]
pub(crate) struct EndOutcome {
    pub warning: Option<String>,
}

pub(crate) async fn start(
    ssm: &aws_sdk_ssm::Client,
    spec: &SessionSpec,
    config: ChannelConfig,
) -> Result<(Session, Channel)> {
    let mut req = ssm
        .start_session()
        .target(&spec.target)
        .document_name(&spec.document)
        .reason(format!("ssmcp {}", env!("CARGO_PKG_VERSION")));
    for (k, v) in &spec.parameters {
        req = req.parameters(k, vec![v.clone()]);
    }
    // StartSession runs as its own task: if this future is cancelled while the call is
    // in flight, the session it creates must still be ended, and only the task ever
    // learns its id.
    let (answer, started) = tokio::sync::oneshot::channel();
    let ender = ssm.clone();
    config.cleanup.spawn(async move {
        if let Err(Ok(orphan)) = answer.send(req.send().await) {
            if let Some(id) = orphan.session_id() {
                tracing::debug!(session = %id, "ending a session whose start was cancelled");
                let _ = ender.terminate_session().session_id(id).send().await;
            }
        }
    });
    let out = started
        .await
        .map_err(|_| Error::protocol("the StartSession call was abandoned"))?
        .map_err(|e| aws_error::from_sdk("StartSession", e))?;
    let (Some(id), Some(token), Some(url)) =
        (out.session_id(), out.token_value(), out.stream_url())
    else {
        return Err(Error::protocol(
            "StartSession returned no session id, token or stream URL",
        ));
    };
    let session = Session {
        id: id.to_string(),
        ssm: ssm.clone(),
        ended: false,
        cleanup: config.cleanup.clone(),
    };
    let resumer = resumer(ssm.clone(), id.to_string());
    let kms = config.kms.clone();
    let mut channel = channel::open(url.to_string(), token.to_string(), resumer, config).await?;
    channel.keys = kms.map(|kms| encryption::KeyRequest {
        kms,
        session_id: id.to_string(),
        target: spec.target.clone(),
    });
    tracing::debug!(session = %session.id, "session started");
    Ok((session, channel))
}

fn resumer(ssm: aws_sdk_ssm::Client, id: String) -> Resumer {
    Arc::new(move || {
        let ssm = ssm.clone();
        let id = id.clone();
        Box::pin(async move {
            let out = ssm
                .resume_session()
                .session_id(&id)
                .send()
                .await
                .map_err(|e| aws_error::from_sdk("ResumeSession", e))?;
            Ok(out.token_value().map(str::to_string))
        })
    })
}

/// How long the in-band end waits for the service's channel_closed.
pub(crate) const FLAG_WAIT: Duration = Duration::from_secs(3);
/// The same wait after ^C: a signal must stop ssmcp within a second, and the API call
/// that follows ends the session whatever the other side is doing.
pub(crate) const HURRIED_WAIT: Duration = Duration::from_millis(400);

/// How long to wait for channel_closed: briefly when the user is waiting on a ^C.
pub(crate) fn end_wait(hurry: bool) -> Duration {
    if hurry {
        HURRIED_WAIT
    } else {
        FLAG_WAIT
    }
}

impl Session {
    /// End the session. With a `channel`, send the TerminateSession flag (port sessions
    /// honour it) and wait briefly for channel_closed; then call the API either way.
    pub(crate) async fn end(self, channel: Option<&mut Channel>) -> EndOutcome {
        self.end_within(channel, FLAG_WAIT).await
    }

    /// End a session whose in-band end was attempted elsewhere (a port session's own
    /// flag): `lost` says its connection was known to be gone, so only the API can end it.
    pub(crate) async fn end_after(self, lost: bool) -> EndOutcome {
        self.finish(lost).await
    }

    /// `end`, waiting at most `wait` for channel_closed.
    pub(crate) async fn end_within(
        self,
        channel: Option<&mut Channel>,
        wait: Duration,
    ) -> EndOutcome {
        // Whether the in-band end can be claimed: a channel that is known to be lost
        // (its websocket gone and not resumed) carried no flag.
        let mut lost = false;
        if let Some(ch) = channel {
            if ch
                .sender
                .send(PayloadType::Flag, Flag::TerminateSession.encode())
                .await
                .is_ok()
            {
                let _ = tokio::time::timeout(wait, async {
                    while let Some(m) = ch.recv().await {
                        match m {
                            Inbound::Closed(_) => break,
                            Inbound::Failed(_) => {
                                lost = true;
                                break;
                            }
                            _ => {}
                        }
                    }
                })
                .await;
            } else {
                lost = true;
            }
        }
        self.finish(lost).await
    }

    /// The TerminateSession API call, and an honest warning when it fails.
    async fn finish(mut self, lost: bool) -> EndOutcome {
        self.ended = true;
        match self
            .ssm
            .terminate_session()
            .session_id(&self.id)
            .send()
            .await
        {
            Ok(_) => EndOutcome::default(),
            Err(e) => {
                let err = aws_error::from_sdk("TerminateSession", e);
                tracing::debug!("TerminateSession failed: {err}");
                let warning = if lost {
                    format!(
                        "session {} may stay open until the service's idle timeout (20 minutes by default): its connection was lost, so it could not be ended in-band, and the TerminateSession API call failed: {}",
                        self.id, err
                    )
                } else {
                    format!(
                        "session {} was ended in-band, but the TerminateSession API call failed: {}",
                        self.id, err
                    )
                };
                EndOutcome {
                    warning: Some(warning),
                }
            }
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        if self.ended {
            return;
        }
        // Last resort on an early return, a cancelled future or a panic: ask the
        // service to end it, as work main waits for before the process exits.
        let ssm = self.ssm.clone();
        let id = self.id.clone();
        self.cleanup.spawn(async move {
            let _ = ssm.terminate_session().session_id(id).send().await;
        });
    }
}
