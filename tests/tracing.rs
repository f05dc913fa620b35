//! The `tracing` output of the cache. In a test binary of its own: tracing caches per-callsite
//! interest process-wide, and a test running on another thread without a subscriber could
//! otherwise have the callsites disabled before this test's subscriber is installed.

#[allow(dead_code)]
#[path = "integration/common.rs"]
mod common;

use std::sync::Arc;

use common::*;
use hyper_client_cache::{CacheLayer, MemoryStore};

/// Records span names and event messages (with their `key` field, if any).
#[derive(Clone, Default)]
struct Recorder(Arc<std::sync::Mutex<Vec<String>>>);

impl tracing::Subscriber for Recorder {
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, span: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        let mut lines = self.0.lock().unwrap();
        lines.push(format!("span {}", span.metadata().name()));
        tracing::span::Id::from_u64(lines.len() as u64)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, event: &tracing::Event<'_>) {
        struct Fields(String);
        impl tracing::field::Visit for Fields {
            fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
                if matches!(field.name(), "message" | "key") {
                    self.0.push_str(&format!(" {}={value:?}", field.name()));
                }
            }
        }
        let mut fields = Fields(String::new());
        event.record(&mut fields);
        self.0.lock().unwrap().push(format!("event{}", fields.0));
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

#[test]
fn lookups_decisions_and_stores_are_traced_with_the_key() {
    let recorder = Recorder::default();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let url = tracing::subscriber::with_default(recorder.clone(), || {
        rt.block_on(async {
            let origin = Origin::fixed("max-age=60", "traced").await;
            let clock = clock();
            let mut client = cached_client(
                CacheLayer::new(MemoryStore::with_clock(1 << 20, clock.clone()))
                    .secret_key(test_key())
                    .clock(clock.clone()),
            );
            let url = origin.url("/traced");
            get(&mut client, &url).await.unwrap();
            get(&mut client, &url).await.unwrap();
            url
        })
    });
    let lines = recorder.0.lock().unwrap().clone();
    let key = key_for(&url).to_string();
    let has = |needle: &str| lines.iter().any(|l| l.contains(needle) && l.contains(&key));
    assert!(
        lines.iter().filter(|l| *l == "span http_cache").count() >= 2,
        "{lines:#?}"
    );
    assert!(has("cache lookup"), "{lines:#?}");
    assert!(has("cache miss"), "{lines:#?}");
    assert!(has("stored"), "{lines:#?}");
    assert!(has("cache hit"), "{lines:#?}");
}

/// Records every field of every span and event, as text.
#[derive(Clone, Default)]
struct Everything(Arc<std::sync::Mutex<Vec<String>>>);

struct AllFields<'a>(&'a mut String);

impl tracing::field::Visit for AllFields<'_> {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        self.0.push_str(&format!(" {}={value:?}", field.name()));
    }
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        self.0.push_str(&format!(" {}={value}", field.name()));
    }
}

impl tracing::Subscriber for Everything {
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, span: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        let mut line = format!("span {}", span.metadata().name());
        span.record(&mut AllFields(&mut line));
        let mut lines = self.0.lock().unwrap();
        if ours(span.metadata()) {
            lines.push(line);
        }
        tracing::span::Id::from_u64(lines.len() as u64 + 1)
    }
    fn record(&self, _: &tracing::span::Id, values: &tracing::span::Record<'_>) {
        let mut line = String::from("record");
        values.record(&mut AllFields(&mut line));
        self.0.lock().unwrap().push(line);
    }
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, event: &tracing::Event<'_>) {
        let mut line = format!("event {}", event.metadata().target());
        event.record(&mut AllFields(&mut line));
        if ours(event.metadata()) {
            self.0.lock().unwrap().push(line);
        }
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

/// This crate's spans and events. (hyper-util's own pool logs print the URI's authority,
/// userinfo included: docs/security.md says not to put credentials there.)
fn ours(metadata: &tracing::Metadata<'_>) -> bool {
    metadata.target().starts_with("hyper_client_cache")
}

/// No secret reaches a log line, wherever the request carries it: URL userinfo, a redacted
/// parameter (also percent-encoded and in another case), an ignored parameter, the credential
/// headers, a configured sensitive header and a field no list names (default deny), on a
/// miss, a hit and a Vary lookup.
#[test]
fn no_secret_in_any_log_field() {
    use http::Request;
    let recorder = Everything::default();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    tracing::subscriber::with_default(recorder.clone(), || {
        rt.block_on(async {
            let origin = Origin::start(|_| {
                http::Response::builder()
                    .header("cache-control", "max-age=60")
                    .header("vary", "authorization, cookie, x-tenant-secret, x-session-token")
                    .body(http_body_util::Full::new(bytes::Bytes::from_static(b"ok")))
                    .unwrap()
            })
            .await;
            let mut client = cached_client(
                CacheLayer::new(MemoryStore::default())
                    .secret_key(test_key())
                    .ignored_parameters(["api_key"])
                    .sensitive_headers(
                        ["authorization", "cookie", "proxy-authorization", "x-tenant-secret"]
                            .map(http::HeaderName::from_static),
                    ),
            );
            let url = format!(
                "http://user:SECRET-userinfo@{}/p?token=SECRET-token&ACCESS%5FTOKEN=SECRET-encoded&api_key=SECRET-ignored&page=2",
                origin.addr
            );
            for _ in 0..2 {
                let request = Request::get(url.as_str())
                    .header("authorization", "Bearer SECRET-authorization")
                    .header("cookie", "session=SECRET-cookie")
                    .header("proxy-authorization", "Basic SECRET-proxy")
                    .header("x-tenant-secret", "SECRET-custom")
                    .header("x-session-token", "SECRET-unlisted")
                    .body(http_body_util::Empty::<bytes::Bytes>::new())
                    .unwrap();
                send(&mut client, request).await.unwrap();
            }
        })
    });
    let lines = recorder.0.lock().unwrap().clone();
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("span http_cache") && l.contains("page=2")),
        "{lines:#?}"
    );
    assert!(
        lines.iter().filter(|l| l.starts_with("event")).count() >= 4,
        "{lines:#?}"
    );
    let leaks: Vec<_> = lines.iter().filter(|l| l.contains("SECRET")).collect();
    assert!(leaks.is_empty(), "secrets in the logs: {leaks:#?}");
}
