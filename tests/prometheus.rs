//! `examples/metrics.rs` run in a process of its own (the Prometheus recorder is global), and
//! its scrape parsed: the series a dashboard queries are there, with their values.

#[allow(dead_code)]
#[path = "../examples/metrics.rs"]
mod example;

#[tokio::test]
async fn the_prometheus_scrape_has_the_cache_series() {
    let scrape = example::run().await.unwrap();
    let value = |series: &str| -> Option<f64> {
        scrape
            .lines()
            .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
            .and_then(|l| l[series.len()..].trim().parse().ok())
    };
    assert_eq!(
        value(r#"http_cache_requests_total{status="miss"}"#),
        Some(1.0),
        "{scrape}"
    );
    assert_eq!(
        value(r#"http_cache_requests_total{status="hit"}"#),
        Some(1.0),
        "{scrape}"
    );
    assert_eq!(
        value(r#"http_cache_requests_total{status="not_cacheable"}"#),
        Some(1.0),
        "{scrape}"
    );
    assert_eq!(
        value(r#"http_cache_not_stored_total{reason="response_no_store"}"#),
        Some(1.0),
        "{scrape}"
    );
    assert_eq!(value("http_cache_stored_total"), Some(1.0), "{scrape}");
    assert!(
        scrape.contains("# HELP http_cache_requests_total"),
        "{scrape}"
    );
    assert!(
        scrape.contains(
            r#"http_cache_store_operation_duration_seconds{operation="get",outcome="ok""#
        ),
        "{scrape}"
    );
}
