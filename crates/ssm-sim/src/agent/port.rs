//! The Port plugin (§7): basic mode (one destination connection, re-dialled after
//! DisconnectToPort) and mux mode (an smux v1 server over the reassembled Output stream,
//! one real TCP connection per stream). Destinations are real local sockets.

use super::channel::Outgoing;
use super::InputResult;
use ssm_proto::smux::{Cmd, Frame, FrameDecoder, MAX_FRAME_SIZE};
use ssm_proto::{Flag, PayloadType, STREAM_DATA_PAYLOAD_SIZE};
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Where the agent dials: `host` if the document has one, else localhost (§7.1).
pub fn destination(properties: &serde_json::Value) -> String {
    let host = properties["host"].as_str().unwrap_or("localhost");
    let host = if host == "localhost" {
        "127.0.0.1"
    } else {
        host
    };
    let port = properties["portNumber"].as_str().unwrap_or("80");
    format!("{host}:{port}")
}

/// Deliberate simplification: the real agent refuses the link-local IMDS/DNS/time
/// addresses; the simulator refuses them too, so a client's error path can be tested.
fn is_denied(dest: &str) -> bool {
    dest.starts_with("169.254.169.") || dest.starts_with("[fd00:ec2::")
}

// ---------------------------------------------------------------- basic mode

enum Conn {
    Connecting,
    Connected(OwnedWriteHalf),
    /// DisconnectToPort or destination EOF: the next Output re-dials (§7.3).
    Closed,
}

#[derive(Clone)]
struct BasicShared {
    out: Arc<Outgoing>,
    dest: String,
    /// No `type` property (AWS-StartSSHSession): destination EOF ends the session.
    ends_on_eof: bool,
    conn: Arc<tokio::sync::Mutex<Conn>>,
    /// Bumped on every new connection, so an old reader's EOF cannot close a new one.
    generation: Arc<std::sync::atomic::AtomicU64>,
    done: mpsc::Sender<String>,
    cancel: CancellationToken,
}

pub struct Basic(BasicShared);

impl Basic {
    /// Dial at start; the dial runs in the background and input is refused
    /// (`NotReady`, not acknowledged) until it completes, as in the real agent. A failed
    /// start-up dial fails the whole session.
    pub fn start(
        out: Arc<Outgoing>,
        properties: &serde_json::Value,
        done: mpsc::Sender<String>,
        cancel: CancellationToken,
        ready_delay: Duration,
    ) -> Basic {
        let shared = BasicShared {
            out,
            dest: destination(properties),
            ends_on_eof: properties.get("type").is_none(),
            conn: Arc::new(tokio::sync::Mutex::new(Conn::Connecting)),
            generation: Arc::new(std::sync::atomic::AtomicU64::new(0)),
            done,
            cancel,
        };
        let s = shared.clone();
        tokio::spawn(async move {
            tokio::time::sleep(ready_delay).await;
            match dial(&s.dest).await {
                Ok(stream) => {
                    let w = s.spawn_reader(stream);
                    *s.conn.lock().await = Conn::Connected(w);
                }
                Err(e) => {
                    let msg = format!("Unable to connect to specified port: {e}");
                    s.out
                        .send(PayloadType::Output, msg.clone().into_bytes())
                        .await;
                    let _ = s.done.send(msg).await;
                }
            }
        });
        Basic(shared)
    }

    /// False while the start-up dial is still under way.
    pub async fn ready(&self) -> bool {
        !matches!(*self.0.conn.lock().await, Conn::Connecting)
    }

    pub async fn input(&mut self, payload: &[u8]) -> InputResult {
        let s = &self.0;
        let mut conn = s.conn.lock().await;
        match &*conn {
            Conn::Connecting => return InputResult::NotReady,
            Conn::Closed => match dial(&s.dest).await {
                Ok(stream) => *conn = Conn::Connected(s.spawn_reader(stream)),
                Err(e) => {
                    let msg = format!("Unable to connect to specified port: {e}");
                    let _ = s.done.try_send(msg.clone());
                    return InputResult::Failed(msg);
                }
            },
            Conn::Connected(_) => {}
        }
        let Conn::Connected(w) = &mut *conn else {
            return InputResult::NotReady;
        };
        match w.write_all(payload).await {
            Ok(()) => InputResult::Ok,
            Err(e) => InputResult::Failed(e.to_string()),
        }
    }

