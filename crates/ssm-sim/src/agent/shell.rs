//! Shell-type plugins (§8): Standard_Stream and InteractiveCommands run in a real pty
//! (echo, CRLF, ^C as a signal), NonInteractiveCommands runs the command directly with
//! no stdin and sends its merged output after it exits.

use super::channel::Outgoing;
use super::InputResult;
use ssm_proto::{PayloadType, SizeData, STREAM_DATA_PAYLOAD_SIZE};
use std::path::PathBuf;
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

pub struct Pty {
    writer: pty_process::OwnedWritePty,
}

/// Where an instance's processes run: its home (also their working directory) and,
/// for an instance that lacks some commands, a PATH without them.
#[derive(Debug, Clone, Default)]
pub struct ProcessEnv {
    pub home: Option<PathBuf>,
    pub path: Option<String>,
    pub file_size_limit: Option<u64>,
}

/// In a child between fork and exec: make it an instance's process rather than the
/// simulator's. The agent runs as a service, so its processes start with every signal
/// at its default action; ours would otherwise inherit what the process that started
/// the simulator ignores (SIGINT for a background job of a non-interactive shell,
/// SIGHUP under nohup), and a shell cannot trap a signal ignored on entry: ^C or a
/// hang-up would silently do nothing. Then the instance's quota in miniature.
fn become_instance_process(file_size_limit: Option<u64>) -> std::io::Result<()> {
    use nix::sys::signal::{signal, SigHandler, Signal};
    for sig in Signal::iterator().filter(|s| ![Signal::SIGKILL, Signal::SIGSTOP].contains(s)) {
        // SAFETY: SIG_DFL installs no handler; nothing runs in this process afterwards
        // but exec.
        unsafe { signal(sig, SigHandler::SigDfl) }.map_err(std::io::Error::from)?;
    }
    if let Some(bytes) = file_size_limit {
        nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_FSIZE, bytes, bytes)
            .map_err(std::io::Error::from)?;
    }
    Ok(())
}

impl ProcessEnv {
    /// Set up a (non-pty) command to run as this instance's processes do.
    pub fn apply(&self, cmd: &mut tokio::process::Command) {
        cmd.envs(self.vars());
        if let Some(h) = &self.home {
            cmd.current_dir(h);
        }
        let limit = self.file_size_limit;
        // SAFETY: sigaction and setrlimit are async-signal-safe and touch no shared
        // state.
        unsafe {
            cmd.pre_exec(move || become_instance_process(limit));
        }
    }

    /// Environment every shell-type process gets, as the agent sets it (§8.1). An
    /// instance with a home also gets a temporary directory of its own (`HOME.tmp`),
    /// as a real instance has its own /tmp, so tests can see what it leaves there.
    fn vars(&self) -> Vec<(String, String)> {
        let mut env = vec![
            ("TERM".to_string(), "xterm-256color".to_string()),
            ("LANG".to_string(), "C.UTF-8".to_string()),
        ];
        if let Some(h) = &self.home {
            env.push(("HOME".to_string(), h.display().to_string()));
            let tmp = tmp_dir(h);
            if std::fs::create_dir_all(&tmp).is_ok() {
                env.push(("TMPDIR".to_string(), tmp.display().to_string()));
            }
        }
        if let Some(p) = &self.path {
            env.push(("PATH".to_string(), p.clone()));
        }
        env
    }
}

/// The temporary directory of the instance whose home is `home`.
pub fn tmp_dir(home: &std::path::Path) -> PathBuf {
    let mut name = home.as_os_str().to_owned();
    name.push(".tmp");
    PathBuf::from(name)
}

