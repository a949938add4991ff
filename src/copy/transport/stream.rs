//! The "stream" transport: a command session starts the receiver (remote/receiver.py) on
//! the instance; port sessions to it carry bundles. Uploads use one port session (the
//! agent does not pace what it receives); downloads stripe file ranges over several,
//! because the agent paces what it sends per session.

use super::send::send_bundle;
use super::zlib::{Inflate, Out};
use super::{
    Closed, Download, DownloadSessions, Limiter, PlaceOptions, Progress, Pull, Summary, Transport,
    Upload,
};
use crate::copy::bundle::{Record, DIGEST_LEN};
use crate::copy::local_dest::{DownloadStage, StagedFile, MAX_ENTRIES};
use crate::copy::local_source::Plan;
use crate::error::DAMAGED;
use crate::error::{Error, Flag, Kind, Result};
use crate::progress::Reporter;
use crate::remote::protocol::remote_failure;
use crate::remote::protocol::{self, Hex, Listed, Pushed, Reading, Request, Source, Top};
use crate::remote::{launch_command, sudo_refusal, Launch, LaunchScanner, RunAs};
use crate::session::channel::{Channel, ChannelConfig, Inbound};
use crate::session::handshake::{self, Start};
use crate::session::port::{self, Ended, PortSession};
use crate::session::{self, command, Session, SessionSpec};
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};
use ssm_proto::PayloadType;
use std::collections::VecDeque;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;
use tokio::io::{
    AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader, BufWriter,
    DuplexStream, ReadHalf, WriteHalf,
};

const CHUNK: usize = 256 * 1024;
/// How long the receiver may take to report in (python start-up, sudo, a slow shell profile).
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// A download request asks for at most this many bytes (small files travel together,
/// big ones are cut into ranges) ...
const REQUEST_BYTES: u64 = 1024 * 1024;
/// ... and at least this many, unless the download is smaller.
const REQUEST_MIN_BYTES: u64 = 64 * 1024;
/// Requests per connection we aim for, so the connections finish close together.
const REQUESTS_PER_CONNECTION: u64 = 4;
/// With `--parallel N`, less data than this per connection is not worth another session.
const BYTES_PER_EXTRA_CONNECTION: u64 = 256 * 1024;
/// Without `--parallel`: one session per this much data ... A paced session carries it
/// in about 0.55 s, more than an extra session costs to start (about 0.35 s through a
/// region, all of them at once), so every session opened pays for itself.
const AUTO_BYTES_PER_SESSION: u64 = 512 * 1024;
/// ... and at most this many. No AWS quota on concurrent sessions is documented and the
/// agent runs up to 1,000 at once, but every session is a StartSession call (throttled
/// per account) and a websocket; 8 brought 16 MiB down 1.6 times as fast as 4, and 16
/// (measured in docs/benchmarks.md) adds little more. docs/transports.md has the evidence.
const AUTO_MAX_SESSIONS: usize = 8;
const REQUEST_RANGES: usize = 2000;
/// Longest status line we accept from the receiver.
const MAX_LINE: u64 = 64 * 1024;

/// Where sessions go and how they are opened.
#[derive(Clone)]
pub(crate) struct Endpoint {
    pub ssm: aws_sdk_ssm::Client,
    pub instance: String,
    pub channel: ChannelConfig,
}

/// The receiver running on the instance, owned through its command session.
pub(crate) struct Receiver {
    endpoint: Endpoint,
    session: Session,
    channel: Channel,
    port: u16,
    token: String,
}

/// A receiver just started, and the first port session to it when the one opened
/// alongside could be used.
pub(crate) struct Started {
    pub receiver: Receiver,
    pub first: Option<Connection>,
    /// What ending a port session that could not be used left for the user.
    pub warnings: Vec<String>,
}

/// The port a copy asks the receiver to listen on, so that its first port session can be
/// started alongside the receiver instead of after it: one from Linux's ephemeral range.
/// If it is taken the receiver listens elsewhere and says so, and that session is given
/// up for one to the port it names.
fn wanted_port() -> u16 {
    rand::random_range(32768..=60999)
}

impl Receiver {
    /// Start the receiver; `None` when the instance has no python3 (the session is
    /// already ended then, and the caller may fall back to the pty transport).
    pub(crate) async fn start(endpoint: &Endpoint, run_as: &RunAs) -> Result<Option<Receiver>> {
        Receiver::launch(endpoint, run_as, None).await
    }