    pub async fn disconnect(&mut self) {
        let s = &self.0;
        s.generation.fetch_add(1, Ordering::SeqCst);
        let mut conn = s.conn.lock().await;
        if matches!(*conn, Conn::Connected(_)) {
            *conn = Conn::Closed;
        }
    }
}

impl BasicShared {
    fn spawn_reader(&self, stream: TcpStream) -> OwnedWriteHalf {
        let (mut rd, wr) = stream.into_split();
        let generation = self.generation.fetch_add(1, Ordering::SeqCst) + 1;
        let s = self.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; STREAM_DATA_PAYLOAD_SIZE];
            loop {
                s.out.wait_active().await;
                let n = tokio::select! {
                    r = rd.read(&mut buf) => r.unwrap_or(0),
                    _ = s.cancel.cancelled() => return,
                };
                if s.generation.load(Ordering::SeqCst) != generation {
                    return; // disconnected by flag meanwhile
                }
                if n == 0 {
                    if s.ends_on_eof {
                        let _ = s.done.send(String::new()).await;
                    } else {
                        // LocalPortForwarding: nothing is sent to the client.
                        let mut conn = s.conn.lock().await;
                        if s.generation.load(Ordering::SeqCst) == generation {
                            *conn = Conn::Closed;
                        }
                    }
                    return;
                }
                s.out.send(PayloadType::Output, buf[..n].to_vec()).await;
                s.out.pace().await;
            }
        });
        wr
    }
}

async fn dial(dest: &str) -> std::io::Result<TcpStream> {
    if is_denied(dest) {
        return Err(std::io::Error::new(
            std::io::ErrorKind::PermissionDenied,
            "destination is on the agent's deny list",
        ));
    }
    let s = TcpStream::connect(dest).await?;
    let _ = s.set_nodelay(true);
    Ok(s)
}

// ---------------------------------------------------------------- mux mode

/// Per-stream bytes queued for the destination before the agent stops reading input;
/// stands in for smux v1's 4 MiB session budget (§7.4).
const STREAM_QUEUE: usize = 64;

pub struct Mux {
    out: Arc<Outgoing>,
    dest: String,
    decoder: FrameDecoder,
    streams: HashMap<u32, mpsc::Sender<Vec<u8>>>,
    frames: mpsc::Sender<Frame>,
    last_frame: Arc<Mutex<Instant>>,
    cancel: CancellationToken,
    done: mpsc::Sender<String>,
}

impl Mux {
    pub fn start(
        out: Arc<Outgoing>,
        properties: &serde_json::Value,
        keepalive: bool,
        done: mpsc::Sender<String>,
        cancel: CancellationToken,
    ) -> Mux {
        let (frames, frames_rx) = mpsc::channel(64);
        tokio::spawn(output_pump(out.clone(), frames_rx, cancel.clone()));
        let last_frame = Arc::new(Mutex::new(Instant::now()));
        if keepalive {
            tokio::spawn(keepalive_loop(
                frames.clone(),
                last_frame.clone(),
                done.clone(),
                cancel.clone(),
            ));
        }
        Mux {
            out,
            dest: destination(properties),
            decoder: FrameDecoder::new(),
            streams: HashMap::new(),
            frames,
            last_frame,
            cancel,
            done,
        }
    }

    pub async fn input(&mut self, payload: &[u8]) -> InputResult {
        self.decoder.push(payload);
        loop {
            let frame = match self.decoder.next_frame() {
                Ok(Some(f)) => f,
                Ok(None) => return InputResult::Ok,
                // smux closes the whole session on a bad frame.
                Err(e) => {
                    let _ = self.done.try_send(format!("smux session failed: {e}"));
                    return InputResult::Failed(e.to_string());
                }
            };
            *crate::state::lock(&self.last_frame) = Instant::now();
            match frame.cmd {
                Cmd::Syn => {
                    let (tx, rx) = mpsc::channel(STREAM_QUEUE);
                    self.streams.insert(frame.stream_id, tx);
                    tokio::spawn(run_stream(
                        self.out.clone(),
                        self.dest.clone(),
                        frame.stream_id,
                        rx,
                        self.frames.clone(),
                        self.cancel.clone(),
                    ));
                }
                Cmd::Psh => {
                    if let Some(tx) = self.streams.get(&frame.stream_id) {
                        if tx.send(frame.data).await.is_err() {
                            self.streams.remove(&frame.stream_id);
                        }
                    }
                }
                // Dropping the sender makes the stream close its destination fully.
                Cmd::Fin => {
                    self.streams.remove(&frame.stream_id);
                }
                Cmd::Nop | Cmd::Upd => {}
            }
        }
    }
}

