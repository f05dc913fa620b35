//! [`Config`]: the settings a layer, its services and its inspector share, with their defaults.
//!
//! The builder that sets them is [`CacheLayer`](crate::CacheLayer) (`layer.rs`); the request path
//! (`future/`) and the [`Inspector`](crate::Inspector) only read them.

use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use http::{HeaderName, Method, Request, StatusCode};

use crate::clock::{Clock, SystemClock};
use crate::coalesce::Flights;
use crate::controls::{ExpireAfter, ResponseFilter, UrlRules};
use crate::envelope::Envelope;
use crate::key::{request_host_path, CacheKey, Keying};
use crate::metrics::CacheMetrics;
use crate::policy::vary::{Matching, VaryDigest};
use crate::policy::Reuse;
use crate::store::{self, Store, StoreCall, StoreRequest};
use crate::timer::TimerProbe;

/// Default for [`CacheLayer::max_body_size`](crate::CacheLayer::max_body_size): 8 MiB.
pub const DEFAULT_MAX_BODY_SIZE: usize = 8 * 1024 * 1024;

/// Default for [`CacheLayer::store_timeout`](crate::CacheLayer::store_timeout): 500 milliseconds.
pub const DEFAULT_STORE_TIMEOUT: Duration = Duration::from_millis(500);

/// Default for [`CacheLayer::hit_for_pass`](crate::CacheLayer::hit_for_pass): 10 seconds.
pub const DEFAULT_HIT_FOR_PASS: Duration = Duration::from_secs(10);

/// Default for [`CacheLayer::coalesce_timeout`](crate::CacheLayer::coalesce_timeout): 10 seconds.
pub const DEFAULT_COALESCE_TIMEOUT: Duration = Duration::from_secs(10);

/// Default for [`CacheLayer::refresh_timeout`](crate::CacheLayer::refresh_timeout): 30 seconds.
pub const DEFAULT_REFRESH_TIMEOUT: Duration = Duration::from_secs(30);

/// Default for [`CacheLayer::max_refreshes`](crate::CacheLayer::max_refreshes): 32.
pub const DEFAULT_MAX_REFRESHES: usize = 32;

/// What to do with a stored entry whose signature does not verify.
///
/// Such an entry is never served, whatever this says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum OnBadSignature {
    /// Fail the request with a [`BadSignature`](crate::BadSignature) error (the default), so
    /// tampering is noticed instead of silently papered over.
    #[default]
    Error,
    /// Delete the entry, log a warning and fetch the response from the origin again.
    Refetch,
}

/// Request headers whose values are credentials: never stored in clear. When a response varies
/// on one of them, a keyed digest of the value is stored instead (for matching).
pub const DEFAULT_SENSITIVE_HEADERS: &[&str] = &[
    "authorization",
    "cookie",
    "proxy-authorization",
    "x-api-key",
    "x-auth-token",
];

/// Query parameters whose values are credentials: their values are replaced by `REDACTED` in
/// the URI kept with a stored entry (they still count in the cache key, since different
/// credentials may well get different answers).
pub const DEFAULT_REDACTED_PARAMETERS: &[&str] = &[
    "access_token",
    "api_key",
    "apikey",
    "api-key",
    "auth",
    "client_secret",
    "key",
    "password",
    "secret",
    "sig",
    "signature",
    "token",
];

/// The room a stored entry has for everything but its body: status, header fields, URI, Vary
/// values, envelope header.
const HEAD_ROOM: usize = 1 << 20;

/// The least read bound (`max_blob_size`) under which an entry with a body of `max_body_size`
/// bytes can still be read back: the body, [`HEAD_ROOM`], and the segments' nonces and tags of
/// an encrypted body. It is also the default bound; `from_config` refuses less, since entries
/// that fit the body bound but not the read bound are written and never served.
pub(crate) fn least_max_blob_size(max_body_size: usize) -> usize {
    max_body_size
        .saturating_add(HEAD_ROOM)
        .saturating_add(crate::envelope::segment_overhead(max_body_size))
}

