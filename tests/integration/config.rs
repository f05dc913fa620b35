//! Settings from a file (feature `serde`): round trips through TOML and JSON, every rejected
//! input with its message, and a loaded configuration doing what it says.

use std::time::Duration;

use hyper_client_cache::{
    BadSignaturePolicy, BreakerConfig, CacheConfig, CacheLayer, CacheStatus, ExpireAfter,
    ExpiryValue, KeyConfig, MemoryStore, UrlRule,
};

use crate::common::*;

fn full() -> CacheConfig {
    CacheConfig {
        shared: Some(true),
        shared_set_cookie: Some(true),
        expire_after: Some(ExpiryValue(ExpireAfter::Duration(Duration::from_secs(300)))),
        urls: vec![
            UrlRule {
                pattern: "static.example.com/*".into(),
                expire_after: ExpiryValue(ExpireAfter::Never),
            },
            UrlRule {
                pattern: "api.example.com/live/*".into(),
                expire_after: ExpiryValue(ExpireAfter::DoNotCache),
            },
        ],
        cache_control: Some(false),
        allowed_methods: Some(vec!["GET".into(), "HEAD".into()]),
        allowed_statuses: Some(vec![200, 404]),
        ignored_parameters: vec!["api_key".into()],
        match_headers: vec!["accept-language".into()],
        sensitive_headers: vec!["authorization".into(), "x-api-key".into()],
        max_body_size: Some(1 << 20),
        max_blob_size: Some(3 << 20),
        store_timeout: Some(Duration::from_millis(250)),
        coalesce: Some(true),
        coalesce_timeout: Some(Duration::from_secs(5)),
        hit_for_pass: Some(Duration::from_secs(3)),
        refresh_timeout: Some(Duration::from_secs(10)),
        max_refreshes: Some(8),
        serve_stale_on_error: Some(Duration::from_secs(3600)),
        mac: Some(hyper_client_cache::Mac::HmacSha256),
        #[cfg(any(feature = "lz4", feature = "zstd"))]
        compression: Some(hyper_client_cache::CompressionConfig {
            enabled: Some(true),
            codec: Some(hyper_client_cache::Codec::default()),
            min_size: Some(4096),
            when_encrypted: Some(false),
        }),
        on_bad_signature: Some(BadSignaturePolicy::Refetch),
        read_only: Some(false),
        fail_closed: Some(false),
        cache_status_header: Some(true),
        circuit_breaker: Some(BreakerConfig {
            enabled: Some(true),
            failures: Some(3),
            open_for: Some(Duration::from_millis(500)),
            max_open_for: Some(Duration::from_secs(2)),
        }),
        tag_header: Some("x-tags".into()),
        keep_tag_headers: Some(false),
        key: Some(KeyConfig {
            env: "HTTP_CACHE_KEY".into(),
            previous_env: vec!["HTTP_CACHE_KEY_OLD".into()],
            encrypt: true,
        }),
    }
}

#[test]
fn every_setting_round_trips_through_toml_and_json() {
    let config = full();
    let toml_text = toml::to_string(&config).unwrap();
    assert!(
        toml_text.contains("store_timeout = \"250ms\""),
        "{toml_text}"
    );
    assert!(
        toml_text.contains("expire_after = \"never\""),
        "{toml_text}"
    );
    assert_eq!(toml::from_str::<CacheConfig>(&toml_text).unwrap(), config);
    let json = serde_json::to_string(&config).unwrap();
    assert_eq!(serde_json::from_str::<CacheConfig>(&json).unwrap(), config);
    // An empty file is the defaults.
    assert_eq!(
        toml::from_str::<CacheConfig>("").unwrap(),
        CacheConfig::default()
    );
}

