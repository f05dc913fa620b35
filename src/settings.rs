//! Settings from a file (feature `serde`): [`CacheConfig`], every setting of [`CacheLayer`] that is
//! data, in a form any serde format reads (TOML, YAML, JSON, ...), and
//! [`CacheLayer::from_config`].

use std::fmt;
use std::time::Duration;

use http::{HeaderName, Method, StatusCode};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::config::{least_max_blob_size, OnBadSignature, DEFAULT_MAX_BODY_SIZE};
use crate::controls::{ExpireAfter, PatternError};
use crate::envelope::{KeyError, KeyRing, SecretKey};
use crate::inspect::UrlPattern;
use crate::layer::CacheLayer;
use crate::store::{CircuitBreaker, Store};

/// The settings of a [`CacheLayer`] that are data, for a configuration file.
///
/// Every field is optional: what a file leaves out keeps the layer's default. Unknown keys are
/// refused, with the key named. Durations are written as `humantime` reads them (`"500ms"`,
/// `"5m"`, `"1h 30m"`, `"7days"`); sizes in bytes. Secrets are never in the file:
/// [`key`](Self::key) names the environment variables that hold them.
///
/// What is code, not data, stays in code: a response filter, a key function, a clock, request
/// body keys (`key_request_bodies` changes the layer's type), the store.
///
/// ```
/// # #[cfg(feature = "memory")] {
/// use hyper_client_cache::{CacheConfig, CacheLayer, MemoryStore};
///
/// let config: CacheConfig = serde_json::from_str(r#"{
///     "shared": true,
///     "expire_after": "5m",
///     "urls": [{ "pattern": "static.example.com/*", "expire_after": "never" }],
///     "store_timeout": "250ms",
///     "circuit_breaker": { "failures": 3, "open_for": "1s" }
/// }"#).unwrap();
/// let layer = CacheLayer::from_config(MemoryStore::default(), &config).unwrap();
/// # drop(layer); }
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CacheConfig {
    /// A shared cache (RFC 9111 §3.5) instead of a private one ([`CacheLayer::shared`]).
    pub shared: Option<bool>,
    /// The lifetime of responses without explicit freshness ([`CacheLayer::expire_after`]):
    /// a duration, `"never"`, `"do_not_cache"` or `"expire_immediately"`.
    pub expire_after: Option<ExpiryValue>,
    /// Per-URL lifetimes, tried in order, the first match wins ([`CacheLayer::expire_url`]).
    pub urls: Vec<UrlRule>,
    /// Whether explicit response freshness wins over the settings ([`CacheLayer::cache_control`]).
    pub cache_control: Option<bool>,
    /// The methods cached ([`CacheLayer::allowed_methods`]), e.g. `["GET", "HEAD"]`.
    pub allowed_methods: Option<Vec<String>>,
    /// The statuses stored ([`CacheLayer::allowed_statuses`]), e.g. `[200, 404]`.
    pub allowed_statuses: Option<Vec<u16>>,
    /// Query parameters and headers left out of keys and entries
    /// ([`CacheLayer::ignored_parameters`]).
    pub ignored_parameters: Vec<String>,
    /// Request headers that are part of the key ([`CacheLayer::match_headers`]).
    pub match_headers: Vec<String>,
    /// Request headers that are credentials, added to the default list
    /// ([`CacheLayer::sensitive_headers`]).
    pub sensitive_headers: Vec<String>,
    /// Whether a shared cache stores responses with `Set-Cookie`
    /// ([`CacheLayer::shared_set_cookie`]).
    pub shared_set_cookie: Option<bool>,
    /// The largest body stored, in bytes ([`CacheLayer::max_body_size`]).
    pub max_body_size: Option<usize>,
    /// The largest blob read, in bytes ([`CacheLayer::max_blob_size`]).
    pub max_blob_size: Option<usize>,
    /// The bound of every store operation ([`CacheLayer::store_timeout`]).
    #[serde(with = "opt_duration")]
    pub store_timeout: Option<Duration>,
    /// Whether concurrent misses for one key wait for one origin request
    /// ([`CacheLayer::coalesce`]).
    pub coalesce: Option<bool>,
    /// How long a coalesced request waits ([`CacheLayer::coalesce_timeout`]).
    #[serde(with = "opt_duration")]
    pub coalesce_timeout: Option<Duration>,
    /// How long a key whose response was not storable does not coalesce
    /// ([`CacheLayer::hit_for_pass`]; `"0s"` turns it off).
    #[serde(with = "opt_duration")]
    pub hit_for_pass: Option<Duration>,
    /// The bound of one background refresh ([`CacheLayer::refresh_timeout`]); more than zero.
    #[serde(with = "opt_duration")]
    pub refresh_timeout: Option<Duration>,
    /// How many background refreshes run at once ([`CacheLayer::max_refreshes`]); `0`: none.
    pub max_refreshes: Option<usize>,
    /// How stale a response may be served when the origin fails
    /// ([`CacheLayer::serve_stale_on_error`]).
    #[serde(with = "opt_duration")]
    pub serve_stale_on_error: Option<Duration>,
    /// The MAC of new signed entries: `"blake3"` (the default) or `"hmac-sha256"`
    /// ([`CacheLayer::mac`]).
    pub mac: Option<crate::Mac>,
    /// Compression of stored bodies ([`CacheLayer::compress`]; features `lz4`, `zstd`):
    /// present (and not `enabled = false`) turns it on.
    #[cfg(any(feature = "lz4", feature = "zstd"))]
    pub compression: Option<CompressionConfig>,
    /// What a bad signature does: `"error"` (the default) or `"refetch"`
    /// ([`CacheLayer::on_bad_signature`]).
    pub on_bad_signature: Option<BadSignaturePolicy>,
    /// Use the cache but never write to it ([`CacheLayer::read_only`]).
    pub read_only: Option<bool>,
    /// Fail requests when the store fails ([`CacheLayer::fail_closed`]).
    pub fail_closed: Option<bool>,
    /// Add an RFC 9211 `Cache-Status` field ([`CacheLayer::cache_status_header`]).
    pub cache_status_header: Option<bool>,
    /// The store's circuit breaker ([`CacheLayer::circuit_breaker`]).
    pub circuit_breaker: Option<BreakerConfig>,
    /// The field that carries cache tags besides `Surrogate-Key` ([`CacheLayer::tag_header`]).
    pub tag_header: Option<String>,
    /// Pass the tag fields on to callers ([`CacheLayer::keep_tag_headers`]).
    pub keep_tag_headers: Option<bool>,
    /// Where the secret key comes from. Absent: an unsigned cache. An explicit `null` (a YAML
    /// `key:` left empty, a JSON placeholder) is refused when the file is read, rather than
    /// loading an unsigned cache from a file that meant to name a key.
    #[serde(
        deserialize_with = "key_not_null",
        skip_serializing_if = "Option::is_none"
    )]
    pub key: Option<KeyConfig>,
}