/// The settings shared by a layer and every service it builds.
#[derive(Clone)]
pub(crate) struct Config {
    pub(crate) envelope: Envelope,
    /// `None`: derived from `max_body_size` when the service is built.
    pub(crate) max_blob_size: Option<usize>,
    pub(crate) keying: Keying,
    /// Request fields treated as credentials: in a shared cache as `Authorization` is
    /// (RFC 9111 §3.5). Only ever grows from the defaults, unless a default is removed by name.
    pub(crate) sensitive_headers: Vec<HeaderName>,
    /// A shared cache stores responses with `Set-Cookie` (default: not stored).
    pub(crate) shared_set_cookie: bool,
    pub(crate) on_bad_signature: OnBadSignature,
    pub(crate) max_body_size: usize,
    pub(crate) shared: bool,
    pub(crate) clock: Arc<dyn Clock>,
    /// `None` when coalescing is off; else how long a waiter waits for the leader.
    pub(crate) coalesce_timeout: Option<Duration>,
    /// How long a key whose response was not storable does not coalesce (`None`: off).
    pub(crate) hit_for_pass: Option<Duration>,
    /// Shared by every service built from this layer (and its clones).
    pub(crate) flights: Arc<Flights>,
    pub(crate) store_timeout: Duration,
    /// Over every store call (`None`: off); on the layer's clock once built.
    pub(crate) breaker: Option<crate::store::CircuitBreaker>,
    /// The breaker is the layer's default one (it follows the layer's clock and store).
    pub(crate) breaker_default: bool,
    /// `Accept-Language` members of equal weight match in any order.
    pub(crate) language_ties: bool,
    pub(crate) fail_closed: bool,
    pub(crate) stale_on_error: Option<Duration>,
    pub(crate) surrogate: Option<String>,
    /// RFC 9213 target list, in precedence order.
    pub(crate) targets: Vec<http::HeaderName>,
    /// Names `surrogate`, `targets` and `shared` for sealed freshness inputs (set by `finished`).
    pub(crate) reuse_id: u64,
    /// Blobs of a `MemoryStore` opened by this service, with their entries
    /// (`envelope/verified.rs`); a new one for each service built (`finished`), in `memos`.
    pub(crate) verified: Arc<crate::envelope::VerifiedBlobs>,
    /// The memos of the services built from this layer and its clones: what one removes from
    /// the store, all forget (`call`).
    pub(crate) memos: Arc<crate::envelope::Memos>,
    pub(crate) timer: Arc<TimerProbe>,
    /// The MAC of new signed entries.
    pub(crate) mac: crate::Mac,
    /// How stored bodies are compressed (`None`: not at all).
    #[cfg(any(feature = "lz4", feature = "zstd"))]
    pub(crate) compression: Option<crate::Compression>,
    /// Whether the store takes `PutParts` (until it answers `Unsupported` once).
    pub(crate) store_takes_parts: Arc<std::sync::atomic::AtomicBool>,
    /// Whether the store takes `PutStream` (until it answers `Unsupported` once).
    pub(crate) store_streams: Arc<std::sync::atomic::AtomicBool>,
    pub(crate) metrics: CacheMetrics,
    pub(crate) expire_after: Option<ExpireAfter>,
    pub(crate) url_rules: UrlRules,
    /// Explicit response freshness wins over the user's expiry (requests-cache's
    /// `cache_control=True`).
    pub(crate) cache_control: bool,
    pub(crate) read_only: bool,
    /// Entries received before this time are misses (bounds replay; "purge everything").
    pub(crate) not_before: Option<SystemTime>,
    pub(crate) methods: Vec<Method>,
    pub(crate) statuses: Option<Vec<StatusCode>>,
    pub(crate) filter: Option<ResponseFilter>,
    pub(crate) cache_status_header: bool,
    /// The response fields that carry cache tags (`Cache-Tag`, `Surrogate-Key`): stored with
    /// the entry, read by `Inspector::purge_tag`.
    pub(crate) tag_headers: Vec<HeaderName>,
    /// Pass the tag fields on to callers (default: removed from every answer).
    pub(crate) keep_tag_headers: bool,
    /// The bound of one background refresh: origin call, body, store write.
    pub(crate) refresh_timeout: Duration,
    /// How many background refreshes may run at once.
    pub(crate) max_refreshes: usize,
    /// How many run now: shared by every service built from the layer (and its clones).
    pub(crate) refreshes: Arc<AtomicUsize>,
}

/// The tag fields read by default: `Cache-Tag` (comma-separated, as Cloudflare's) and
/// `Surrogate-Key` (space-separated, as Fastly's).
pub const DEFAULT_TAG_HEADERS: &[&str] = &["cache-tag", "surrogate-key"];

/// The tags a response (or a stored head) carries in `names`: values split on commas and
/// whitespace, empty ones dropped.
pub(crate) fn tags_in(headers: &http::HeaderMap, names: &[HeaderName]) -> Vec<String> {
    let mut tags = Vec::new();
    for name in names {
        for value in headers.get_all(name) {
            if let Ok(text) = value.to_str() {
                tags.extend(
                    text.split(|c: char| c == ',' || c.is_ascii_whitespace())
                        .filter(|t| !t.is_empty())
                        .map(str::to_owned),
                );
            }
        }
    }
    tags
}

