//! Port sessions (§7): each forwarded connection is a tokio `DuplexStream` the caller
//! reads and writes. Mux mode runs an smux v1 client over the channel's ordered Output
//! bytes; basic mode carries one connection at a time and ends it with DisconnectToPort.
//! The mode is chosen exactly as the official plugin chooses it.

use super::channel::{Channel, ChannelSender, Inbound};
use super::handshake::HandshakeInfo;
use crate::error::{Error, Result};
use ssm_proto::smux::{Cmd, Frame, FrameDecoder, FIRST_CLIENT_STREAM_ID};
use ssm_proto::version::plugin_greater;
use ssm_proto::{Flag, PayloadType};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio::sync::{mpsc, watch};

/// Buffer of each side of a connection's in-process pipe.
const PIPE_BYTES: usize = 64 * 1024;
/// Agent data frames queued per stream before the session stops reading the channel.
const STREAM_QUEUE: usize = 32;
/// smux data frames we write: under MaxFrameSize (32 KiB).
const WRITE_FRAME: usize = 16 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    Mux,
    Basic,
}

/// §7.2: mux iff `type` is LocalPortForwarding and the agent is newer than 3.0.196.0
/// (our reported client version, 1.2.677.0, satisfies the agent's ≥ 1.1.70).
pub(crate) fn choose_mode(info: &HandshakeInfo) -> Mode {
    let local = info.properties["type"] == "LocalPortForwarding";
    if local && plugin_greater(&info.agent_version, "3.0.196.0") {
        Mode::Mux
    } else {
        Mode::Basic
    }
}

/// Start a port session (`spec` names a port forwarding document) and complete its
/// handshake; on failure the session is ended before the error is returned.
pub(crate) async fn open(
    ssm: &aws_sdk_ssm::Client,
    spec: &super::SessionSpec,
    config: super::channel::ChannelConfig,
) -> Result<(super::Session, PortSession, HandshakeInfo)> {
    let (session, mut channel) = super::start(ssm, spec, config).await?;
    let info = match super::handshake::perform(&mut channel).await {
        Ok(super::handshake::Start::Handshaken(info)) => info,
        Ok(super::handshake::Start::NoHandshake(_)) => {
            let _ = session.end(Some(&mut channel)).await;
            return Err(Error::protocol(
                "the agent did not handshake a port session",
            ));
        }
        Err(e) => {
            let _ = session.end(Some(&mut channel)).await;
            return Err(e);
        }
    };
    let ports = PortSession::start(channel, &info);
    Ok((session, ports, info))
}

/// Why the session is over, once it is.
#[derive(Debug, Clone)]
pub(crate) enum Ended {
    Open,
    Closed(String),
    Failed(Error),
}

pub(crate) struct PortSession {
    pub mode: Mode,
    sender: ChannelSender,
    ended: watch::Receiver<Ended>,
    /// How many times the agent said it could not connect a stream (mux mode).
    connect_errors: watch::Receiver<u64>,
    inner: Inner,
}

enum Inner {
    Mux(Mux),
    Basic(Basic),
}

impl PortSession {
    pub(crate) fn start(channel: Channel, info: &HandshakeInfo) -> PortSession {
        let mode = choose_mode(info);
        let (ended_tx, ended) = watch::channel(Ended::Open);
        let (refused_tx, connect_errors) = watch::channel(0);
        let sender = channel.sender.clone();
        let inner = match mode {
            Mode::Mux => Inner::Mux(Mux::start(
                channel,
                ended_tx,
                refused_tx,
                keepalive_needed(info),
            )),
            Mode::Basic => Inner::Basic(Basic::start(channel, ended_tx)),
        };
        PortSession {
            mode,
            sender,
            ended,
            connect_errors,
            inner,
        }
    }

    /// Changes each time the agent reports that it could not connect a stream to the
    /// destination port (that stream is then closed); the caller decides what to say.
    pub(crate) fn connect_errors(&self) -> watch::Receiver<u64> {
        self.connect_errors.clone()
    }

