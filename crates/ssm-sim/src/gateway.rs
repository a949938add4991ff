//! The data-channel gateway (MGS stand-in): accepts the client's websocket at the
//! session's StreamUrl, checks the OpenDataChannel token, and relays frames between the
//! connection and the session's agent through the fault layer.

use crate::faults::FaultLayer;
use crate::state::{add_bytes, Link, SimState, LINK_CAPACITY};
use crate::stats::Stats;
use futures_util::{SinkExt, StreamExt};
use ssm_proto::OpenDataChannelInput;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::time::{sleep_until, Instant};
use tokio_rustls::TlsAcceptor;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message as Ws;
use tokio_tungstenite::WebSocketStream;

/// How long a client has to send the OpenDataChannel frame.
const OPEN_TIMEOUT: Duration = Duration::from_secs(10);

pub async fn serve(listener: TcpListener, state: Arc<SimState>, tls: Option<TlsAcceptor>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let state = state.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            // Round trips before the first frame: TCP, TLS, the websocket upgrade.
            let trips = if tls.is_some() { 3 } else { 2 };
            tokio::time::sleep(state.config.latency * 2 * trips).await;
            let result = match tls {
                Some(acceptor) => match acceptor.accept(stream).await {
                    Ok(s) => handle(s, state).await,
                    Err(e) => Err(format!("TLS handshake: {e}")),
                },
                None => handle(stream, state).await,
            };
            if let Err(e) = result {
                tracing::debug!("gateway connection: {e}");
            }
        });
    }
}

/// The socket under a connection: plain TCP or TLS.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Io for T {}

async fn handle<S: Io>(stream: S, state: Arc<SimState>) -> Result<(), String> {
    let mut path = String::new();
    // The callback's error type is tungstenite's, large by design; we never return it.
    #[allow(clippy::result_large_err)]
    let ws = tokio_tungstenite::accept_hdr_async(stream, |req: &Request, resp: Response| {
        path = req.uri().path().to_string();
        Ok(resp)
    })
    .await
    .map_err(|e| e.to_string())?;
    let session_id = path
        .strip_prefix("/v1/data-channel/")
        .unwrap_or_default()
        .to_string();
    let mut ws = ws;
    let first = tokio::time::timeout(OPEN_TIMEOUT, ws.next()).await;
    let open: Option<OpenDataChannelInput> = match first {
        Ok(Some(Ok(Ws::Text(t)))) => serde_json::from_str(t.as_str()).ok(),
        _ => None,
    };
    let session = state.session(&session_id);
    let (Some(open), Some(session)) = (open, session) else {
        Stats::add(&state.stats.rejected_tokens);
        return reject(ws, "first frame must be the OpenDataChannel text frame").await;
    };
    if !session.take_token(&open.token_value) {
        Stats::add(&state.stats.rejected_tokens);
        return reject(ws, "invalid or already used token").await;
    }
    Stats::add(&state.stats.websocket_connections);
    let conn = session.connections.fetch_add(1, Ordering::Relaxed) + 1;
    let (tx, rx) = mpsc::channel(LINK_CAPACITY);
    session.attach(Link { conn, tx });
    if !session.agent_started.swap(true, Ordering::SeqCst) {
        tokio::spawn(crate::agent::run(state.clone(), session.clone()));
    }

    let faults = &state.config.faults;
    let seed = faults.seed ^ conn.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ hash(&session.id);
    let to_client = FaultLayer::new(faults.to_client.clone(), seed);
    let to_agent = FaultLayer::new(faults.to_agent.clone(), seed.rotate_left(17));
    // Not a child of the session's token: at session end the writer must still flush
    // channel_closed, then it closes the connection itself.
    let cut = tokio_util::sync::CancellationToken::new();
    let (sink, stream) = ws.split();
    let deadline = faults.connection_max_age.map(|a| Instant::now() + a);
    let writer = tokio::spawn(write_loop(
        state.clone(),
        session.clone(),
        sink,
        rx,
        to_client,
        cut.clone(),
        deadline,
    ));
    read_loop(&state, &session, stream, to_agent, &cut).await;
    // A close from the client ends the connection, not the session: it may resume.
    cut.cancel();
    session.detach(conn);
    let _ = writer.await;
    Ok(())
}