    /// As `start`, with the first port session started at the same time rather than
    /// after the receiver reports in (a StartSession, a websocket and a handshake less
    /// before the first byte). It is only used when the agent forwards in mux mode,
    /// where it dials the receiver per stream, after READY; in basic mode the agent dials
    /// at session start, possibly before the receiver listens, so that session is ended
    /// and a new one opened as before.
    pub(crate) async fn start_connected(
        endpoint: &Endpoint,
        run_as: &RunAs,
    ) -> Result<Option<Started>> {
        let port = wanted_port();
        let (launched, early) = tokio::join!(
            Receiver::launch(endpoint, run_as, Some(port)),
            open_ports(endpoint, port),
        );
        let receiver = match launched {
            Ok(Some(r)) => r,
            other => {
                if let Ok(unused) = early {
                    let _ = give_up(unused).await;
                }
                return other.map(|_| None);
            }
        };
        let mut warnings = Vec::new();
        let first = match early {
            Ok((session, ports)) if receiver.port == port && ports.mode == port::Mode::Mux => {
                receiver.attach(session, ports).await.ok()
            }
            Ok(unused) => {
                warnings.extend(give_up(unused).await);
                None
            }
            Err(e) => {
                tracing::debug!("the port session started alongside the receiver failed: {e}");
                None
            }
        };
        Ok(Some(Started {
            receiver,
            first,
            warnings,
        }))
    }

    async fn launch(
        endpoint: &Endpoint,
        run_as: &RunAs,
        port: Option<u16>,
    ) -> Result<Option<Receiver>> {
        let spec = SessionSpec {
            target: endpoint.instance.clone(),
            document: command::DOCUMENT.to_string(),
            parameters: vec![("command".to_string(), launch_command(run_as, port))],
        };
        let (session, mut channel) =
            session::start(&endpoint.ssm, &spec, endpoint.channel.clone()).await?;
        match tokio::time::timeout(READY_TIMEOUT, wait_ready(&mut channel, run_as)).await {
            Ok(Ok(Some((port, token)))) => Ok(Some(Receiver {
                endpoint: endpoint.clone(),
                session,
                channel,
                port,
                token,
            })),
            Ok(Ok(None)) => {
                let _ = session.end(Some(&mut channel)).await;
                Ok(None)
            }
            Ok(Err(e)) => {
                let _ = session.end(Some(&mut channel)).await;
                Err(e)
            }
            Err(_) => {
                let _ = session.end(Some(&mut channel)).await;
                Err(Error::new(
                    Kind::Target,
                    format!(
                        "the receiver did not start on the instance within {} s",
                        READY_TIMEOUT.as_secs()
                    ),
                )
                .hint("check that the instance is healthy (ssmcp exec INSTANCE -- uptime)"))
            }
        }
    }

    /// A new port session to the receiver, authenticated with its token.
    pub(crate) async fn connect(&self) -> Result<Connection> {
        let (session, ports) = open_ports(&self.endpoint, self.port).await?;
        self.attach(session, ports).await
    }

    /// The receiver's connection over a port session to its port: one stream,
    /// authenticated with the token. On failure the session is ended.
    async fn attach(&self, session: Session, ports: PortSession) -> Result<Connection> {
        let mut stream = match ports.open_stream().await {
            Ok(s) => s,
            Err(e) => {
                let lost = ports.terminate().await;
                let _ = session.end_after(lost).await;
                return Err(e);
            }
        };
        let hello = format!("{}\n", self.token);
        if let Err(e) = stream.write_all(hello.as_bytes()).await {
            let lost = ports.terminate().await;
            let _ = session.end_after(lost).await;
            return Err(Error::transfer(format!("cannot reach the receiver: {e}")));
        }
        let (reader, writer) = tokio::io::split(stream);
        Ok(Connection {
            session,
            ports,
            reader: BufReader::with_capacity(CHUNK, reader),
            writer,
        })
    }

    /// Stop the receiver and end its command session. Shell-type sessions ignore the
    /// TerminateSession flag, so the clean end is the receiver exiting: any byte on its
    /// terminal tells it to (after its connections have finished cleaning up).
    /// Returns warnings for the user.
    /// `hurry` (after ^C): give it only a moment; the API call then ends the session, and
    /// with it the receiver.
    pub(crate) async fn close(mut self, hurry: bool) -> Vec<String> {
        let _ = self
            .channel
            .sender
            .send(PayloadType::Output, b"q".to_vec())
            .await;
        self.session
            .end_within(Some(&mut self.channel), session::end_wait(hurry))
            .await
            .warning
            .into_iter()
            .collect()
    }
}

/// A port session to `port` on the instance, handshaken.
async fn open_ports(endpoint: &Endpoint, port: u16) -> Result<(Session, PortSession)> {
    let spec = SessionSpec {
        target: endpoint.instance.clone(),
        document: "AWS-StartPortForwardingSession".to_string(),
        parameters: vec![("portNumber".to_string(), port.to_string())],
    };
    let (session, ports, _) = port::open(&endpoint.ssm, &spec, endpoint.channel.clone()).await?;
    Ok((session, ports))
}