/// `key`: present means a key; only its absence means none.
fn key_not_null<'de, D: Deserializer<'de>>(d: D) -> Result<Option<KeyConfig>, D::Error> {
    match Option::<KeyConfig>::deserialize(d)? {
        Some(key) => Ok(Some(key)),
        None => Err(serde::de::Error::custom(
            "`key`: null is not a key setting (it would load a cache that signs nothing); \
             name the key variable (`env`), or leave `key` out for an unsigned cache",
        )),
    }
}

/// A lifetime: a duration or one of the named values of [`ExpireAfter`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExpiryValue(pub ExpireAfter);

/// One per-URL rule: a glob over `host/path` and its lifetime.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UrlRule {
    /// The glob ([`CacheLayer::expire_url`]).
    pub pattern: String,
    /// Its lifetime.
    pub expire_after: ExpiryValue,
}

/// [`OnBadSignature`], as a file says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BadSignaturePolicy {
    /// [`OnBadSignature::Error`].
    Error,
    /// [`OnBadSignature::Refetch`].
    Refetch,
}

/// The circuit breaker's settings ([`CircuitBreaker`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BreakerConfig {
    /// `false`: no breaker ([`CacheLayer::without_circuit_breaker`]).
    pub enabled: Option<bool>,
    /// Consecutive failures that open it.
    pub failures: Option<u32>,
    /// How long it stays open before the first probe.
    #[serde(with = "opt_duration")]
    pub open_for: Option<Duration>,
    /// The longest it stays open (the wait doubles up to this).
    #[serde(with = "opt_duration")]
    pub max_open_for: Option<Duration>,
}

