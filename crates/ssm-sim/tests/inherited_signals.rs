//! The simulator started from a process that ignores SIGINT, SIGQUIT and SIGHUP, as a
//! background job of a non-interactive shell, nohup or some CI runners do. A real agent runs
//! as a service, so the commands it starts can be interrupted; the simulator's must be
//! too, or every ^C test would depend on how the test run was started.
//!
//! Its own test binary: ignoring signals is process-wide.

mod common;
use ssm_sim::{Sim, SimConfig};

fn ignore_signals() {
    use nix::sys::signal::{signal, SigHandler, Signal};
    for sig in [Signal::SIGINT, Signal::SIGQUIT, Signal::SIGHUP] {
        // SAFETY: SIG_IGN installs no handler.
        unsafe { signal(sig, SigHandler::SigIgn) }.unwrap();
    }
}

#[tokio::test]
async fn interactive_ctrl_c_works_when_the_simulator_ignores_sigint() {
    ignore_signals();
    let sim = Sim::start(SimConfig::default()).await.unwrap();
    common::signals::interactive(&sim).await;
}

#[tokio::test]
async fn non_interactive_ctrl_c_works_when_the_simulator_ignores_sigint() {
    ignore_signals();
    let sim = Sim::start(SimConfig::default()).await.unwrap();
    common::signals::non_interactive(&sim).await;
}

#[tokio::test]
async fn a_hang_up_ends_a_process_when_the_simulator_ignores_sighup() {
    ignore_signals();
    let sim = Sim::start(SimConfig::default()).await.unwrap();
    common::signals::hang_up(&sim).await;
}
