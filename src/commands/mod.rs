//! One module per subcommand, each a short orchestration over session/ and friends.

pub mod copy;
pub mod docs;
pub mod doctor;
pub mod exec;
pub(crate) mod fleet;
pub mod forward;
pub mod gc;
pub mod proxy;
mod stdin;

pub(crate) use crate::aws::context::{load_aws, Context};
/// What `main` hands every command for the sessions it opens (their ends, their counters).
pub use crate::session::Tracking;
use tokio::signal::unix::{signal, Signal, SignalKind};

/// SIGINT, SIGTERM and SIGHUP (a closed terminal; ssh ends its ProxyCommand with it),
/// registered the moment this is created. Registering lazily (inside
/// a future that has not been polled yet) leaves a window in which ^C kills the process
/// with the default action and the session is never ended; CI hit exactly that.
///
/// A signal that was ignored when ssmcp started stays ignored, as coreutils and the
/// contract of `nohup` and of a script's background jobs want: `nohup ssmcp …` goes on
/// after its terminal closes, and `ssmcp … &` in a script is not stopped by a ^C meant
/// for the script's foreground.
pub struct Signals {
    int: Option<Signal>,
    term: Option<Signal>,
    hup: Option<Signal>,
}

impl Signals {
    pub fn register() -> Signals {
        Signals {
            int: listen(SignalKind::interrupt()),
            term: listen(SignalKind::terminate()),
            hup: listen(SignalKind::hangup()),
        }
    }

    /// Resolves on the next SIGINT, SIGTERM or SIGHUP (of those not ignored at start).
    pub async fn recv(&mut self) {
        async fn next(s: &mut Option<Signal>) {
            match s {
                Some(s) => {
                    s.recv().await;
                }
                None => std::future::pending().await,
            }
        }
        tokio::select! {
            _ = next(&mut self.int) => {}
            _ = next(&mut self.term) => {}
            _ = next(&mut self.hup) => {}
        }
    }
}

fn listen(kind: SignalKind) -> Option<Signal> {
    if ignored(kind.as_raw_value()) {
        return None;
    }
    signal(kind).ok()
}

/// Whether `sig` is ignored now. Asked before this process installs its own handler
/// for it (tokio's never gives the disposition back), so "now" is "when we started".
fn ignored(sig: libc::c_int) -> bool {
    let mut current = std::mem::MaybeUninit::<libc::sigaction>::zeroed();
    // SAFETY: with a null new action, sigaction only writes the current one into
    // `current`, which is valid for writes and zero-initialised.
    let rc = unsafe { libc::sigaction(sig, std::ptr::null(), current.as_mut_ptr()) };
    // SAFETY: zeroed is a valid sigaction, and on success the kernel filled it in.
    rc == 0 && unsafe { current.assume_init() }.sa_sigaction == libc::SIG_IGN
}
