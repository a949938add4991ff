//! The client's reliable data channel: one task that owns the websocket and knows
//! nothing about files or ports. The protocol's state machine is `channel_core::Core` (no I/O:
//! numbering, acks, reordering, pause, what to resend and when); this task only moves
//! frames between it and the socket, hands delivered data to the consumer, sleeps until
//! the core's next deadline (no fixed tick), and after a lost connection calls ResumeSession and dials again
//! (docs/protocol.md, "Reliability" and "Resuming").
//!
//! Memory is bounded by configuration: the unacknowledged window (adaptive, at most
//! `window_bytes`; back-pressure, never dropping), the out-of-order buffer, and the
//! delivery queue.

use super::channel_core::{Core, Delivery, Transmit};
use super::encryption::{Encryption, KeyRequest};
use super::reliable::WireStats;
use crate::error::{Error, Kind, Result};
use futures_util::{SinkExt, StreamExt};
use ssm_proto::{OpenDataChannelInput, PayloadType};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message as Ws;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use uuid::Uuid;

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;
type SocketReader = futures_util::stream::SplitStream<Socket>;
type FrameQueue = mpsc::Sender<Ws>;

/// Asks the service for a fresh token after a lost connection; `Ok(None)` means the
/// session is over (ResumeSession returned no token).
pub(crate) type Resumer =
    Arc<dyn Fn() -> Pin<Box<dyn Future<Output = Result<Option<String>>> + Send>> + Send + Sync>;

#[derive(Debug, Clone)]
pub(crate) struct ChannelConfig {
    /// The most bytes sent but not yet acknowledged before senders wait; the window
    /// adapts below it to what the path carries (`reliable`).
    pub window_bytes: usize,
    /// Largest Output payload per message (the official sides use 1024, §5.6).
    pub max_payload: usize,
    /// How long to keep trying to reconnect after the websocket is lost.
    pub resume_timeout: Duration,
    /// TLS settings for wss:// (None: the platform's roots).
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// Where session ends that outlive a cancelled caller run (see `session::Cleanup`).
    pub cleanup: super::Cleanup,
    /// Messages sent, retransmitted and duplicate acks, over all of a command's sessions.
    pub wire: WireStats,
    /// For sessions whose agent demands KMS encryption (None: such sessions are refused).
    pub kms: Option<aws_sdk_kms::Client>,
}

impl Default for ChannelConfig {
    fn default() -> Self {
        ChannelConfig {
            window_bytes: 4 << 20,
            max_payload: ssm_proto::STREAM_DATA_PAYLOAD_SIZE,
            resume_timeout: Duration::from_secs(60),
            tls: None,
            cleanup: super::Cleanup::default(),
            wire: WireStats::default(),
            kms: None,
        }
    }
}

/// What the channel hands up, in the agent's order.
#[derive(Debug)]
pub(crate) enum Inbound {
    Data(PayloadType, Vec<u8>),
    /// The service closed the channel (`channel_closed`), with its reason text.
    Closed(String),
    /// The channel failed for good.
    Failed(Error),
}

/// The sending side, cheap to clone.
#[derive(Clone)]
pub(crate) struct ChannelSender {
    tx: mpsc::Sender<(PayloadType, Vec<u8>)>,
    max_payload: usize,
    encryption: Encryption,
}

impl ChannelSender {
    /// Queue one message (sealed if the session is KMS-encrypted); waits while the
    /// window is full.
    pub(crate) async fn send(&self, payload_type: PayloadType, payload: Vec<u8>) -> Result<()> {
        let payload = self.encryption.outgoing(payload_type, payload);
        self.tx
            .send((payload_type, payload))
            .await
            .map_err(|_| Error::transfer("the session's data channel is closed"))
    }

    /// Queue bytes as Output messages of at most `max_payload` bytes each.
    pub(crate) async fn send_output(&self, bytes: &[u8]) -> Result<()> {
        for chunk in bytes.chunks(self.max_payload) {
            self.send(PayloadType::Output, chunk.to_vec()).await?;
        }
        Ok(())
    }

    pub(crate) fn max_payload(&self) -> usize {
        self.max_payload
    }
}

pub(crate) struct Channel {
    pub sender: ChannelSender,
    /// What the agent sent, as it arrived: read it through [`Channel::recv`], which
    /// opens sealed payloads (port sessions, never encrypted, may take it whole).
    pub inbound: mpsc::Receiver<Inbound>,
    /// The session's KMS keys once the handshake set them.
    pub encryption: Encryption,
    /// How to ask KMS for this session's data key, if the agent wants one.
    pub keys: Option<KeyRequest>,
    /// A payload failed its integrity check: nothing more from this channel is used.
    tampered: bool,
}