impl Config {
    /// The defaults: a private cache, unsigned, every setter's documented default.
    pub(crate) fn new() -> Self {
        let mut config = Config {
            envelope: Envelope::new(None),
            max_blob_size: None,
            keying: Keying::new(DEFAULT_REDACTED_PARAMETERS),
            sensitive_headers: DEFAULT_SENSITIVE_HEADERS
                .iter()
                .map(|h| HeaderName::from_static(h))
                .collect(),
            shared_set_cookie: false,
            on_bad_signature: OnBadSignature::Error,
            max_body_size: DEFAULT_MAX_BODY_SIZE,
            shared: false,
            clock: Arc::new(SystemClock),
            coalesce_timeout: Some(DEFAULT_COALESCE_TIMEOUT),
            hit_for_pass: Some(DEFAULT_HIT_FOR_PASS),
            flights: Arc::new(Flights::default()),
            store_timeout: DEFAULT_STORE_TIMEOUT,
            breaker: Some(crate::store::CircuitBreaker::new()),
            breaker_default: true,
            language_ties: false,
            fail_closed: false,
            stale_on_error: None,
            surrogate: None,
            targets: Vec::new(),
            reuse_id: 0,
            verified: Arc::default(),
            memos: Arc::default(),
            timer: Arc::new(TimerProbe::default()),
            mac: crate::Mac::default(),
            #[cfg(any(feature = "lz4", feature = "zstd"))]
            compression: None,
            store_takes_parts: Arc::new(std::sync::atomic::AtomicBool::new(true)),
            store_streams: Arc::new(std::sync::atomic::AtomicBool::new(true)),
            metrics: CacheMetrics::default(),
            expire_after: None,
            url_rules: UrlRules::default(),
            cache_control: true,
            read_only: false,
            not_before: None,
            methods: vec![Method::GET, Method::HEAD],
            statuses: None,
            filter: None,
            cache_status_header: false,
            tag_headers: DEFAULT_TAG_HEADERS
                .iter()
                .map(|h| HeaderName::from_static(h))
                .collect(),
            keep_tag_headers: false,
            refresh_timeout: DEFAULT_REFRESH_TIMEOUT,
            max_refreshes: DEFAULT_MAX_REFRESHES,
            refreshes: Arc::new(AtomicUsize::new(0)),
        };
        config.note_reuse_settings();
        config
    }

    /// The settings with what depends on several setters resolved.
    pub(crate) fn finished(&self) -> Config {
        let mut config = self.clone();
        let max_blob = config
            .max_blob_size
            .unwrap_or_else(|| least_max_blob_size(config.max_body_size));
        config.envelope = config.envelope.with_max_blob(max_blob).with_mac(config.mac);
        #[cfg(any(feature = "lz4", feature = "zstd"))]
        {
            config.envelope = config.envelope.with_compression(config.compression);
        }
        self.name_keys_into(&mut config.keying);
        // Kept up to date by the setters it depends on (`note_reuse_settings`): not digested
        // again for every service built.
        debug_assert_eq!(
            config.reuse_id,
            reuse_id(config.surrogate.as_deref(), &config.targets, config.shared)
        );
        config.verified = config.memos.new_memo();
        config
    }

    /// How the finished settings name entries, without the rest of [`finished`](Self::finished)
    /// (no memo registered, no digest of the settings): what `CacheLayer::key_for` needs.
    pub(crate) fn finished_keying(&self) -> Keying {
        let mut keying = self.keying.clone();
        self.name_keys_into(&mut keying);
        keying
    }

    /// What `finished` and `finished_keying` both do to the keying.
    fn name_keys_into(&self, keying: &mut Keying) {
        // With a secret, entries are named by HMACs under a key derived from it (docs/security.md,
        // "Key names"); the previous keys of the ring name what was written before a rotation.
        keying.names = self.envelope.name_keys();
    }

    /// Digests the settings reuse decisions depend on (`surrogate`, `targets`, `shared`) into
    /// `reuse_id`: called by `new` and by each of their setters.
    pub(crate) fn note_reuse_settings(&mut self) {
        self.reuse_id = reuse_id(self.surrogate.as_deref(), &self.targets, self.shared);
    }