async fn run_stream(
    out: Arc<Outgoing>,
    dest: String,
    id: u32,
    mut from_client: mpsc::Receiver<Vec<u8>>,
    frames: mpsc::Sender<Frame>,
    cancel: CancellationToken,
) {
    let stream = match dial(&dest).await {
        Ok(s) => s,
        Err(e) => {
            tracing::debug!(id, "mux dial {dest} failed: {e}");
            // The flag carries no stream id (§7.4); then FIN the stream.
            out.send(PayloadType::Flag, Flag::ConnectToPortError.encode())
                .await;
            let _ = frames.send(Frame::new(Cmd::Fin, id, vec![])).await;
            return;
        }
    };
    let (mut rd, mut wr) = stream.into_split();
    let mut buf = vec![0u8; MAX_FRAME_SIZE];
    // Either direction ending closes everything and FINs the stream: smux has no
    // usable half-close (§7.4).
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            data = from_client.recv() => match data {
                Some(d) => {
                    if wr.write_all(&d).await.is_err() {
                        break;
                    }
                }
                None => break,
            },
            n = rd.read(&mut buf) => match n {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if frames.send(Frame::new(Cmd::Psh, id, buf[..n].to_vec())).await.is_err() {
                        return;
                    }
                }
            },
        }
    }
    let _ = wr.shutdown().await;
    let _ = frames.send(Frame::new(Cmd::Fin, id, vec![])).await;
}

/// Serialise frames into the byte stream and cut it into ≤ 1024-byte Output messages
/// without regard to frame boundaries, as the agent's socket pump does.
async fn output_pump(out: Arc<Outgoing>, mut rx: mpsc::Receiver<Frame>, cancel: CancellationToken) {
    let mut pending: Vec<u8> = Vec::new();
    loop {
        if pending.is_empty() {
            let f = tokio::select! {
                f = rx.recv() => f,
                _ = cancel.cancelled() => return,
            };
            let Some(f) = f else { return };
            append(&mut pending, &f);
        }
        while pending.len() < STREAM_DATA_PAYLOAD_SIZE {
            match rx.try_recv() {
                Ok(f) => append(&mut pending, &f),
                Err(_) => break,
            }
        }
        out.wait_active().await;
        let n = pending.len().min(STREAM_DATA_PAYLOAD_SIZE);
        let chunk: Vec<u8> = pending.drain(..n).collect();
        out.send(PayloadType::Output, chunk).await;
        out.pace().await;
    }
}

fn append(buf: &mut Vec<u8>, f: &Frame) {
    if let Ok(b) = f.encode() {
        buf.extend_from_slice(&b);
    }
}

/// smux keepalive when the client's version leaves it on (§7.4): NOP every 10 s, and
/// the session closes if no frame at all arrived within a 30 s window.
async fn keepalive_loop(
    frames: mpsc::Sender<Frame>,
    last_frame: Arc<Mutex<Instant>>,
    done: mpsc::Sender<String>,
    cancel: CancellationToken,
) {
    let mut nop = tokio::time::interval(Duration::from_secs(10));
    let mut check = tokio::time::interval(Duration::from_secs(30));
    // Intervals fire at once; smux's tickers first fire after one period.
    nop.tick().await;
    check.tick().await;
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = nop.tick() => {
                let _ = frames.send(Frame::new(Cmd::Nop, 0, vec![])).await;
            }
            _ = check.tick() => {
                if crate::state::lock(&last_frame).elapsed() > Duration::from_secs(30) {
                    let _ = done.send("smux keepalive timeout".into()).await;
                    return;
                }
            }
        }
    }
}
