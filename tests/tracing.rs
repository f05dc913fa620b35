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