#[test]
fn a_hand_written_toml_file_reads() {
    let config: CacheConfig = toml::from_str(
        r#"
        shared = true
        expire_after = "1h 30m"
        store_timeout = "500ms"
        mac = "hmac-sha256"
        on_bad_signature = "refetch"

        [[urls]]
        pattern = "static.example.com/*"
        expire_after = "7days"

        [circuit_breaker]
        failures = 3

        [key]
        env = "HTTP_CACHE_KEY"
        "#,
    )
    .unwrap();
    assert_eq!(
        config.expire_after,
        Some(ExpiryValue(ExpireAfter::Duration(Duration::from_secs(
            5400
        ))))
    );
    assert_eq!(
        config.urls[0].expire_after,
        ExpiryValue(ExpireAfter::Duration(Duration::from_secs(7 * 86_400)))
    );
    assert_eq!(config.circuit_breaker.unwrap().failures, Some(3));
    assert_eq!(config.mac, Some(hyper_client_cache::Mac::HmacSha256));
    assert!(toml::from_str::<CacheConfig>("mac = \"md5\"").is_err());
}

#[test]
fn rejected_inputs_say_what_is_wrong() {
    let unknown = toml::from_str::<CacheConfig>("expire_afterr = \"5m\"").unwrap_err();
    assert!(unknown.to_string().contains("expire_afterr"), "{unknown}");
    let nested = toml::from_str::<CacheConfig>("[circuit_breaker]\nfailurez = 3").unwrap_err();
    assert!(nested.to_string().contains("failurez"), "{nested}");
    let duration = toml::from_str::<CacheConfig>("store_timeout = \"5 parsecs\"").unwrap_err();
    assert!(
        duration
            .to_string()
            .contains("invalid duration `5 parsecs`"),
        "{duration}"
    );
    let expiry = serde_json::from_str::<CacheConfig>(r#"{"expire_after": "soon"}"#).unwrap_err();
    assert!(
        expiry.to_string().contains("invalid duration `soon`"),
        "{expiry}"
    );
    let policy = toml::from_str::<CacheConfig>("on_bad_signature = \"ignore\"").unwrap_err();
    assert!(policy.to_string().contains("ignore"), "{policy}");

    let layer = |config: &CacheConfig| CacheLayer::from_config(MemoryStore::default(), config);
    let glob: CacheConfig =
        toml::from_str("[[urls]]\npattern = \"a/[b\"\nexpire_after = \"1m\"").unwrap();
    let err = layer(&glob).unwrap_err();
    assert_eq!(err.field(), "urls[0].pattern");
    assert!(err.to_string().starts_with("`urls[0].pattern`: "), "{err}");
    let header: CacheConfig = toml::from_str("match_headers = [\"bad header\"]").unwrap();
    let err = layer(&header).unwrap_err();
    assert_eq!(
        err.to_string(),
        "`match_headers[0]`: `bad header` is not a header name"
    );
    let status: CacheConfig = toml::from_str("allowed_statuses = [200, 99]").unwrap();
    assert_eq!(
        layer(&status).unwrap_err().to_string(),
        "`allowed_statuses[1]`: 99 is not a status code"
    );
    let key: CacheConfig = toml::from_str("[key]\nenv = \"HCC_CONFIG_TEST_SURELY_UNSET\"").unwrap();
    let err = layer(&key).unwrap_err();
    assert_eq!(err.field(), "key.env");
    assert!(
        chain(&err).contains("HCC_CONFIG_TEST_SURELY_UNSET"),
        "{}",
        chain(&err)
    );
    let refresh: CacheConfig = toml::from_str("refresh_timeout = \"0s\"").unwrap();
    let err = layer(&refresh).unwrap_err();
    assert_eq!(err.field(), "refresh_timeout");
    assert!(err.to_string().contains("more than zero"), "{err}");
    let breaker: CacheConfig = toml::from_str("[circuit_breaker]\nfailures = 0").unwrap();
    assert_eq!(
        layer(&breaker).unwrap_err().field(),
        "circuit_breaker.failures"
    );
}

/// A loaded configuration does what it says: a lifetime for responses without one, a status
/// list, a URL rule.
#[tokio::test]
async fn a_loaded_configuration_applies() {
    let origin = Origin::start(|s| {
        let status = if s.uri.path() == "/missing" { 404 } else { 200 };
        http::Response::builder()
            .status(status)
            .body(http_body_util::Full::new(bytes::Bytes::from_static(b"x")))
            .unwrap()
    })
    .await;
    let config: CacheConfig = toml::from_str(&format!(
        r#"
        expire_after = "1m"
        cache_control = false
        allowed_statuses = [200]

        [[urls]]
        pattern = "{}/live/*"
        expire_after = "do_not_cache"
        "#,
        origin.addr
    ))
    .unwrap();
    let mut client =
        cached_client(CacheLayer::from_config(MemoryStore::default(), &config).unwrap());
    for path in ["/plain", "/missing", "/live/now"] {
        get(&mut client, &origin.url(path)).await.unwrap();
    }
    let mut again = Vec::new();
    for path in ["/plain", "/missing", "/live/now"] {
        again.push(get(&mut client, &origin.url(path)).await.unwrap().cache);
    }
    assert_eq!(again[0], Some(CacheStatus::Hit));
    assert_ne!(again[1], Some(CacheStatus::Hit), "404 is not in the list");
    assert_ne!(again[2], Some(CacheStatus::Hit), "the URL rule");
}

/// Settings that would load a cache that silently does not sign, never stores or never hits
/// are refused, each naming the setting (issue 27, item 10).
#[test]
fn settings_that_switch_protection_or_caching_off_are_refused() {
    // An explicit null key (a YAML `key:` left empty, a JSON template's placeholder) is not
    // "no key": it is refused where the file is read, so nothing loads an unsigned cache from it.
    let null_key = serde_json::from_str::<CacheConfig>(r#"{"key": null}"#).unwrap_err();
    assert!(null_key.to_string().contains("`key`"), "{null_key}");
    assert!(null_key.to_string().contains("null"), "{null_key}");
    // Absent is what means unsigned, and a null elsewhere is the default as before.
    assert_eq!(
        serde_json::from_str::<CacheConfig>(r#"{"shared": null}"#).unwrap(),
        CacheConfig::default()
    );

    let refused = |json: &str, field: &str, says: &str| {
        let config: CacheConfig = serde_json::from_str(json).unwrap();
        let err = CacheLayer::from_config(MemoryStore::default(), &config)
            .err()
            .unwrap_or_else(|| panic!("{json} loaded"));
        assert_eq!(err.field(), field, "{json}: {err}");
        assert!(err.to_string().contains(says), "{json}: {err}");
        assert!(
            err.to_string().starts_with(&format!("`{field}`: ")),
            "{err}"
        );
    };
    refused(r#"{"max_body_size": 0}"#, "max_body_size", "at least 1");
    // Below what the default body size needs (head room and encryption overhead).
    refused(r#"{"max_blob_size": 1}"#, "max_blob_size", "at least");
    refused(
        r#"{"max_blob_size": 8388608}"#,
        "max_blob_size",
        "max_body_size",
    );
    // Below what a configured body size needs: 1 MiB of body, 1 MiB of head room, the segment
    // overhead of an encrypted body (17 segments of 28 bytes).
    let least = (1 << 20) + (1 << 20) + 17 * 37;
    refused(
        &format!(
            r#"{{"max_body_size": 1048576, "max_blob_size": {}}}"#,
            least - 1
        ),
        "max_blob_size",
        &format!("at least {least}"),
    );
    refused(r#"{"allowed_methods": []}"#, "allowed_methods", "empty");
    refused(r#"{"allowed_statuses": []}"#, "allowed_statuses", "empty");
    refused(r#"{"store_timeout": "0s"}"#, "store_timeout", "zero");
    refused(r#"{"coalesce_timeout": "0s"}"#, "coalesce_timeout", "zero");
    refused(
        r#"{"coalesce": false, "coalesce_timeout": "5s"}"#,
        "coalesce_timeout",
        "coalesce",
    );
}

/// What is refused is the edge only: the least blob size for a body size, one byte of body,
/// the defaults written out by `Serialize` (JSON and TOML), and `full()` load.
#[test]
fn valid_settings_at_the_edges_still_load() {
    let loads = |config: &CacheConfig| {
        if let Err(e) = CacheLayer::from_config(MemoryStore::default(), config) {
            panic!("{config:?}: {e}");
        }
    };
    let least = (1 << 20) + (1 << 20) + 17 * 37;
    loads(
        &serde_json::from_str(&format!(
            r#"{{"max_body_size": 1048576, "max_blob_size": {least}}}"#
        ))
        .unwrap(),
    );
    loads(&serde_json::from_str(r#"{"max_body_size": 1}"#).unwrap());
    loads(&serde_json::from_str(r#"{"max_blob_size": 100000000}"#).unwrap());
    loads(
        &serde_json::from_str(r#"{"allowed_methods": ["GET"], "allowed_statuses": [200]}"#)
            .unwrap(),
    );
    loads(&serde_json::from_str(r#"{"store_timeout": "1ms", "coalesce": true}"#).unwrap());
    loads(&serde_json::from_str(r#"{"coalesce": false}"#).unwrap());
    // The defaults, written out and read back: an absent key is written as nothing, not `null`.
    let json = serde_json::to_string(&CacheConfig::default()).unwrap();
    assert!(!json.contains("\"key\""), "{json}");
    let back: CacheConfig = serde_json::from_str(&json).unwrap();
    assert_eq!(back, CacheConfig::default());
    loads(&back);
    // Every other setting of `full()` (its key variables are not set here).
    let mut all = full();
    all.key = None;
    loads(&all);
}

/// The messages of an error and of its `source()` chain, as a reporter (anyhow's `{:#}`)
/// prints them.
fn messages(err: &(dyn std::error::Error + 'static)) -> Vec<String> {
    let mut out = Vec::new();
    let mut next = Some(err);
    while let Some(e) = next {
        out.push(e.to_string());
        next = e.source();
    }
    out
}

fn chain(err: &(dyn std::error::Error + 'static)) -> String {
    messages(err).join(": ")
}

/// Each message of the chain says something the others do not: an error shows its source or
/// returns it from `source()`, never both (Rust API guidelines, C-GOOD-ERR).
fn assert_no_repeats(err: &(dyn std::error::Error + 'static)) {
    let messages = messages(err);
    for (i, outer) in messages.iter().enumerate() {
        for inner in &messages[i + 1..] {
            assert!(
                !outer.contains(inner.as_str()),
                "{outer:?} repeats its source {inner:?}: {messages:?}"
            );
        }
    }
}

/// #29: `ConfigError` printed its cause and returned it from `source()`, so anyhow printed the
/// key's message twice (and a pattern's three times, through `PatternError`).
#[test]
fn error_chains_never_repeat_a_message() {
    let layer = |config: &CacheConfig| CacheLayer::from_config(MemoryStore::default(), config);
    let glob: CacheConfig =
        toml::from_str("[[urls]]\npattern = \"a/[b\"\nexpire_after = \"1m\"").unwrap();
    let err = layer(&glob).unwrap_err();
    assert_no_repeats(&err);
    assert_eq!(messages(&err).len(), 3, "{:?}", messages(&err));
    assert!(chain(&err).contains("a/[b"), "{}", chain(&err));

    let key: CacheConfig = toml::from_str("[key]\nenv = \"HCC_CONFIG_TEST_SURELY_UNSET\"").unwrap();
    let err = layer(&key).unwrap_err();
    assert_no_repeats(&err);
    assert_eq!(messages(&err).len(), 2, "{:?}", messages(&err));

    let pattern = hyper_client_cache::UrlPattern::new("a/{b").unwrap_err();
    assert_no_repeats(&pattern);
    let short = hyper_client_cache::SecretKey::new("short").unwrap_err();
    assert_no_repeats(&short);
    let header: CacheConfig = toml::from_str("match_headers = [\"bad header\"]").unwrap();
    assert_no_repeats(&layer(&header).unwrap_err());
}