impl Channel {
    /// The next message from the agent, opened if it travelled sealed. A payload that
    /// fails its integrity check ends the channel for the caller.
    pub(crate) async fn recv(&mut self) -> Option<Inbound> {
        if self.tampered {
            return None;
        }
        let m = self.inbound.recv().await?;
        Some(match m {
            Inbound::Data(pt, payload) => match self.encryption.incoming(pt, payload) {
                Ok(p) => Inbound::Data(pt, p),
                Err(e) => {
                    self.tampered = true;
                    self.inbound.close();
                    Inbound::Failed(e)
                }
            },
            other => other,
        })
    }
}

/// Messages queued from senders before the task takes them.
const SEND_QUEUE: usize = 64;
/// Frames waiting for the socket writer. The task never awaits a socket write (a
/// blocked write must not stop it reading, or both ends can wait on each other), so
/// this queue is where back-pressure from the socket shows up.
const WRITE_QUEUE: usize = 1024;
/// Keep this many queue slots for acks and retransmissions.
const WRITE_RESERVE: usize = 256;
/// In-order messages waiting for the consumer.
const DELIVERY_QUEUE: usize = 256;
/// In-order messages acknowledged but not yet taken by the consumer. While there is
/// room the task keeps reading the socket — acks must flow even when the consumer is
/// slow — and beyond it the task stops reading, like a full TCP receive buffer.
const READY_CAPACITY: usize = 4096;
const PING_INTERVAL: Duration = Duration::from_secs(300);

pub(crate) async fn connect(url: &str, tls: Option<Arc<rustls::ClientConfig>>) -> Result<Socket> {
    let connector = tls.map(tokio_tungstenite::Connector::Rustls);
    // `true`: TCP_NODELAY — every message is small and latency-bound.
    let connecting = tokio_tungstenite::connect_async_tls_with_config(url, None, true, connector);
    let (ws, _) = connecting.await.map_err(|e| {
        let tls = matches!(e, tokio_tungstenite::tungstenite::Error::Tls(_))
            || e.to_string().contains("certificate");
        let hint = if tls {
            "the data-channel endpoint's TLS certificate was not trusted; if a proxy or firewall inspects TLS, add its CA certificate to the system trust store"
        } else {
            "check network access to ssmmessages.<region>.amazonaws.com (port 443) and any proxy settings"
        };
        Error::new(
            Kind::Unavailable,
            format!("cannot open the Session Manager data channel: {}", redact_ws_error(&e)),
        )
        .hint(hint)
    })?;
    Ok(ws)
}

/// Open the websocket at `url`, send OpenDataChannel with `token`, and start the task.
pub(crate) async fn open(
    url: String,
    token: String,
    resumer: Resumer,
    config: ChannelConfig,
) -> Result<Channel> {
    let client_id = Uuid::new_v4().to_string();
    let ws = open_socket(&url, &token, &client_id, config.tls.clone()).await?;
    let (frames, reader, written) = spawn_writer(ws);
    let (tx, rx) = mpsc::channel(SEND_QUEUE);
    let (in_tx, in_rx) = mpsc::channel(DELIVERY_QUEUE);
    let max_payload = config.max_payload;
    let core = Core::new(
        config.window_bytes,
        config.wire.clone(),
        rand::random(),
        std::time::Instant::now(),
        now_millis(),
    );
    let task = Task {
        url,
        client_id,
        resumer,
        config,
        frames,
        frames_queued: 0,
        written,
        reader,
        core,
        rx,
        in_tx,
        ready: std::collections::VecDeque::new(),
        last_ping: Instant::now(),
    };
    tokio::spawn(task.run());
    let encryption = Encryption::default();
    Ok(Channel {
        sender: ChannelSender {
            tx,
            max_payload,
            encryption: encryption.clone(),
        },
        inbound: in_rx,
        encryption,
        keys: None,
        tampered: false,
    })
}

/// Give the socket's sending half to its own task; return its queue, the reading half,
/// and how many frames it has written so far (published after each flush, so that a
/// message is timed from when it left, not from when it was queued).
fn spawn_writer(ws: Socket) -> (FrameQueue, SocketReader, watch::Receiver<u64>) {
    let (mut sink, reader) = ws.split();
    let (tx, mut rx) = mpsc::channel::<Ws>(WRITE_QUEUE);
    let (written_tx, written) = watch::channel(0u64);
    tokio::spawn(async move {
        let mut count = 0u64;
        while let Some(first) = rx.recv().await {
            if sink.feed(first).await.is_err() {
                return;
            }
            count += 1;
            // Batch whatever else is ready into one flush.
            while let Ok(more) = rx.try_recv() {
                if sink.feed(more).await.is_err() {
                    return;
                }
                count += 1;
            }
            if sink.flush().await.is_err() {
                return;
            }
            written_tx.send_replace(count);
        }
        let _ = sink.close().await;
    });
    (tx, reader, written)
}

