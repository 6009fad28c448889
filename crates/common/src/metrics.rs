//! The process's Prometheus metrics recorder (`metrics` facade, exporter
//! `metrics-exporter-prometheus`); every service renders `GET /metrics`
//! from it.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

/// The process's Prometheus recorder, installed as the global `metrics`
/// recorder on first use. A second service in the same process (tests)
/// shares the first recorder. Render with [`PrometheusHandle::render`]
/// (Prometheus text exposition format).
pub fn metrics_handle() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        let _ = metrics::set_global_recorder(recorder);
        handle
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn counters_show_up_in_the_rendering() {
        let h = super::metrics_handle();
        metrics::counter!("ota_common_test_total").increment(3);
        assert!(h.render().contains("ota_common_test_total 3"), "{}", h.render());
    }
}
