//! Graceful shutdown: SIGTERM or SIGINT flips a watch channel every part of a service listens to.

use tokio::sync::watch;

/// A receiver that becomes `true` on SIGTERM or SIGINT (or when the sender is used directly).
pub fn on_signals() -> (watch::Sender<bool>, watch::Receiver<bool>) {
    let (sender, receiver) = watch::channel(false);
    let signal_sender = sender.clone();
    tokio::spawn(async move {
        let Ok(mut terminate) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) else {
            return;
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT: shutting down"),
            _ = terminate.recv() => tracing::info!("SIGTERM: shutting down"),
        }
        let _ = signal_sender.send(true);
    });
    (sender, receiver)
}