/// End a port session that will not be used; what the user should hear of it.
async fn give_up((session, ports): (Session, PortSession)) -> Option<String> {
    let lost = ports.terminate().await;
    session.end_after(lost).await.warning
}

async fn wait_ready(channel: &mut Channel, run_as: &RunAs) -> Result<Option<(u16, String)>> {
    let mut scanner = LaunchScanner::default();
    let mut next = match handshake::perform(channel).await? {
        Start::NoHandshake(first) => Some(first),
        Start::Handshaken(_) => None,
    };
    loop {
        let m = match next.take() {
            Some(m) => m,
            None => channel
                .recv()
                .await
                .unwrap_or(Inbound::Closed(String::new())),
        };
        match m {
            Inbound::Data(_, bytes) => match scanner.push(&bytes) {
                Launch::Ready { port, token } => return Ok(Some((port, token))),
                Launch::NoPython => return Ok(None),
                Launch::Pending => {}
            },
            Inbound::Closed(_) => return Err(launch_failure(&scanner.output(), run_as)),
            Inbound::Failed(e) => return Err(e),
        }
    }
}

fn launch_failure(output: &str, run_as: &RunAs) -> Error {
    let said = if output.is_empty() {
        String::new()
    } else {
        format!(": {output}")
    };
    if let Some(e) = sudo_refusal(run_as, output) {
        return e;
    }
    Error::new(
        Kind::Target,
        format!("the receiver could not be started on the instance{said}"),
    )
}

/// One port session to the receiver, carrying one connection. The reading half is
/// buffered once for the connection's life, so nothing read ahead is ever dropped
/// between one request and the next.
pub(crate) struct Connection {
    session: Session,
    ports: PortSession,
    reader: BufReader<ReadHalf<DuplexStream>>,
    writer: WriteHalf<DuplexStream>,
}

impl Connection {
    /// A connection-level failure seen on the stream (EOF, broken pipe) usually has a
    /// cause one layer down: the session failed (ResumeSession denied, gave up
    /// reconnecting) or the service closed it. Report that cause when there is one.
    async fn explain(&self, e: Error) -> Error {
        if e.kind != Kind::Transfer {
            return e;
        }
        match tokio::time::timeout(Duration::from_secs(1), self.ports.closed()).await {
            Ok(Ended::Failed(cause)) => cause,
            Ok(Ended::Closed(reason)) if !reason.is_empty() => Error::transfer(format!(
                "the connection to the receiver was lost: the session was closed ({reason})"
            ))
            .hint(RECEIVER_GONE),
            _ => e,
        }
    }

    pub(crate) async fn close(self) -> Vec<String> {
        drop((self.reader, self.writer));
        let lost = self.ports.terminate().await;
        self.session
            .end_after(lost)
            .await
            .warning
            .into_iter()
            .collect()
    }

    fn halves(
        &mut self,
    ) -> (
        &mut BufReader<ReadHalf<DuplexStream>>,
        &mut WriteHalf<DuplexStream>,
    ) {
        (&mut self.reader, &mut self.writer)
    }
}

/// After a write failed: the refusal the receiver sent before it closed, if any.
async fn refusal<R: AsyncRead + Unpin>(r: &mut BufReader<R>) -> Option<Error> {
    let mut line = Vec::new();
    let mut limited = (&mut *r).take(MAX_LINE);
    let read = limited.read_until(b'\n', &mut line);
    tokio::time::timeout(Duration::from_secs(2), read)
        .await
        .ok()?
        .ok()?;
    protocol::refusal(&line)
}

/// The receiver's answer to a request: `T` when it worked, its failure otherwise.
async fn read_answer<T: DeserializeOwned, R: AsyncRead + Unpin>(r: &mut BufReader<R>) -> Result<T> {
    let mut line = Vec::new();
    (&mut *r)
        .take(MAX_LINE)
        .read_until(b'\n', &mut line)
        .await
        .map_err(lost)?;
    if line.is_empty() {
        return Err(
            Error::transfer("the connection to the receiver was lost before it answered")
                .hint(RECEIVER_GONE),
        );
    }
    protocol::answer(&line)
}

async fn send<W: AsyncWrite + Unpin>(w: &mut W, request: &Request) -> Result<()> {
    w.write_all(&protocol::line(request)?).await.map_err(lost)?;
    Ok(())
}

const RECEIVER_GONE: &str =
    "it may have been stopped on the instance; nothing was put in place, run the copy again";

fn lost(e: std::io::Error) -> Error {
    Error::transfer(format!("the connection to the receiver was lost ({e})")).hint(RECEIVER_GONE)
}