/// Compression of stored bodies ([`Compression`](crate::Compression)).
#[cfg(any(feature = "lz4", feature = "zstd"))]
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CompressionConfig {
    /// `false`: no compression (as if the section were absent).
    pub enabled: Option<bool>,
    /// `"zstd"` or `"lz4"` (the default: zstd when compiled in).
    pub codec: Option<crate::Codec>,
    /// Segments shorter than this are stored as is ([`Compression::min_size`](crate::Compression::min_size)).
    pub min_size: Option<usize>,
    /// Compress encrypted entries too ([`Compression::when_encrypted`](crate::Compression::when_encrypted)).
    pub when_encrypted: Option<bool>,
}

/// Where the secret key comes from: environment variables, never the file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyConfig {
    /// The variable that holds the current key ([`SecretKey::from_env`]).
    pub env: String,
    /// Variables that hold older keys, still accepted ([`KeyRing::with_previous`]).
    #[serde(default)]
    pub previous_env: Vec<String>,
    /// Encrypt entries (AES-256-GCM) instead of signing them ([`CacheLayer::encrypt`]).
    #[serde(default)]
    pub encrypt: bool,
}

/// A setting of a [`CacheConfig`] that cannot be applied.
#[derive(Debug)]
pub struct ConfigError {
    field: String,
    kind: ConfigErrorKind,
}

#[derive(Debug)]
enum ConfigErrorKind {
    Pattern(PatternError),
    Key(KeyError),
    Invalid(String),
}

impl ConfigError {
    fn invalid(field: impl Into<String>, why: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            kind: ConfigErrorKind::Invalid(why.into()),
        }
    }

    /// The setting, as the file names it (`urls[1].pattern`, `key.env`, ...).
    pub fn field(&self) -> &str {
        &self.field
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            // The cause is the `source()`, not repeated here (an error reporter prints the
            // chain: `anyhow`'s `{:#}`, `hcc`).
            ConfigErrorKind::Pattern(_) => write!(f, "`{}`: not a valid URL pattern", self.field),
            ConfigErrorKind::Key(_) => write!(f, "`{}`: no usable secret key", self.field),
            ConfigErrorKind::Invalid(why) => write!(f, "`{}`: {why}", self.field),
        }
    }
}

impl std::error::Error for ConfigError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &self.kind {
            ConfigErrorKind::Pattern(e) => Some(e),
            ConfigErrorKind::Key(e) => Some(e),
            ConfigErrorKind::Invalid(_) => None,
        }
    }
}

fn header_names(field: &str, names: &[String]) -> Result<Vec<HeaderName>, ConfigError> {
    names
        .iter()
        .enumerate()
        .map(|(i, n)| {
            HeaderName::from_bytes(n.as_bytes()).map_err(|_| {
                ConfigError::invalid(
                    format!("{field}[{i}]"),
                    format!("`{n}` is not a header name"),
                )
            })
        })
        .collect()
}

/// Values that load but leave a cache that stores nothing, or stores and never serves: refused,
/// so that a typo or a misread default does not turn the cache off without a word. (A zero
/// `circuit_breaker.failures` is refused where the breaker is built.)
fn refuse_switched_off(config: &CacheConfig) -> Result<(), ConfigError> {
    let body = config.max_body_size.unwrap_or(DEFAULT_MAX_BODY_SIZE);
    if body == 0 {
        return Err(ConfigError::invalid(
            "max_body_size",
            "must be at least 1 (0 stores no response at all; \
             `expire_after = \"do_not_cache\"` says that on purpose)",
        ));
    }
    let least = least_max_blob_size(body);
    if let Some(blob) = config.max_blob_size.filter(|&blob| blob < least) {
        return Err(ConfigError::invalid(
            "max_blob_size",
            format!(
                "{blob} is too small: must be at least {least} for `max_body_size` = {body} \
                 (the body, 1 MiB for the head and 37 bytes per 64 KiB segment); entries larger \
                 than it are stored and never read back"
            ),
        ));
    }
    if config.allowed_methods.as_ref().is_some_and(Vec::is_empty) {
        return Err(ConfigError::invalid(
            "allowed_methods",
            "is empty: no request would be cached (leave it out for `GET`, `HEAD`)",
        ));
    }
    if config.allowed_statuses.as_ref().is_some_and(Vec::is_empty) {
        return Err(ConfigError::invalid(
            "allowed_statuses",
            "is empty: no response would be stored (leave it out to let RFC 9111 decide)",
        ));
    }
    if config.store_timeout == Some(Duration::ZERO) {
        return Err(ConfigError::invalid(
            "store_timeout",
            "is zero: every store operation would time out, so nothing is stored or served \
             (it is not \"no timeout\")",
        ));
    }
    match (config.coalesce, config.coalesce_timeout) {
        (_, Some(Duration::ZERO)) => Err(ConfigError::invalid(
            "coalesce_timeout",
            "is zero: a waiter would give up at once, every concurrent miss going to the origin \
             (write `coalesce = false` to turn coalescing off)",
        )),
        (Some(false), Some(_)) => Err(ConfigError::invalid(
            "coalesce_timeout",
            "is set, which turns coalescing on, while `coalesce = false` turns it off: keep one",
        )),
        _ => Ok(()),
    }
}

