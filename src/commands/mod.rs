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
pub struct Signals {
    int: Option<Signal>,
    term: Option<Signal>,
    hup: Option<Signal>,
}

impl Signals {
    pub fn register() -> Signals {
        Signals {
            int: signal(SignalKind::interrupt()).ok(),
            term: signal(SignalKind::terminate()).ok(),
            hup: signal(SignalKind::hangup()).ok(),
        }
    }

    /// Resolves on the next SIGINT, SIGTERM or SIGHUP.
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