// ------------------------------------------------------------------------- transport

/// The stream transport opened on one instance: the receiver, and the port sessions to
/// it that the copy has opened so far.
pub(crate) struct StreamTransport {
    receiver: Receiver,
    conns: Vec<Connection>,
    /// Said by ending what was opened but not used; reported at close.
    warnings: Vec<String>,
}

impl StreamTransport {
    pub(crate) fn new(started: Started) -> StreamTransport {
        StreamTransport {
            receiver: started.receiver,
            conns: started.first.into_iter().collect(),
            warnings: started.warnings,
        }
    }

    async fn first_connection(&mut self) -> Result<&mut Connection> {
        if self.conns.is_empty() {
            self.conns.push(self.receiver.connect().await?);
        }
        Ok(&mut self.conns[0])
    }
}

#[async_trait::async_trait(?Send)]
impl Transport for StreamTransport {
    /// One port session carries the upload; with --sync, the destination's inventory
    /// first leaves out what is unchanged.
    async fn push(&mut self, job: Upload<'_>, reporter: &Reporter) -> Result<Summary> {
        reporter.note(
            "transport stream: a python3 receiver on the instance, one port session for the upload",
        );
        let Upload {
            mut plan,
            dest,
            place,
            limit,
            compress,
            sync,
            delete,
        } = job;
        let conn = self.first_connection().await?;
        let unchanged = if sync {
            let theirs = inventory(conn, &plan, dest).await?;
            plan.drop_unchanged(&theirs)?
        } else {
            Vec::new()
        };
        if !unchanged.is_empty() {
            reporter.note(&format!(
                "{}: {} unchanged file(s) left alone",
                Flag::Sync,
                unchanged.len()
            ));
        }
        reporter.plan(plan.files, plan.bytes);
        let push_job = Push {
            plan: &plan,
            dest,
            place,
            limit,
            unchanged: &unchanged,
            delete,
            compress,
        };
        let mut summary = push(conn, push_job, reporter).await?;
        summary.unchanged = unchanged.len() as u64;
        Ok(summary)
    }

    /// List on one connection, then open up to --parallel connections and fetch.
    async fn pull(&mut self, job: &Download<'_>, reporter: &Reporter) -> Result<Summary> {
        let conn = self.first_connection().await?;
        let mut manifest: Manifest = list(conn, &job.pull).await?;
        manifest.exclude(job.exclude);
        for w in &manifest.warnings {
            reporter.warn(&format!("on the instance: {w}"));
        }
        if job.dry_run {
            let to = job.pull.dest.display().to_string();
            let (files, bytes) = reporter.dry_run(manifest.records.iter(), &to);
            return Ok(Summary {
                files,
                bytes,
                ..Summary::default()
            });
        }
        let wanted = manifest.connections(job.sessions);
        let extra = (self.conns.len()..wanted).map(|_| self.receiver.connect());
        let mut refused = Vec::new();
        for c in futures_util::future::join_all(extra).await {
            match c {
                Ok(c) => self.conns.push(c),
                Err(e) => refused.push(e),
            }
        }
        // The first connection works, so a session that would not start (throttled,
        // the agent out of workers) costs speed, not the copy.
        if let Some(first) = refused.first() {
            reporter.warn(&format!(
                "{} of {wanted} download sessions could not start, continuing with {} ({})",
                refused.len(),
                self.conns.len(),
                first.message
            ));
        }
        reporter.note(&format!(
            "transport stream: a python3 receiver on the instance, {} port session(s) for the download",
            self.conns.len()
        ));
        fetch(&mut self.conns, &manifest, &job.pull, reporter).await
    }

    async fn close(self: Box<Self>, interrupted: bool) -> Closed {
        let StreamTransport {
            receiver,
            conns,
            mut warnings,
        } = *self;
        let closing = conns.into_iter().map(Connection::close);
        warnings.extend(
            futures_util::future::join_all(closing)
                .await
                .into_iter()
                .flatten(),
        );
        warnings.extend(receiver.close(interrupted).await);
        Closed::warnings(warnings)
    }
}

// ------------------------------------------------------------------------- upload

pub(crate) struct Push<'a> {
    pub plan: &'a Plan,
    /// The destination path as typed (relative paths are under the remote home).
    pub dest: &'a [u8],
    pub place: PlaceOptions,
    pub limit: Option<u64>,
    /// Bundle paths of the files --sync left out of the plan (the destination has
    /// them): --delete keeps them, and --atomic carries them into the new tree.
    pub unchanged: &'a [Vec<u8>],
    /// --delete: remove what the destination trees hold beyond the plan and `unchanged`.
    pub delete: bool,
    /// -C: the bundle travels as one zlib stream.
    pub compress: bool,
}