/// For an instance whose commands differ from this machine's: a directory of links to
/// every command on this machine's PATH except the missing ones, plus the instance's
/// own scripts, used as the instance's PATH. It lives beside the instance's home (under
/// `home_root`, or the system temp dir) and is made once.
pub fn instance_path(
    instance: &crate::config::InstanceConfig,
    home_root: Option<&std::path::Path>,
) -> Result<Option<String>, String> {
    if instance.missing_commands.is_empty() && instance.own_commands.is_empty() {
        return Ok(None);
    }
    let dir = match home_root {
        Some(r) => r.join(format!("{}.bin", instance.id)),
        None => std::env::temp_dir().join(format!(
            "ssm-sim-{}-{}.bin",
            std::process::id(),
            instance.id
        )),
    };
    if !dir.exists() {
        let staging = dir.with_extension(format!("tmp{}", rand::random::<u32>()));
        std::fs::create_dir_all(&staging).map_err(|e| e.to_string())?;
        for (name, script) in &instance.own_commands {
            use std::os::unix::fs::PermissionsExt;
            let file = staging.join(name);
            std::fs::write(&file, script).map_err(|e| e.to_string())?;
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o755))
                .map_err(|e| e.to_string())?;
        }
        let path = std::env::var_os("PATH").unwrap_or_default();
        for d in std::env::split_paths(&path) {
            let Ok(entries) = std::fs::read_dir(&d) else {
                continue;
            };
            for e in entries.flatten() {
                let name = e.file_name();
                let missing = instance.missing_commands.iter().any(|m| {
                    name.to_str()
                        .is_some_and(|n| n == m || n.starts_with(&format!("{m}.")))
                });
                let link = staging.join(&name);
                if !missing && !link.exists() {
                    let _ = std::os::unix::fs::symlink(e.path(), link);
                }
            }
        }
        // Several sessions may race to make it; the first rename wins.
        if std::fs::rename(&staging, &dir).is_err() {
            let _ = std::fs::remove_dir_all(&staging);
        }
    }
    Ok(Some(dir.display().to_string()))
}

impl Pty {
    /// `command: None` is the default shell session.
    pub fn start(
        out: Arc<Outgoing>,
        command: Option<&str>,
        penv: ProcessEnv,
        quirks: bool,
        done: mpsc::Sender<String>,
        cancel: CancellationToken,
    ) -> Result<Pty, String> {
        let (pty, pts) = pty_process::open().map_err(|e| e.to_string())?;
        let _ = pty.resize(pty_process::Size::new(100, 300));
        let mut cmd = pty_process::Command::new("sh");
        if let Some(c) = command {
            cmd = cmd.arg("-c").arg(c);
        }
        cmd = cmd.envs(penv.vars()).kill_on_drop(true);
        if let Some(h) = &penv.home {
            cmd = cmd.current_dir(h);
        }
        let limit = penv.file_size_limit;
        // SAFETY: sigaction and setrlimit are async-signal-safe and touch no shared
        // state.
        cmd = unsafe { cmd.pre_exec(move || become_instance_process(limit)) };
        let mut child = cmd.spawn(pts).map_err(|e| e.to_string())?;
        let (mut reader, writer) = pty.into_split();
        tokio::spawn(async move {
            let mut buf = vec![0u8; STREAM_DATA_PAYLOAD_SIZE];
            let mut carry = Vec::new();
            loop {
                out.wait_active().await;
                let n = tokio::select! {
                    r = reader.read(&mut buf) => r.unwrap_or(0),
                    _ = cancel.cancelled() => { let _ = child.kill().await; return; }
                };
                if n == 0 {
                    break; // EIO once the last process holding the pts exited
                }
                let chunk = process_output(&mut carry, &buf[..n], quirks);
                out.send(PayloadType::Output, chunk).await;
                out.pace().await;
            }
            if !quirks && !carry.is_empty() {
                out.send(PayloadType::Output, std::mem::take(&mut carry))
                    .await;
            }
            let _ = child.wait().await;
            let _ = done.send(String::new()).await;
        });
        Ok(Pty { writer })
    }

    pub async fn input(&mut self, payload: &[u8]) -> InputResult {
        match self.writer.write_all(payload).await {
            Ok(()) => InputResult::Ok,
            Err(e) => InputResult::Failed(e.to_string()),
        }
    }