    /// A new connection to the remote port.
    pub(crate) async fn open_stream(&self) -> Result<DuplexStream> {
        if let Ended::Closed(_) | Ended::Failed(_) = &*self.ended.borrow() {
            return Err(self.end_error());
        }
        match &self.inner {
            Inner::Mux(m) => m.open_stream().await,
            Inner::Basic(b) => b.open_stream().await,
        }
    }

    /// Resolves when the session is over.
    pub(crate) async fn closed(&self) -> Ended {
        let mut rx = self.ended.clone();
        loop {
            let now = rx.borrow().clone();
            if !matches!(now, Ended::Open) {
                return now;
            }
            if rx.changed().await.is_err() {
                return Ended::Closed(String::new());
            }
        }
    }

    fn end_error(&self) -> Error {
        match &*self.ended.borrow() {
            Ended::Failed(e) => e.clone(),
            Ended::Closed(o) if !o.is_empty() => {
                Error::transfer(format!("the session was closed: {o}"))
            }
            _ => Error::transfer("the session was closed"),
        }
    }

    /// Send the in-band TerminateSession flag (no IAM needed) and wait a little for
    /// the service to confirm with channel_closed; the flag may need retransmitting.
    /// Send the TerminateSession flag and wait briefly for the end. Returns whether the
    /// connection is known to be lost (then no flag reached the agent).
    pub(crate) async fn terminate(&self) -> bool {
        if self
            .sender
            .send(PayloadType::Flag, Flag::TerminateSession.encode())
            .await
            .is_ok()
        {
            let _ = tokio::time::timeout(super::FLAG_WAIT, self.closed()).await;
        }
        matches!(*self.ended.borrow(), Ended::Failed(_))
    }
}

/// The plugin keeps smux keepalive on for agents up to 3.1.1511.0 (§7.4); NOPs are
/// always legal, so we send them then.
fn keepalive_needed(info: &HandshakeInfo) -> bool {
    !plugin_greater(&info.agent_version, "3.1.1511.0")
}

fn report_end(ended: &watch::Sender<Ended>, m: Option<Inbound>) {
    let state = match m {
        Some(Inbound::Closed(o)) => Ended::Closed(o),
        Some(Inbound::Failed(e)) => Ended::Failed(e),
        _ => Ended::Closed(String::new()),
    };
    let _ = ended.send(state);
}

// ------------------------------------------------------------------- mux

struct StreamSlot {
    to_user: mpsc::Sender<Vec<u8>>,
    got_data: bool,
}

type Streams = Arc<Mutex<HashMap<u32, StreamSlot>>>;