fn tops(plan: &Plan) -> Vec<Top> {
    plan.tops
        .iter()
        .map(|t| Top {
            name: Hex(t.name.clone()),
            dir: t.is_dir,
        })
        .collect()
}

/// What the receiver needs to place one bundle (both the port-session and the S3
/// transport send it); `unchanged` and `delete` as in `Push`.
pub(crate) fn push_request(
    plan: &Plan,
    dest: &[u8],
    place: &PlaceOptions,
    compress: bool,
    unchanged: &[Vec<u8>],
    delete: bool,
) -> protocol::Push {
    let hexed = || unchanged.iter().map(|k| Hex(k.clone())).collect();
    protocol::Push {
        dest: Hex(dest.to_vec()),
        tops: tops(plan),
        preserve: place.preserve,
        atomic: place.atomic,
        compress,
        delete,
        keep: if delete { hexed() } else { Vec::new() },
        unchanged: if place.atomic { hexed() } else { Vec::new() },
        url: None,
    }
}

/// --sync: what the destination already holds for each file of the plan, in plan
/// order: its SHA-256 when it is a regular file of the same size.
pub(crate) async fn inventory(
    conn: &mut Connection,
    plan: &Plan,
    dest: &[u8],
) -> Result<Vec<Option<[u8; DIGEST_LEN]>>> {
    let files: Vec<_> = plan
        .entries
        .iter()
        .filter_map(|e| match &e.record {
            Record::File { meta, size } => Some((Hex(meta.path.clone()), *size)),
            _ => None,
        })
        .collect();
    let count = files.len();
    let request = Request::Inventory(protocol::Inventory {
        dest: Hex(dest.to_vec()),
        tops: tops(plan),
        files,
    });
    let (reader, writer) = conn.halves();
    send(&mut *writer, &request).await?;
    let answer: protocol::Inventoried = read_answer(&mut *reader).await?;
    if answer.count != count as u64 {
        return Err(Error::protocol(format!(
            "the receiver's inventory has {} entries for {count} files",
            answer.count
        )));
    }
    let mut out = Vec::with_capacity(count);
    for _ in 0..count {
        let flag = reader.read_u8().await.map_err(lost)?;
        if flag == 0 {
            out.push(None);
            continue;
        }
        let mut d = [0u8; DIGEST_LEN];
        reader.read_exact(&mut d).await.map_err(lost)?;
        out.push(Some(d));
    }
    Ok(out)
}

/// Send the plan as one bundle; the receiver stages, verifies and commits it.
pub(crate) async fn push(
    conn: &mut Connection,
    job: Push<'_>,
    progress: &dyn Progress,
) -> Result<Summary> {
    match push_bundle(conn, job, progress).await {
        Err(e) => Err(conn.explain(e).await),
        ok => ok,
    }
}

async fn push_bundle(
    conn: &mut Connection,
    job: Push<'_>,
    progress: &dyn Progress,
) -> Result<Summary> {
    let request = push_request(
        job.plan,
        job.dest,
        &job.place,
        job.compress,
        job.unchanged,
        job.delete,
    );
    let (reader, writer) = conn.halves();
    let mut writer = BufWriter::with_capacity(CHUNK, writer);
    send(&mut writer, &Request::Push(request)).await?;
    let mut limiter = Limiter::new(job.limit);
    let mut out = Out::new(&mut writer, job.compress);
    let sending = send_bundle(&mut out, job.plan, progress, &mut limiter, lost);
    tokio::pin!(sending);
    // The receiver answers early only to refuse; otherwise after the commit.
    let status = tokio::select! {
        sent = &mut sending => {
            if let Err(e) = sent {
                // The receiver refuses by answering and closing, so the write can fail
                // first; its answer says why, the broken pipe does not.
                return Err(refusal(&mut *reader).await.unwrap_or(e));
            }
            read_answer::<Pushed, _>(&mut *reader).await?
        }
        early = read_answer::<Pushed, _>(&mut *reader) => {
            early?;
            return Err(Error::protocol("the receiver answered before the bundle was complete"));
        }
    };
    if status.reaped > 0 {
        let n = status.reaped;
        tracing::info!(
            "the receiver removed {n} temporaries left on the instance by killed ssmcp runs"
        );
    }
    Ok(Summary {
        files: status.files,
        bytes: status.bytes,
        deleted: status.deleted,
        ..Summary::default()
    })
}

// ------------------------------------------------------------------------- download

/// Warnings kept from one listing (each is one skipped entry); the rest are dropped.
const MAX_WARNINGS: usize = 1000;