async fn open_socket(
    url: &str,
    token: &str,
    client_id: &str,
    tls: Option<Arc<rustls::ClientConfig>>,
) -> Result<Socket> {
    let mut ws = connect(url, tls).await?;
    let open = OpenDataChannelInput {
        message_schema_version: "1.0".into(),
        request_id: Uuid::new_v4().to_string(),
        token_value: token.to_string(),
        client_id: client_id.to_string(),
        client_version: ssm_proto::CLIENT_VERSION.into(),
    };
    ws.send(Ws::Text(open.to_json().into()))
        .await
        .map_err(|e| {
            Error::transfer(format!(
                "cannot open the data channel: {}",
                redact_ws_error(&e)
            ))
        })?;
    // The plugin pings right after opening (§2.4).
    let _ = ws.send(Ws::Ping(b"keepalive".to_vec().into())).await;
    Ok(ws)
}

/// Websocket errors can quote the URL, whose query may carry credentials in real AWS;
/// keep only the error's kind.
fn redact_ws_error(e: &tokio_tungstenite::tungstenite::Error) -> String {
    use tokio_tungstenite::tungstenite::Error as E;
    match e {
        E::Http(r) => format!("HTTP {}", r.status()),
        E::Io(io) => io.to_string(),
        E::Tls(t) => format!("TLS: {t}"),
        other => {
            let s = other.to_string();
            s.split('?').next().unwrap_or_default().to_string()
        }
    }
}

struct Task {
    url: String,
    client_id: String,
    resumer: Resumer,
    config: ChannelConfig,
    frames: FrameQueue,
    /// Frames handed to the current writer, acks and pings included.
    frames_queued: u64,
    /// Frames the current writer has written (see `spawn_writer`).
    written: watch::Receiver<u64>,
    reader: SocketReader,
    core: Core,
    rx: mpsc::Receiver<(PayloadType, Vec<u8>)>,
    in_tx: mpsc::Sender<Inbound>,
    ready: std::collections::VecDeque<Inbound>,
    last_ping: Instant,
}

enum Step {
    Continue,
    /// The websocket is gone: reconnect.
    Lost,
    /// The channel is finished (closed by the service or nobody listens any more).
    Done,
}

impl Task {
    async fn run(mut self) {
        let mut senders_open = true;
        // One timer for the task, moved only when the wake-up instant changes: most loop
        // turns (a message sent, an ack read) leave the oldest copy on the wire as it was,
        // and registering a new timer for each would cost on every message.
        let timer = tokio::time::sleep_until(self.last_ping + PING_INTERVAL);
        tokio::pin!(timer);
        loop {
            // Sleep until the core next has work on time (an RTO expiry, or a copy that
            // could not be queued once the writer moves) or the keepalive is due.
            let ping_at = self.last_ping + PING_INTERVAL;
            let wake = self
                .core
                .poll_timeout()
                .map_or(ping_at, |d| Instant::from_std(d).min(ping_at));
            if timer.is_elapsed() || timer.deadline() != wake {
                timer.as_mut().reset(wake);
            }
            let can_send =
                senders_open && self.core.can_send() && self.frames.capacity() > WRITE_RESERVE;
            // A clone, so that a delivery permit does not borrow the whole task.
            let in_tx = self.in_tx.clone();
            let step = tokio::select! {
                cmd = self.rx.recv(), if can_send => match cmd {
                    Some(first) => self.send_batch(first).await,
                    None => { senders_open = false; Step::Continue }
                },
                permit = in_tx.reserve(), if !self.ready.is_empty() => match permit {
                    Ok(p) => {
                        if let Some(m) = self.ready.pop_front() {
                            p.send(m);
                        }
                        Step::Continue
                    }
                    Err(_) => Step::Done, // nobody listens any more
                },
                frame = self.reader.next(), if self.ready.len() < READY_CAPACITY => match frame {
                    Some(Ok(Ws::Binary(b))) => self.on_frame(&b).await,
                    Some(Ok(Ws::Text(t))) => self.on_frame(t.as_bytes()).await,
                    Some(Ok(Ws::Close(_))) | None | Some(Err(_)) => Step::Lost,
                    Some(Ok(_)) => Step::Continue,
                },
                Ok(()) = self.written.changed() => {
                    let n = *self.written.borrow_and_update();
                    self.core.written(n, std::time::Instant::now());
                    Step::Continue
                }
                _ = &mut timer => self.on_timeout().await,
            };
            match step {
                Step::Continue => {}
                Step::Done => return,
                Step::Lost => {
                    if let Err(e) = self.reconnect().await {
                        let _ = self.in_tx.send(Inbound::Failed(e)).await;
                        return;
                    }
                }
            }
        }
    }

