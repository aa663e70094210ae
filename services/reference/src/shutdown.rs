//! Stopping in order. A trigger/signal pair per stage lets `serve` stop the
//! HTTP server first, then the outbox relay, then the worker, each after the
//! one before has finished, instead of tearing everything down at once.

use tokio::sync::watch;

/// Fires the paired [`Signal`]s; firing twice is harmless.
#[derive(Debug)]
pub(crate) struct Trigger(watch::Sender<bool>);

/// Completes once its [`Trigger`] fired (or was dropped: nobody is left to
/// say "keep going").
#[derive(Debug, Clone)]
pub(crate) struct Signal(watch::Receiver<bool>);

pub(crate) fn channel() -> (Trigger, Signal) {
    let (sender, receiver) = watch::channel(false);
    (Trigger(sender), Signal(receiver))
}

impl Trigger {
    pub(crate) fn fire(&self) {
        self.0.send_replace(true);
    }
}

impl Signal {
    pub(crate) async fn fired(mut self) {
        let _ = self.0.wait_for(|fired| *fired).await;
    }
}

/// Completes on SIGTERM (docker stop, Kubernetes) or SIGINT (Ctrl-C) and
/// says which.
pub(crate) async fn termination() -> &'static str {
    use tokio::signal::unix::{signal, SignalKind};
    let mut terminate = match signal(SignalKind::terminate()) {
        Ok(stream) => stream,
        Err(error) => {
            tracing::warn!(error = %error, "cannot listen for SIGTERM; only SIGINT stops the service");
            let _ = tokio::signal::ctrl_c().await;
            return "SIGINT";
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => "SIGINT",
        _ = terminate.recv() => "SIGTERM",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_signal_completes_after_its_trigger_fires_or_is_dropped() {
        let (trigger, signal) = channel();
        let waiting = tokio::spawn(signal.clone().fired());
        trigger.fire();
        waiting.await.unwrap();
        // Later subscribers see the fired state at once.
        signal.fired().await;

        let (trigger, signal) = channel();
        drop(trigger);
        signal.fired().await;
    }
}