/// Everything the instance listed for a download.
pub(crate) struct Manifest {
    id: String,
    pub records: Vec<Record>,
    pub warnings: Vec<String>,
    /// The receiver's index of each `Listed` record still in `records`, in order.
    listed: Vec<u32>,
}

/// Ask the receiver what the sources contain.
/// What the receiver needs to list the sources of a download (both the port-session and
/// the S3 transport send it).
pub(crate) fn list_request(job: &Pull<'_>) -> protocol::List {
    let sources = job
        .sources
        .iter()
        .map(|s| Source {
            path: Hex(s.clone()),
            contents: s.ends_with(b"/") && s.len() > 1,
        })
        .collect();
    protocol::List {
        sources,
        recursive: job.recursive,
        export: None,
    }
}

pub(crate) async fn list(conn: &mut Connection, job: &Pull<'_>) -> Result<Manifest> {
    let (reader, writer) = conn.halves();
    send(&mut *writer, &Request::List(list_request(job))).await?;
    read_listing(reader).await
}

/// The receiver's answer to a list request.
async fn read_listing<R: AsyncRead + Unpin>(reader: &mut BufReader<R>) -> Result<Manifest> {
    let Listed { id } = read_answer(&mut *reader).await?;
    let mut records = Vec::new();
    let mut warnings = Vec::new();
    loop {
        match Record::read(&mut *reader).await? {
            Record::End { count } => {
                if count != records.len() as u64 {
                    return Err(Error::protocol("the receiver's listing is incomplete"));
                }
                break;
            }
            // Bounded whatever the peer sends: a listing is held whole until it is staged.
            Record::Warning(w) if warnings.len() < MAX_WARNINGS => warnings.push(w),
            Record::Warning(_) => {}
            r @ (Record::Dir(_) | Record::Listed { .. } | Record::Link { .. }) => {
                if records.len() == MAX_ENTRIES {
                    return Err(Error::protocol(format!(
                        "the instance's listing has more than {MAX_ENTRIES} entries, more than ssmcp accepts in one download"
                    ))
                    .hint("copy the tree in parts (one subdirectory per copy)"));
                }
                records.push(r)
            }
            other => {
                return Err(Error::protocol(format!(
                    "unexpected record in a listing: {other:?}"
                )))
            }
        }
    }
    let count = records
        .iter()
        .filter(|r| matches!(r, Record::Listed { .. }))
        .count() as u32;
    Ok(Manifest {
        id,
        records,
        warnings,
        listed: (0..count).collect(),
    })
}

/// One piece of work for a download connection.
struct Batch {
    ranges: Vec<(usize, u64, u64)>,
}

/// Stage every listed entry locally, fetch file bytes over `conns` in parallel, verify,
/// and commit. Any failure leaves nothing behind.
pub(crate) async fn fetch(
    conns: &mut [Connection],
    manifest: &Manifest,
    job: &Pull<'_>,
    progress: &dyn Progress,
) -> Result<Summary> {
    let (mut stage, files, bytes) =
        DownloadStage::for_listing(job.dest, &manifest.records, job.preserve, job.requested())?;
    let summary = Summary {
        files,
        bytes,
        ..Summary::default()
    };
    progress.plan(summary.files, summary.bytes);
    let per_request = (summary.bytes / (conns.len() as u64 * REQUESTS_PER_CONNECTION))
        .clamp(REQUEST_MIN_BYTES, REQUEST_BYTES);
    let queue = Mutex::new(plan_batches(manifest.sizes(), per_request));
    let received: Vec<AtomicU64> = stage.files.iter().map(|_| AtomicU64::new(0)).collect();
    let shared = Shared {
        remote_index: &manifest.listed,
        files: &stage.files,
        received: &received,
        manifest: &manifest.id,
        compress: job.compress,
        progress,
    };
    let workers = conns.iter_mut().map(|c| worker(c, &queue, &shared));
    let results = futures_util::future::join_all(workers).await;
    results.into_iter().collect::<Result<Vec<()>>>()?;
    all_received(&stage.files, &received)?;
    stage.commit()?;
    Ok(summary)
}

fn all_received(files: &[StagedFile], received: &[AtomicU64]) -> Result<()> {
    for (f, got) in files.iter().zip(received) {
        let got = got.load(Ordering::Relaxed);
        if got != f.size {
            return Err(Error::transfer(format!(
                "{} arrived incomplete ({got} of {} bytes)",
                f.final_path.display(),
                f.size
            ))
            .hint(RECEIVER_GONE));
        }
    }
    Ok(())
}