    /// Frame the message and as many more as are ready and fit the window.
    async fn send_batch(&mut self, first: (PayloadType, Vec<u8>)) -> Step {
        let mut next = Some(first);
        while let Some((pt, payload)) = next.take() {
            self.core.send(pt, payload, std::time::Instant::now());
            let step = self.transmit();
            if !matches!(step, Step::Continue) {
                return step;
            }
            if self.core.can_send() && self.frames.capacity() > WRITE_RESERVE {
                next = self.rx.try_recv().ok();
            }
        }
        Step::Continue
    }

    /// Hand what the core wants written to the writer, without waiting. A full queue
    /// drops a frame: a data message is then due when the writer next reports progress,
    /// an ack is repeated when the agent resends.
    fn transmit(&mut self) -> Step {
        while let Some(t) = self.core.poll_transmit() {
            let (frame, seq) = match t {
                Transmit::Data { seq, frame } => (frame, Some(seq)),
                Transmit::Ack(frame) => (frame, None),
            };
            let step = self.push(Ws::Binary(frame), seq);
            if !matches!(step, Step::Continue) {
                return step;
            }
        }
        Step::Continue
    }

    fn push(&mut self, frame: Ws, seq: Option<i64>) -> Step {
        match self.frames.try_send(frame) {
            Ok(()) => {
                self.frames_queued += 1;
                if let Some(seq) = seq {
                    self.core.queued(self.frames_queued, seq);
                }
                Step::Continue
            }
            Err(mpsc::error::TrySendError::Full(_)) => {
                if let Some(seq) = seq {
                    self.core.not_queued(seq);
                }
                Step::Continue
            }
            Err(mpsc::error::TrySendError::Closed(_)) => Step::Lost,
        }
    }

    async fn on_timeout(&mut self) -> Step {
        if self.last_ping.elapsed() >= PING_INTERVAL {
            self.last_ping = Instant::now();
            let step = self.push(Ws::Ping(b"keepalive".to_vec().into()), None);
            if !matches!(step, Step::Continue) {
                return step;
            }
        }
        self.core.handle_timeout(std::time::Instant::now());
        self.transmit()
    }

    async fn on_frame(&mut self, frame: &[u8]) -> Step {
        self.core.on_frame(frame, std::time::Instant::now());
        let step = self.transmit();
        while let Some(d) = self.core.poll_deliver() {
            match d {
                Delivery::Data(pt, payload) => self.ready.push_back(Inbound::Data(pt, payload)),
                Delivery::Closed(reason) => {
                    // Everything delivered before it stays in order ahead of the close.
                    while let Some(m) = self.ready.pop_front() {
                        if self.in_tx.send(m).await.is_err() {
                            return Step::Done;
                        }
                    }
                    let _ = self.in_tx.send(Inbound::Closed(reason)).await;
                    return Step::Done;
                }
            }
        }
        step
    }

    /// ResumeSession, dial the original URL with the new token, and resend everything
    /// unacknowledged; bounded in time.
    async fn reconnect(&mut self) -> Result<()> {
        let deadline = Instant::now() + self.config.resume_timeout;
        let mut delay = Duration::from_millis(100 + (rand::random::<u64>() % 100));
        loop {
            tracing::debug!("data channel lost; resuming the session");
            match (self.resumer)().await {
                Ok(Some(token)) => match open_socket(&self.url, &token, &self.client_id, self.config.tls.clone()).await {
                    Ok(ws) => {
                        let (frames, reader, written) = spawn_writer(ws);
                        self.frames = frames;
                        self.frames_queued = 0;
                        self.written = written;
                        self.reader = reader;
                        // Everything in flight may be lost: resend it now.
                        self.core.on_resumed(std::time::Instant::now());
                        return Ok(());
                    }
                    Err(e) => tracing::debug!("reconnect failed: {e}"),
                },
                Ok(None) => {
                    return Err(Error::transfer(
                        "the session ended on the service side while reconnecting (it timed out or was terminated)",
                    ))
                }
                Err(e) if e.kind == Kind::Auth => return Err(e),
                Err(e) => tracing::debug!("ResumeSession failed: {e}"),
            }
            if Instant::now() + delay > deadline {
                return Err(Error::transfer(format!(
                    "lost the connection to Session Manager and could not resume within {} s",
                    self.config.resume_timeout.as_secs()
                ))
                .hint("check the network path to ssmmessages.<region>.amazonaws.com and retry"));
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(5));
        }
    }
}

pub(crate) fn now_millis() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(1)
}
