//! Logs (human or JSON) and the Prometheus metrics recorder.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

static METRICS: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the log subscriber once; later calls do nothing.
pub fn init_logs(format: &str, level: &str) {
    // An embedded broker's consensus library narrates elections at info: keep it to warnings by default.
    let spec = std::env::var("RUST_LOG").unwrap_or_else(|_| level.to_string());
    let spec = if spec.contains("openraft") { spec } else { format!("{spec},openraft=warn") };
    let filter =
        tracing_subscriber::EnvFilter::try_new(&spec).unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let result = if format == "json" {
        builder.json().try_init()
    } else {
        builder.with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())).try_init()
    };
    // Already installed (several services in one process): keep the first.
    let _ = result;
}

/// Installs the Prometheus recorder; call at start, before anything records a metric (metrics recorded
/// before a recorder exists are dropped).
pub fn init_metrics() {
    metrics_handle();
}

/// The process-wide Prometheus recorder (installed on first use).
pub fn metrics_handle() -> &'static PrometheusHandle {
    METRICS.get_or_init(|| {
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        // Fails only if another recorder was installed first; then this handle renders nothing new.
        let _ = metrics::set_global_recorder(recorder);
        handle
    })
}