struct Mux {
    frames: mpsc::Sender<Frame>,
    streams: Streams,
    next_id: Mutex<u32>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Mux {
    fn start(
        channel: Channel,
        ended: watch::Sender<Ended>,
        refused: watch::Sender<u64>,
        keepalive: bool,
    ) -> Mux {
        let (frames, frames_rx) = mpsc::channel(64);
        let streams: Streams = Arc::new(Mutex::new(HashMap::new()));
        tokio::spawn(uplink(channel.sender.clone(), frames_rx));
        tokio::spawn(downlink(channel.inbound, streams.clone(), ended, refused));
        if keepalive {
            let f = frames.clone();
            tokio::spawn(async move {
                let mut t = tokio::time::interval(std::time::Duration::from_secs(10));
                t.tick().await;
                loop {
                    t.tick().await;
                    if f.send(Frame::new(Cmd::Nop, 0, vec![])).await.is_err() {
                        return;
                    }
                }
            });
        }
        Mux {
            frames,
            streams,
            next_id: Mutex::new(FIRST_CLIENT_STREAM_ID),
        }
    }

    async fn open_stream(&self) -> Result<DuplexStream> {
        let id = {
            let mut n = lock(&self.next_id);
            let id = *n;
            *n += 2;
            id
        };
        let (user, inner) = tokio::io::duplex(PIPE_BYTES);
        let (to_user, from_agent) = mpsc::channel(STREAM_QUEUE);
        lock(&self.streams).insert(
            id,
            StreamSlot {
                to_user,
                got_data: false,
            },
        );
        self.frames
            .send(Frame::new(Cmd::Syn, id, vec![]))
            .await
            .map_err(|_| Error::transfer("the port session is closed"))?;
        tokio::spawn(stream_pump(
            id,
            inner,
            from_agent,
            self.frames.clone(),
            self.streams.clone(),
        ));
        Ok(user)
    }
}

/// Frames from every stream into the byte stream, cut into Output messages. Whatever is
/// ready goes out together; nothing waits for a full message.
async fn uplink(sender: ChannelSender, mut rx: mpsc::Receiver<Frame>) {
    let max = sender.max_payload();
    let mut buf = Vec::with_capacity(max * 4);
    while let Some(f) = rx.recv().await {
        push_frame(&mut buf, &f);
        while buf.len() < max * 32 {
            match rx.try_recv() {
                Ok(f) => push_frame(&mut buf, &f),
                Err(_) => break,
            }
        }
        if sender.send_output(&buf).await.is_err() {
            return;
        }
        buf.clear();
    }
}

fn push_frame(buf: &mut Vec<u8>, f: &Frame) {
    if let Ok(h) = Frame::header(f.cmd, f.stream_id, f.data.len()) {
        buf.extend_from_slice(&h);
        buf.extend_from_slice(&f.data);
    }
}

async fn downlink(
    mut inbound: mpsc::Receiver<Inbound>,
    streams: Streams,
    ended: watch::Sender<Ended>,
    refused: watch::Sender<u64>,
) {
    let mut dec = FrameDecoder::new();
    let mut end = None;
    while let Some(m) = inbound.recv().await {
        match m {
            Inbound::Data(PayloadType::Output, bytes) => {
                dec.push(&bytes);
                loop {
                    match dec.next_frame() {
                        Ok(Some(f)) => dispatch(&streams, f).await,
                        Ok(None) => break,
                        Err(e) => {
                            end = Some(Inbound::Failed(Error::protocol(format!(
                                "the agent's smux stream is corrupt: {e}"
                            ))));
                            break;
                        }
                    }
                }
                if end.is_some() {
                    break;
                }
            }
            Inbound::Data(PayloadType::Flag, bytes) => {
                if Flag::decode(&bytes) == Some(Flag::ConnectToPortError) {
                    // The flag names no stream (§7.4): blame the oldest that has had no data.
                    let mut s = lock(&streams);
                    let victim = s.iter().filter(|(_, v)| !v.got_data).map(|(k, _)| *k).min();
                    if let Some(id) = victim {
                        s.remove(&id);
                    }
                    refused.send_modify(|n| *n += 1);
                }
            }
            Inbound::Data(_, _) => {}
            other => {
                end = Some(other);
                break;
            }
        }
    }
    lock(&streams).clear();
    report_end(&ended, end);
}

async fn dispatch(streams: &Streams, f: Frame) {
    match f.cmd {
        Cmd::Psh => {
            let tx = {
                let mut s = lock(streams);
                s.get_mut(&f.stream_id).map(|slot| {
                    slot.got_data = true;
                    slot.to_user.clone()
                })
            };
            if let Some(tx) = tx {
                let _ = tx.send(f.data).await;
            }
        }
        // Dropping the sender makes the pump end the user's side.
        Cmd::Fin => {
            lock(streams).remove(&f.stream_id);
        }
        Cmd::Syn | Cmd::Nop | Cmd::Upd => {}
    }
}

async fn stream_pump(
    id: u32,
    inner: DuplexStream,
    from_agent: mpsc::Receiver<Vec<u8>>,
    frames: mpsc::Sender<Frame>,
    streams: Streams,
) {
    let up = frames.clone();
    pipe(inner, from_agent, WRITE_FRAME, move |data| {
        let up = up.clone();
        async move { up.send(Frame::new(Cmd::Psh, id, data)).await.is_ok() }
    })
    .await;
    // Either side ending ends the stream: smux has no usable half-close (§7.4).
    let _ = frames.send(Frame::new(Cmd::Fin, id, vec![])).await;
    lock(&streams).remove(&id);
}

/// Carry one connection until either direction ends. The two directions run in separate
/// tasks: what the agent sends must reach the user even while the user's own writes wait
/// for window space (which needs acks, which need the channel to keep delivering).
async fn pipe<F, Fut>(
    inner: DuplexStream,
    mut from_agent: mpsc::Receiver<Vec<u8>>,
    chunk: usize,
    mut send_up: F,
) where
    F: FnMut(Vec<u8>) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = bool> + Send,
{
    let (mut rd, mut wr) = tokio::io::split(inner);
    let mut up = tokio::spawn(async move {
        let mut buf = vec![0u8; chunk];
        while let Ok(n) = rd.read(&mut buf).await {
            if n == 0 || !send_up(buf[..n].to_vec()).await {
                return;
            }
        }
    });
    loop {
        tokio::select! {
            data = from_agent.recv() => match data {
                Some(d) => {
                    if wr.write_all(&d).await.is_err() {
                        break;
                    }
                }
                // The agent closed (FIN, disconnect or session end).
                None => break,
            },
            _ = &mut up => break,
        }
    }
    up.abort();
    let _ = wr.shutdown().await;
}

// ------------------------------------------------------------------- basic

struct Basic {
    sender: ChannelSender,
    current: Arc<Mutex<Option<mpsc::Sender<Vec<u8>>>>>,
    attached: Arc<tokio::sync::Notify>,
    busy: Arc<tokio::sync::Mutex<()>>,
}

impl Basic {
    fn start(channel: Channel, ended: watch::Sender<Ended>) -> Basic {
        let current: Arc<Mutex<Option<mpsc::Sender<Vec<u8>>>>> = Arc::new(Mutex::new(None));
        let attached = Arc::new(tokio::sync::Notify::new());
        let (cur, att) = (current.clone(), attached.clone());
        let mut inbound = channel.inbound;
        tokio::spawn(async move {
            // The agent dials the destination at session start, so a server that speaks
            // first (SSH, SMTP, MySQL) sends before any local connection exists. The
            // plugin leaves such data unacked for the agent to resend; our channel has
            // acked it already, so hold it — by not reading further — until the first
            // connection. After a connection ends, leftovers belong to the old
            // destination connection and are dropped, as the plugin does.
            let mut ever_connected = false;
            let end = loop {
                let Some(m) = inbound.recv().await else {
                    break None;
                };
                match m {
                    Inbound::Data(PayloadType::Output, bytes) => {
                        let tx = loop {
                            let notified = att.notified();
                            if let Some(tx) = lock(&cur).clone() {
                                break Some(tx);
                            }
                            if ever_connected {
                                break None;
                            }
                            notified.await;
                        };
                        match tx {
                            Some(tx) => {
                                ever_connected = true;
                                let _ = tx.send(bytes).await;
                            }
                            None => tracing::debug!(
                                "dropping {} bytes after the connection closed",
                                bytes.len()
                            ),
                        }
                    }
                    Inbound::Data(_, _) => {}
                    other => break Some(other),
                }
            };
            *lock(&cur) = None;
            report_end(&ended, end);
        });
        Basic {
            sender: channel.sender,
            current,
            attached,
            busy: Arc::new(tokio::sync::Mutex::new(())),
        }
    }

    /// One connection at a time: a second caller waits until the first is done.
    async fn open_stream(&self) -> Result<DuplexStream> {
        let guard = self.busy.clone().lock_owned().await;
        let (user, inner) = tokio::io::duplex(PIPE_BYTES);
        let (tx, rx) = mpsc::channel::<Vec<u8>>(STREAM_QUEUE);
        *lock(&self.current) = Some(tx);
        self.attached.notify_waiters();
        let sender = self.sender.clone();
        let current = self.current.clone();
        tokio::spawn(async move {
            let _guard = guard;
            let up = sender.clone();
            pipe(inner, rx, sender.max_payload(), move |data| {
                let up = up.clone();
                async move { up.send(PayloadType::Output, data).await.is_ok() }
            })
            .await;
            *lock(&current) = None;
            let _ = sender
                .send(PayloadType::Flag, Flag::DisconnectToPort.encode())
                .await;
        });
        Ok(user)
    }
}
