//! A real OpenSSH server for the ssh tests (tests/proxy.rs) and the proxy bench
//! (benches/ssh_proxy.rs, which includes this file by path).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

/// A real OpenSSH server on 127.0.0.1 with its own host key, accepting one key the test
/// made, for the user the tests run as. Killed on drop.
pub struct Sshd {
    pub dir: tempfile::TempDir,
    pub port: u16,
    child: tokio::process::Child,
}

const SSHD: &str = "/usr/sbin/sshd";

fn keygen(path: &Path) {
    let ok = std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(path)
        .status()
        .expect("ssh-keygen runs (openssh-client; scripts/test installs it)")
        .success();
    assert!(ok);
}

impl Sshd {
    pub async fn start() -> Sshd {
        assert!(
            Path::new(SSHD).exists(),
            "{SSHD} is missing: scripts/test installs openssh-server"
        );
        // sshd run by root insists on its privilege separation directory, which the
        // Debian service creates at start; no service runs here.
        if nix_is_root() {
            std::fs::create_dir_all("/run/sshd").unwrap();
        }
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        keygen(&d.join("host"));
        keygen(&d.join("client"));
        std::fs::copy(d.join("client.pub"), d.join("authorized_keys")).unwrap();
        for attempt in 0.. {
            let port = free_port();
            let config = format!(
                "ListenAddress 127.0.0.1:{port}\nHostKey {host}\nAuthorizedKeysFile {keys}\n\
                 PidFile none\nUsePAM no\nStrictModes no\nPasswordAuthentication no\n\
                 KbdInteractiveAuthentication no\nPermitRootLogin prohibit-password\n\
                 Subsystem sftp internal-sftp\nLogLevel ERROR\n",
                host = d.join("host").display(),
                keys = d.join("authorized_keys").display(),
            );
            std::fs::write(d.join("sshd_config"), config).unwrap();
            let mut child = tokio::process::Command::new(SSHD)
                .args(["-D", "-e", "-f"])
                .arg(d.join("sshd_config"))
                .stdin(Stdio::null())
                .kill_on_drop(true)
                .spawn()
                .expect("sshd starts");
            for _ in 0..100 {
                if tokio::net::TcpStream::connect(("127.0.0.1", port))
                    .await
                    .is_ok()
                {
                    return Sshd { dir, port, child };
                }
                if child.try_wait().unwrap().is_some() {
                    break; // the port was taken meanwhile: another one
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            let _ = child.kill().await;
            assert!(attempt < 5, "sshd did not start listening");
        }
        unreachable!()
    }

    /// The client key sshd accepts.
    pub fn key(&self) -> PathBuf {
        self.dir.path().join("client")
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

fn nix_is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