type Sink<S> = futures_util::stream::SplitSink<WebSocketStream<S>, Ws>;
type Stream<S> = futures_util::stream::SplitStream<WebSocketStream<S>>;

async fn read_loop<S: Io>(
    state: &SimState,
    session: &crate::state::Session,
    mut stream: Stream<S>,
    mut faults: FaultLayer,
    cut: &tokio_util::sync::CancellationToken,
) {
    loop {
        let wake = faults.next_deadline();
        tokio::select! {
            // Not on the session's end: the writer still flushes channel_closed then,
            // and stops this reader itself once it has closed the connection.
            _ = cut.cancelled() => return,
            msg = stream.next(), if !faults.is_full() => match msg {
                Some(Ok(Ws::Binary(b))) => {
                    Stats::add(&state.stats.client_messages);
                    if faults.push(b.to_vec()) {
                        Stats::add(&state.stats.dropped_to_agent);
                    }
                }
                Some(Ok(Ws::Text(t))) => {
                    // Readers hand text frames to the binary parser too (§2.3); a
                    // client should never send one after OpenDataChannel.
                    Stats::add(&state.stats.text_frame_after_open);
                    if faults.push(t.as_bytes().to_vec()) {
                        Stats::add(&state.stats.dropped_to_agent);
                    }
                }
                Some(Ok(_)) => {}
                _ => {
                    // The client is done sending. What it sent before is delivered,
                    // in order, frames the fault layer delays included: a gateway
                    // loses only what faults drop on purpose.
                    while let Some(at) = faults.next_deadline() {
                        sleep_until(at).await;
                        for frame in faults.due() {
                            if session.inbox_tx.send(frame).await.is_err() {
                                return;
                            }
                        }
                    }
                    return;
                }
            },
            _ = sleep_until(wake.unwrap_or_else(far_future)), if wake.is_some() => {}
        }
        for frame in faults.due() {
            if session.inbox_tx.send(frame).await.is_err() {
                return;
            }
        }
    }
}

async fn write_loop<S: Io>(
    state: Arc<SimState>,
    session: Arc<crate::state::Session>,
    mut sink: Sink<S>,
    mut rx: mpsc::Receiver<Vec<u8>>,
    mut faults: FaultLayer,
    cut: tokio_util::sync::CancellationToken,
    max_age: Option<Instant>,
) {
    // The reader stops with the writer only when a fault cuts the connection or the
    // session ends; a client that stopped reading (or closed) still gets everything it
    // sent delivered to the agent.
    let cuts = &state.config.faults.cut_after_bytes;
    let mut open = true;
    loop {
        let wake = faults.next_deadline();
        if !open && wake.is_none() {
            // The session ended and everything queued went out: close politely.
            let _ = sink
                .send(Ws::Close(Some(CloseFrame {
                    code: CloseCode::Normal,
                    reason: "session ended".into(),
                })))
                .await;
            cut.cancel();
            return;
        }
        tokio::select! {
            _ = cut.cancelled() => return,
            _ = sleep_until(max_age.unwrap_or_else(far_future)), if max_age.is_some() => {
                cut.cancel();
                return;
            }
            frame = rx.recv(), if open && !faults.is_full() => match frame {
                Some(f) => {
                    if faults.push(f) {
                        Stats::add(&state.stats.dropped_to_client);
                    }
                }
                None => open = false,
            },
            _ = sleep_until(wake.unwrap_or_else(far_future)), if wake.is_some() => {}
        }
        for frame in faults.due() {
            let total = add_bytes(&session.bytes_to_client, frame.len());
            let fired = session.cuts_fired.load(Ordering::Relaxed) as usize;
            if cuts.get(fired).is_some_and(|&at| total >= at) {
                session.cuts_fired.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(session = %session.id, total, "fault: cutting websocket");
                cut.cancel();
                return;
            }
            if sink.send(Ws::Binary(frame.into())).await.is_err() {
                return;
            }
        }
    }
}

async fn reject<S: Io>(mut ws: WebSocketStream<S>, why: &str) -> Result<(), String> {
    let _ = ws
        .send(Ws::Close(Some(CloseFrame {
            code: CloseCode::Policy,
            reason: why.to_string().into(),
        })))
        .await;
    Err(why.to_string())
}

fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(86400)
}

fn hash(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
    })
}