/// A whole download in one byte stream, as the S3 transport gets it from the object
/// the instance uploaded: the receiver's answer to the list request, then its answer to
/// one read of every file whole. Staged, verified per range and committed exactly as a
/// download over sessions; nothing is put in place unless all of it checks out.
pub(crate) async fn receive_spooled<R: AsyncRead + Unpin>(
    reader: &mut BufReader<R>,
    job: &Pull<'_>,
    progress: &dyn Progress,
) -> Result<(Summary, Vec<String>)> {
    let manifest = read_listing(reader).await?;
    let (mut stage, files, bytes) =
        DownloadStage::for_listing(job.dest, &manifest.records, job.preserve, job.requested())?;
    progress.plan(files, bytes);
    let batch = Batch {
        ranges: manifest
            .sizes()
            .enumerate()
            .filter(|(_, n)| *n > 0)
            .map(|(i, n)| (i, 0, n))
            .collect(),
    };
    let received: Vec<AtomicU64> = stage.files.iter().map(|_| AtomicU64::new(0)).collect();
    let shared = Shared {
        remote_index: &manifest.listed,
        files: &stage.files,
        received: &received,
        manifest: &manifest.id,
        compress: false,
        progress,
    };
    read_answer::<Reading, _>(reader).await?;
    let mut buf = vec![0u8; CHUNK];
    read_ranges(reader, &batch, &shared, &mut buf).await?;
    all_received(&stage.files, &received)?;
    stage.commit()?;
    let summary = Summary {
        files,
        bytes,
        ..Summary::default()
    };
    Ok((summary, manifest.warnings))
}

/// Split files (by manifest index) into ranges and gather the ranges into requests.
fn plan_batches(sizes: impl Iterator<Item = u64>, per_request: u64) -> VecDeque<Batch> {
    let mut out = VecDeque::new();
    let mut cur = Batch { ranges: Vec::new() };
    let mut cur_bytes = 0;
    for (index, size) in sizes.enumerate() {
        let mut offset = 0;
        while offset < size {
            let len = per_request.min(size - offset);
            if !cur.ranges.is_empty()
                && (cur_bytes + len > per_request || cur.ranges.len() >= REQUEST_RANGES)
            {
                out.push_back(std::mem::replace(&mut cur, Batch { ranges: Vec::new() }));
                cur_bytes = 0;
            }
            cur.ranges.push((index, offset, len));
            cur_bytes += len;
            offset += len;
        }
    }
    if !cur.ranges.is_empty() {
        out.push_back(cur);
    }
    out
}

impl Manifest {
    /// --exclude: drop entries whose name or path below its source matches, and
    /// everything under an excluded directory.
    pub(crate) fn exclude(&mut self, set: &globset::GlobSet) {
        let records = std::mem::take(&mut self.records);
        let (kept, listed) = crate::copy::local_source::exclude_listing(records, set);
        self.records = kept;
        self.listed = listed;
    }

    fn sizes(&self) -> impl Iterator<Item = u64> + '_ {
        self.records.iter().filter_map(|r| match r {
            Record::Listed { size, .. } => Some(*size),
            _ => None,
        })
    }

    /// How many connections are worth opening for this download.
    pub(crate) fn connections(&self, sessions: DownloadSessions) -> usize {
        connections_for(self.sizes().sum(), sessions)
    }
}

fn connections_for(bytes: u64, sessions: DownloadSessions) -> usize {
    let (per, most) = match sessions {
        DownloadSessions::Auto => (AUTO_BYTES_PER_SESSION, AUTO_MAX_SESSIONS),
        DownloadSessions::AtMost(n) => (BYTES_PER_EXTRA_CONNECTION, n),
    };
    let worth = usize::try_from(bytes.div_ceil(per)).unwrap_or(usize::MAX);
    worth.min(most).max(1)
}

struct Shared<'a> {
    /// The receiver's index of each file.
    remote_index: &'a [u32],
    /// The staged files, in manifest order.
    files: &'a [StagedFile],
    /// Bytes received and verified so far, per file.
    received: &'a [AtomicU64],
    manifest: &'a str,
    compress: bool,
    progress: &'a dyn Progress,
}

/// Requests a download connection keeps outstanding, so the session never idles for a
/// round trip between two batches.
const PIPELINE: usize = 2;

/// Take batches from the shared queue until it is empty.
async fn worker(
    conn: &mut Connection,
    queue: &Mutex<VecDeque<Batch>>,
    shared: &Shared<'_>,
) -> Result<()> {
    match serve_batches(conn, queue, shared).await {
        Err(e) => Err(conn.explain(e).await),
        ok => ok,
    }
}