    pub fn resize(&mut self, size: SizeData) {
        let rows = size.rows.min(u16::MAX as u32) as u16;
        let cols = size.cols.min(u16::MAX as u32) as u16;
        let _ = self.writer.resize(pty_process::Size::new(rows, cols));
    }
}

pub struct Exec {
    pid: Option<u32>,
}

impl Exec {
    /// The command line is split like a shell would (no shell runs) and exec'd with no
    /// stdin; stdout and stderr go to one file that is sent after exit (§8.1) — or, with
    /// `separate`, stream live as Output and StdErr followed by `EXIT_CODE: n`.
    #[allow(clippy::too_many_arguments)]
    pub fn start(
        out: Arc<Outgoing>,
        command: &str,
        separate: bool,
        penv: ProcessEnv,
        quirks: bool,
        done: mpsc::Sender<String>,
        cancel: CancellationToken,
    ) -> Result<Exec, String> {
        let argv = shlex::split(command)
            .filter(|a| !a.is_empty())
            .ok_or_else(|| format!("invalid command: {command}"))?;
        if separate {
            return Exec::start_separate(out, &argv, penv, done, cancel);
        }
        let file = tempfile::tempfile().map_err(|e| e.to_string())?;
        let mut cmd = tokio::process::Command::new(&argv[0]);
        cmd.args(&argv[1..])
            .stdin(std::process::Stdio::null())
            .stdout(file.try_clone().map_err(|e| e.to_string())?)
            .stderr(file.try_clone().map_err(|e| e.to_string())?)
            .kill_on_drop(true);
        penv.apply(&mut cmd);
        let (mut child, pid) = match cmd.spawn() {
            Ok(c) => {
                let pid = c.id();
                (c, pid)
            }
            Err(e) => {
                // Errors before the command starts reach the client as StdErr text.
                let msg = format!("failed to run commands: {e}");
                let out2 = out.clone();
                tokio::spawn(async move {
                    out2.send(PayloadType::StdErr, msg.into_bytes()).await;
                    let _ = done.send(String::new()).await;
                });
                return Ok(Exec { pid: None });
            }
        };
        tokio::spawn(async move {
            tokio::select! {
                _ = child.wait() => {}
                _ = cancel.cancelled() => { let _ = child.kill().await; return; }
            }
            let mut file = tokio::fs::File::from_std(file);
            let _ = tokio::io::AsyncSeekExt::rewind(&mut file).await;
            let mut buf = vec![0u8; STREAM_DATA_PAYLOAD_SIZE];
            let mut carry = Vec::new();
            loop {
                out.wait_active().await;
                let n = file.read(&mut buf).await.unwrap_or(0);
                if n == 0 {
                    break;
                }
                let chunk = process_output(&mut carry, &buf[..n], quirks);
                out.send(PayloadType::Output, chunk).await;
                out.pace().await;
            }
            let _ = done.send(String::new()).await;
        });
        Ok(Exec { pid })
    }

    fn start_separate(
        out: Arc<Outgoing>,
        argv: &[String],
        penv: ProcessEnv,
        done: mpsc::Sender<String>,
        cancel: CancellationToken,
    ) -> Result<Exec, String> {
        let mut cmd = tokio::process::Command::new(&argv[0]);
        cmd.args(&argv[1..])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true);
        penv.apply(&mut cmd);
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("failed to run commands: {e}"))?;
        let pid = child.id();
        // These pipe readers do not sleep between messages, unlike every other agent
        // sender (§12).
        let pump = |r: Option<Box<dyn tokio::io::AsyncRead + Send + Unpin>>, pt: PayloadType| {
            let out = out.clone();
            tokio::spawn(async move {
                let Some(mut r) = r else { return };
                let mut buf = vec![0u8; STREAM_DATA_PAYLOAD_SIZE];
                while let Ok(n) = r.read(&mut buf).await {
                    if n == 0 {
                        return;
                    }
                    out.send(pt, buf[..n].to_vec()).await;
                }
            })
        };
        let so = pump(
            child.stdout.take().map(|r| Box::new(r) as _),
            PayloadType::Output,
        );
        let se = pump(
            child.stderr.take().map(|r| Box::new(r) as _),
            PayloadType::StdErr,
        );
        tokio::spawn(async move {
            let status = tokio::select! {
                s = child.wait() => s,
                _ = cancel.cancelled() => { let _ = child.kill().await; return; }
            };
            let _ = so.await;
            let _ = se.await;
            let code = status.ok().and_then(|s| s.code()).unwrap_or(-1);
            out.send(
                PayloadType::ExitCode,
                format!("EXIT_CODE: {code}").into_bytes(),
            )
            .await;
            let _ = done.send(String::new()).await;
        });
        Ok(Exec { pid })
    }

    /// No stdin: only ^C and ^\ mean anything, as signals to the process.
    pub fn input(&mut self, payload: &[u8]) -> InputResult {
        use nix::sys::signal::{kill, Signal};
        use nix::unistd::Pid;
        if let Some(pid) = self.pid {
            for b in payload {
                let sig = match b {
                    0x03 => Signal::SIGINT,
                    0x1c => Signal::SIGQUIT,
                    _ => continue,
                };
                let _ = kill(Pid::from_raw(pid as i32), sig);
            }
        }
        InputResult::Ok
    }
}