    /// The settings reuse decisions depend on.
    pub(crate) fn reuse(&self) -> Reuse<'_> {
        Reuse {
            surrogate: self.surrogate.as_deref(),
            targets: &self.targets,
            shared: self.shared,
            stale_on_error: self.stale_on_error,
            id: self.reuse_id,
        }
    }

    /// The expiry that applies to `request`, and whether it is the request's own override:
    /// per-request > first matching URL rule > layer default.
    pub(crate) fn expiry_for<B>(&self, request: &Request<B>) -> (Option<ExpireAfter>, bool) {
        if let Some(value) = request.extensions().get::<ExpireAfter>() {
            return (Some(*value), true);
        }
        if !self.url_rules.is_empty() {
            if let Some(value) = self.url_rules.find(&request_host_path(request)) {
                return (Some(value), false);
            }
        }
        (self.expire_after, false)
    }

    /// How Vary's selecting values are kept and compared (§4.1): credentials as keyed digests,
    /// everything else as is; `Accept-Language` ties as the user chose.
    pub(crate) fn protect(&self) -> Matching<'_> {
        Matching {
            digest: self,
            language_ties: self.language_ties,
        }
    }

    /// The store's circuit breaker is not closed: nothing written now would be stored.
    pub(crate) fn store_down(&self) -> bool {
        self.breaker
            .as_ref()
            .is_some_and(|b| b.state() != crate::store::BreakerState::Closed)
    }

    /// A lookup of `key`, bounded by the largest blob this layer accepts (the request path and
    /// the inspector alike).
    pub(crate) fn get(&self, key: CacheKey) -> StoreRequest {
        StoreRequest::Get {
            key,
            max_len: self.envelope.max_blob(),
        }
    }

    /// One store operation, bounded by the store timeout.
    pub(crate) fn call<St: Store>(&self, store: &St, request: StoreRequest) -> StoreCall<St> {
        self.call_bounded(store, self.store_timeout, request)
    }

    /// One store operation, bounded by `timeout` (every request of the cache, and of its
    /// `Inspector`, to its store goes through here). What it removes from the store, no memo
    /// of opened entries keeps (`envelope/verified.rs`): `Delete` its key, `PurgeTag` and
    /// `Clear` everything, forgotten as the request is sent and again once the store answered
    /// (a lookup may open the entry again in between).
    pub(crate) fn call_bounded<St: Store>(
        &self,
        store: &St,
        timeout: Duration,
        request: StoreRequest,
    ) -> StoreCall<St> {
        let forget: Option<Box<dyn FnOnce() + Send + Sync>> = match &request {
            StoreRequest::Delete { key } => {
                self.memos.forget(key);
                let (memos, key) = (self.memos.clone(), key.clone());
                Some(Box::new(move || memos.forget(&key)))
            }
            StoreRequest::PurgeTag { .. } | StoreRequest::Clear => {
                self.memos.clear();
                let memos = self.memos.clone();
                Some(Box::new(move || memos.clear()))
            }
            _ => None,
        };
        let call = store::call(store, &self.timer, timeout, self.breaker.as_ref(), request);
        match forget {
            Some(forget) => call.then_run(forget),
            None => call,
        }
    }
}

impl VaryDigest for Config {
    fn digest(&self, name: &HeaderName, value: &[u8]) -> [u8; 32] {
        self.envelope.vary_digest(name.as_str(), value)
    }
}

/// Names the rules sealed freshness inputs depend on (`policy::fresh`): two layers with the same
/// id compute the same from the same stored response.
fn reuse_id(surrogate: Option<&str>, targets: &[http::HeaderName], shared: bool) -> u64 {
    let mut d = ring::digest::Context::new(&ring::digest::SHA256);
    d.update(&[crate::policy::fresh::RULES_VERSION, u8::from(shared)]);
    match surrogate {
        Some(s) => {
            d.update(&[1]);
            d.update(&(s.len() as u64).to_be_bytes());
            d.update(s.as_bytes());
        }
        None => d.update(&[0]),
    }
    for t in targets {
        d.update(&(t.as_str().len() as u64).to_be_bytes());
        d.update(t.as_str().as_bytes());
    }
    let digest = d.finish();
    let mut id = [0u8; 8];
    id.copy_from_slice(&digest.as_ref()[..8]);
    // Never 0: `Reuse::default()` (tests) has id 0 and must not match a computed one.
    u64::from_be_bytes(id) | 1
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The default read bound leaves room for an encrypted entry's segment nonces and tags (28
    /// bytes per 64 KiB): at `max_body_size` = 2.38 GiB, 1 MiB of headroom alone would not.
    #[test]
    fn the_default_read_bound_fits_the_largest_encrypted_entry() {
        let max_body_size: usize = 39_000 * 64 * 1024;
        let mut config = Config::new();
        config.max_body_size = max_body_size;
        let overhead = crate::envelope::segment_overhead(max_body_size);
        assert!(overhead > 1 << 20);
        assert!(config.finished().envelope.max_blob() >= max_body_size + overhead + (1 << 20));
    }

    #[test]
    fn the_rules_id_names_every_setting_sealed_freshness_depends_on() {
        let cdn = [http::HeaderName::from_static("cdn-cache-control")];
        let ids = [
            reuse_id(None, &[], false),
            reuse_id(None, &[], true),
            reuse_id(Some("edge"), &[], false),
            reuse_id(None, &cdn, false),
        ];
        for (i, a) in ids.iter().enumerate() {
            assert_ne!(*a, 0, "0 matches no sealed inputs");
            for b in &ids[i + 1..] {
                assert_ne!(a, b);
            }
        }
        assert_eq!(reuse_id(None, &cdn, false), ids[3], "stable");
    }
}