fn key_from(field: String, name: &str) -> Result<SecretKey, ConfigError> {
    SecretKey::from_env(name).map_err(|e| ConfigError {
        field,
        kind: ConfigErrorKind::Key(e),
    })
}

impl<St: Store> CacheLayer<St> {
    /// A layer over `store` with the settings of `config` (the rest at their defaults).
    ///
    /// Errors name the setting: a glob that does not compile, a header name, method or status
    /// that is not one, a key variable that is not set or holds a key too short, and a value
    /// that would quietly make a cache that never stores or never hits (see
    /// [docs/configuration.md](https://github.com/hyper-client-cache/hyper-client-cache/blob/main/docs/configuration.md#settings-from-a-file-feature-serde)).
    #[cfg_attr(docsrs, doc(cfg(feature = "serde")))]
    pub fn from_config(store: St, config: &CacheConfig) -> Result<Self, ConfigError> {
        refuse_switched_off(config)?;
        let mut layer = CacheLayer::new(store);
        if let Some(shared) = config.shared {
            layer = layer.shared(shared);
        }
        if let Some(ExpiryValue(value)) = config.expire_after {
            layer = layer.expire_after(value);
        }
        for (i, rule) in config.urls.iter().enumerate() {
            let pattern = UrlPattern::new(&rule.pattern).map_err(|e| ConfigError {
                field: format!("urls[{i}].pattern"),
                kind: ConfigErrorKind::Pattern(e),
            })?;
            layer = layer.expire_url(pattern, rule.expire_after.0);
        }
        if let Some(honor) = config.cache_control {
            layer = layer.cache_control(honor);
        }
        if let Some(methods) = &config.allowed_methods {
            let methods = methods
                .iter()
                .enumerate()
                .map(|(i, m)| {
                    Method::from_bytes(m.as_bytes()).map_err(|_| {
                        ConfigError::invalid(
                            format!("allowed_methods[{i}]"),
                            format!("`{m}` is not a method"),
                        )
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            layer = layer.allowed_methods(methods);
        }
        if let Some(statuses) = &config.allowed_statuses {
            let statuses = statuses
                .iter()
                .enumerate()
                .map(|(i, s)| {
                    StatusCode::from_u16(*s).map_err(|_| {
                        ConfigError::invalid(
                            format!("allowed_statuses[{i}]"),
                            format!("{s} is not a status code"),
                        )
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            layer = layer.allowed_statuses(statuses);
        }
        if !config.ignored_parameters.is_empty() {
            layer = layer.ignored_parameters(config.ignored_parameters.iter().cloned());
        }
        if !config.match_headers.is_empty() {
            layer = layer.match_headers(header_names("match_headers", &config.match_headers)?);
        }
        if !config.sensitive_headers.is_empty() {
            layer = layer.sensitive_headers(header_names(
                "sensitive_headers",
                &config.sensitive_headers,
            )?);
        }
        if let Some(bytes) = config.max_body_size {
            layer = layer.max_body_size(bytes);
        }
        if let Some(bytes) = config.max_blob_size {
            layer = layer.max_blob_size(bytes);
        }
        if let Some(timeout) = config.store_timeout {
            layer = layer.store_timeout(timeout);
        }
        if let Some(enabled) = config.coalesce {
            layer = layer.coalesce(enabled);
        }
        if let Some(timeout) = config.coalesce_timeout {
            layer = layer.coalesce_timeout(timeout);
        }
        if let Some(window) = config.hit_for_pass {
            layer = layer.hit_for_pass(window);
        }
        if let Some(store) = config.shared_set_cookie {
            layer = layer.shared_set_cookie(store);
        }
        if let Some(timeout) = config.refresh_timeout {
            if timeout.is_zero() {
                return Err(ConfigError::invalid(
                    "refresh_timeout",
                    "must be more than zero (every background refresh would be abandoned)",
                ));
            }
            layer = layer.refresh_timeout(timeout);
        }
        if let Some(max) = config.max_refreshes {
            layer = layer.max_refreshes(max);
        }
        if let Some(max) = config.serve_stale_on_error {
            layer = layer.serve_stale_on_error(max);
        }
        if let Some(mac) = config.mac {
            layer = layer.mac(mac);
        }
        #[cfg(any(feature = "lz4", feature = "zstd"))]
        if let Some(c) = config
            .compression
            .as_ref()
            .filter(|c| c.enabled != Some(false))
        {
            let mut compression = crate::Compression::new(c.codec.unwrap_or_default());
            if let Some(min) = c.min_size {
                compression = compression.min_size(min);
            }
            if let Some(yes) = c.when_encrypted {
                compression = compression.when_encrypted(yes);
            }
            layer = layer.compress(compression);
        }
        if let Some(policy) = config.on_bad_signature {
            layer = layer.on_bad_signature(match policy {
                BadSignaturePolicy::Error => OnBadSignature::Error,
                BadSignaturePolicy::Refetch => OnBadSignature::Refetch,
            });
        }
        if let Some(read_only) = config.read_only {
            layer = layer.read_only(read_only);
        }
        if let Some(fail_closed) = config.fail_closed {
            layer = layer.fail_closed(fail_closed);
        }
        if let Some(enabled) = config.cache_status_header {
            layer = layer.cache_status_header(enabled);
        }
        if let Some(b) = &config.circuit_breaker {
            if b.enabled == Some(false) {
                layer = layer.without_circuit_breaker();
            } else {
                let mut breaker = CircuitBreaker::new();
                if let Some(n) = b.failures {
                    if n == 0 {
                        return Err(ConfigError::invalid(
                            "circuit_breaker.failures",
                            "must be at least 1",
                        ));
                    }
                    breaker = breaker.failures(n);
                }
                if let Some(d) = b.open_for {
                    breaker = breaker.open_for(d);
                }
                if let Some(d) = b.max_open_for {
                    breaker = breaker.max_open_for(d);
                }
                layer = layer.circuit_breaker(breaker);
            }
        }
        if let Some(name) = &config.tag_header {
            let name = HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
                ConfigError::invalid("tag_header", format!("`{name}` is not a header name"))
            })?;
            layer = layer.tag_header(name);
        }
        if let Some(keep) = config.keep_tag_headers {
            layer = layer.keep_tag_headers(keep);
        }
        if let Some(key) = &config.key {
            let mut ring = KeyRing::new(key_from("key.env".into(), &key.env)?);
            for (i, name) in key.previous_env.iter().enumerate() {
                ring = ring.with_previous(key_from(format!("key.previous_env[{i}]"), name)?);
            }
            layer = if key.encrypt {
                layer.encrypt(ring)
            } else {
                layer.secret_key(ring)
            };
        }
        Ok(layer)
    }
}

impl Serialize for ExpiryValue {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            ExpireAfter::Never => s.serialize_str("never"),
            ExpireAfter::DoNotCache => s.serialize_str("do_not_cache"),
            ExpireAfter::ExpireImmediately => s.serialize_str("expire_immediately"),
            ExpireAfter::Duration(d) => s.serialize_str(&humantime::format_duration(d).to_string()),
        }
    }
}

impl<'de> Deserialize<'de> for ExpiryValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Ok(ExpiryValue(match text.as_str() {
            "never" => ExpireAfter::Never,
            "do_not_cache" => ExpireAfter::DoNotCache,
            "expire_immediately" => ExpireAfter::ExpireImmediately,
            other => {
                ExpireAfter::Duration(parse_duration(other).map_err(serde::de::Error::custom)?)
            }
        }))
    }
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text).map_err(|e| {
        format!("invalid duration `{text}`: {e} (write e.g. \"500ms\", \"5m\", \"1h 30m\")")
    })
}

/// `Option<Duration>` as a `humantime` string.
mod opt_duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_str(&humantime::format_duration(*d).to_string()),
            None => s.serialize_none(),
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Duration>, D::Error> {
        match Option::<String>::deserialize(d)? {
            Some(text) => super::parse_duration(&text)
                .map(Some)
                .map_err(serde::de::Error::custom),
            None => Ok(None),
        }
    }
}
