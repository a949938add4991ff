//! The local stdin, for commands that forward it (`proxy`, `exec`).

use tokio::sync::mpsc;

/// stdin, read on a thread of its own. tokio's stdin reads on the runtime's blocking
/// pool, and a read that never returns (the destination closed first, stdin still open)
/// would hold up the runtime's shutdown; this thread dies with the process instead.
/// Bounded: at most 4 chunks of `size` bytes wait for the session.
pub(crate) fn chunks(size: usize) -> mpsc::Receiver<std::io::Result<Vec<u8>>> {
    let (tx, rx) = mpsc::channel(4);
    std::thread::spawn(move || {
        let mut stdin = std::io::stdin().lock();
        loop {
            let mut buf = vec![0u8; size];
            let sent = match std::io::Read::read(&mut stdin, &mut buf) {
                Ok(0) => return,
                Ok(n) => {
                    buf.truncate(n);
                    tx.blocking_send(Ok(buf))
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => tx.blocking_send(Err(e)),
            };
            if sent.is_err() {
                return;
            }
        }
    });
    rx
}