async fn serve_batches(
    conn: &mut Connection,
    queue: &Mutex<VecDeque<Batch>>,
    shared: &Shared<'_>,
) -> Result<()> {
    let (reader, writer) = conn.halves();
    let mut buf = vec![0u8; CHUNK];
    let mut inflight = VecDeque::with_capacity(PIPELINE);
    loop {
        while inflight.len() < PIPELINE {
            let next = match queue.lock() {
                Ok(mut q) => q.pop_front(),
                Err(_) => None,
            };
            let Some(batch) = next else { break };
            let ranges = batch
                .ranges
                .iter()
                .map(|&(i, o, l)| (shared.remote_index[i], o, l))
                .collect();
            let request = Request::Read(protocol::Read {
                id: shared.manifest.to_string(),
                ranges,
                compress: shared.compress,
            });
            send(&mut *writer, &request).await?;
            inflight.push_back(batch);
        }
        let Some(batch) = inflight.pop_front() else {
            return Ok(());
        };
        read_answer::<Reading, _>(&mut *reader).await?;
        if shared.compress {
            let mut z = Inflate::new(&mut *reader);
            read_ranges(&mut z, &batch, shared, &mut buf).await?;
            z.finish().await.map_err(lost)?;
        } else {
            read_ranges(&mut *reader, &batch, shared, &mut buf).await?;
        }
    }
}

/// One read response: a range record and its bytes per requested range, then End.
async fn read_ranges<R: AsyncRead + Unpin>(
    reader: &mut R,
    batch: &Batch,
    shared: &Shared<'_>,
    buf: &mut [u8],
) -> Result<()> {
    for &(index, offset, len) in &batch.ranges {
        match Record::read(reader).await? {
            Record::Range {
                index: i,
                offset: o,
                len: l,
            } if i == shared.remote_index[index] && o == offset && l == len => {}
            Record::Abort(why) => return Err(remote_failure("aborted", &why)),
            other => {
                return Err(Error::protocol(format!(
                    "the receiver sent {other:?} where a file range was due"
                )))
            }
        }
        receive_range(reader, shared, index, offset, len, buf).await?;
    }
    match Record::read(reader).await? {
        Record::End { .. } => Ok(()),
        other => Err(Error::protocol(format!(
            "the receiver sent {other:?} after the last range"
        ))),
    }
}

async fn receive_range<R: AsyncRead + Unpin>(
    reader: &mut R,
    shared: &Shared<'_>,
    index: usize,
    offset: u64,
    len: u64,
    buf: &mut [u8],
) -> Result<()> {
    let staged = &shared.files[index];
    let (temp, name) = (&staged.temp, staged.final_path.display());
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(temp)
        .map_err(|e| crate::copy::local_dest::write_error("cannot write", temp, &e))?;
    let mut hash = Sha256::new();
    let mut at = offset;
    let mut left = len;
    while left > 0 {
        let want = buf.len().min(left as usize);
        reader.read_exact(&mut buf[..want]).await.map_err(lost)?;
        hash.update(&buf[..want]);
        // Page-cache writes of at most CHUNK bytes; not worth a blocking-pool hop.
        file.write_all_at(&buf[..want], at)
            .map_err(|e| crate::copy::local_dest::write_error("cannot write", temp, &e))?;
        shared.progress.advance(want as u64);
        at += want as u64;
        left -= want as u64;
    }
    let mut digest = [0u8; DIGEST_LEN];
    reader.read_exact(&mut digest).await.map_err(lost)?;
    if hash.finalize().as_slice() != digest {
        return Err(Error::transfer(format!("SHA-256 mismatch in {name}")).hint(DAMAGED));
    }
    let got = shared.received[index].fetch_add(len, Ordering::Relaxed) + len;
    if got == staged.size {
        shared
            .progress
            .file_done(staged.final_path.as_os_str().as_encoded_bytes(), got);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const KIB: u64 = 1024;
    const MIB: u64 = 1024 * KIB;

    #[test]
    fn by_default_sessions_grow_with_the_download_up_to_eight() {
        let auto = |bytes| connections_for(bytes, DownloadSessions::Auto);
        assert_eq!(auto(0), 1);
        assert_eq!(auto(512 * KIB), 1);
        assert_eq!(auto(512 * KIB + 1), 2);
        assert_eq!(auto(2 * MIB), 4);
        assert_eq!(auto(4 * MIB), 8);
        assert_eq!(auto(64 * MIB), 8);
        assert_eq!(auto(u64::MAX), 8);
    }

    #[test]
    fn parallel_caps_the_sessions_and_small_downloads_still_take_few() {
        let at_most = |bytes, n| connections_for(bytes, DownloadSessions::AtMost(n));
        assert_eq!(at_most(64 * MIB, 16), 16);
        assert_eq!(at_most(64 * MIB, 3), 3);
        assert_eq!(at_most(MIB, 16), 4);
        assert_eq!(at_most(0, 16), 1);
    }
}