/// The agent's UTF-8 pass over each output chunk (§8.3): valid characters go through;
/// an invalid byte goes through as-is unless it lies in the last three bytes, in which
/// case the rest is carried into the next chunk (so payloads reach 1027 bytes). With
/// `quirks`, a valid U+FFFD is mistaken for an error (only its first byte survives).
pub fn process_output(carry: &mut Vec<u8>, chunk: &[u8], quirks: bool) -> Vec<u8> {
    let mut buf = std::mem::take(carry);
    buf.extend_from_slice(chunk);
    let mut out = Vec::with_capacity(buf.len());
    let mut i = 0;
    while i < buf.len() {
        let (valid, size) = decode_one(&buf[i..]);
        let looks_bad = !valid || (quirks && size == 3 && buf[i..i + 3] == [0xef, 0xbf, 0xbd]);
        if looks_bad {
            if buf.len() - i < 4 {
                carry.extend_from_slice(&buf[i..]);
                break;
            }
            out.push(buf[i]);
        } else {
            out.extend_from_slice(&buf[i..i + size]);
        }
        i += size;
    }
    out
}

/// Decode one UTF-8 character: (valid, bytes consumed); invalid input consumes one.
fn decode_one(b: &[u8]) -> (bool, usize) {
    let want = match b[0] {
        0x00..=0x7f => 1,
        0xc2..=0xdf => 2,
        0xe0..=0xef => 3,
        0xf0..=0xf4 => 4,
        _ => return (false, 1),
    };
    if b.len() >= want && std::str::from_utf8(&b[..want]).is_ok() {
        (true, want)
    } else {
        (false, 1)
    }
}

#[cfg(test)]
mod tests {
    use super::process_output;

    #[test]
    fn ascii_passes_through() {
        let mut c = Vec::new();
        assert_eq!(process_output(&mut c, b"hello\r\n", true), b"hello\r\n");
        assert!(c.is_empty());
    }

    #[test]
    fn split_character_is_carried() {
        let mut c = Vec::new();
        let e = "é".as_bytes(); // c3 a9
        assert_eq!(process_output(&mut c, &[b'a', e[0]], true), b"a");
        assert_eq!(c, [e[0]]);
        assert_eq!(process_output(&mut c, &[e[1], b'b'], true), "éb".as_bytes());
    }

    #[test]
    fn replacement_character_is_mangled_with_quirks() {
        let mut c = Vec::new();
        let mut input = "\u{fffd}".as_bytes().to_vec();
        input.extend_from_slice(b"tail");
        assert_eq!(process_output(&mut c, &input, true), b"\xeftail");
        assert_eq!(process_output(&mut c, &input, false), input);
    }

    #[test]
    fn invalid_byte_early_is_emitted() {
        let mut c = Vec::new();
        assert_eq!(process_output(&mut c, b"\xffabcd", true), b"\xffabcd");
    }
}
