//! [`CacheLayer`]: the consuming builder that sets the [`Config`] (in `config.rs`) a layer's
//! services share.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use tower::Layer;

use http::{HeaderName, Method, StatusCode};

use crate::clock::Clock;
use crate::config::{Config, OnBadSignature};
use crate::controls::ExpireAfter;
use crate::envelope::{Envelope, KeyRing};
use crate::inspect::UrlPattern;
use crate::key::KeyParts;
use crate::metrics::CacheMetrics;
use crate::request_body::{BodyKeys, NoBodyKeys};
use crate::service::Cache;
use crate::store::CircuitBreaker;

mod background;
mod rules;
mod sharing;
#[cfg(test)]
mod tests;

/// A [`tower::Layer`] that adds an HTTP cache in front of a client service.
///
/// The store is the one required choice; everything else has a default, listed with each
/// setter. Without [`secret_key`](Self::secret_key) entries are stored unsigned: a checksum then
/// detects accidental corruption, but **not** tampering, since anyone can recompute it.
///
/// # Example
///
/// ```
/// use hyper_client_cache::{CacheLayer, MemoryStore, SecretKey};
///
/// # fn main() -> Result<(), hyper_client_cache::KeyError> {
/// let layer = CacheLayer::new(MemoryStore::default())
///     .secret_key(SecretKey::new("a long random secret from your vault")?);
/// let service = tower::ServiceBuilder::new()
///     .layer(layer)
///     .service_fn(|_req: http::Request<String>| async {
///         Ok::<_, std::convert::Infallible>(http::Response::new(String::from("hello")))
///     });
/// # drop(service);
/// # Ok(())
/// # }
/// ```
///
/// # Clone
///
/// Cloning copies the settings and clones the store handle (for the stores of this crate, a
/// reference count: clones share the same entries).
#[derive(Clone)]
#[must_use]
pub struct CacheLayer<St, K = NoBodyKeys> {
    store: St,
    bodies: K,
    config: Config,
}

impl<St> CacheLayer<St> {
    /// A layer that keeps entries in `store`, as a private (single-user) cache, unsigned.
    pub fn new(store: St) -> Self {
        Self {
            store,
            bodies: NoBodyKeys,
            config: Config::new(),
        }
    }
}

impl<St, K> CacheLayer<St, K> {
    /// Make the request body part of the key for the methods cached beyond `GET`/`HEAD` (see
    /// [`allowed_methods`](Self::allowed_methods)), e.g. a `POST` to a search or GraphQL
    /// endpoint. A body is read only when its size is known (`size_hint` has an upper bound)
    /// and at most `max_bytes`; it then reaches the origin unchanged (rebuilt from the same
    /// bytes; trailers of such a body are not kept). A longer body, or one of unknown length,
    /// bypasses the cache untouched. A body that turns out longer than its size hint said fails
    /// the request with an error.
    ///
    /// The services of the returned layer need a request body type that can be rebuilt from
    /// bytes (`From<Bytes>`, as `http_body_util::Full<Bytes>` is); the compiler checks it.
    ///
    /// ```
    /// use http::Method;
    /// use hyper_client_cache::{CacheLayer, MemoryStore, DEFAULT_MAX_KEYED_BODY};
    ///
    /// let layer = CacheLayer::new(MemoryStore::default())
    ///     .allowed_methods([Method::GET, Method::HEAD, Method::POST])
    ///     .key_request_bodies(DEFAULT_MAX_KEYED_BODY);
    /// # drop(layer);
    /// ```
    ///
    /// Default: bodies are not read (64 KiB, [`DEFAULT_MAX_KEYED_BODY`](crate::DEFAULT_MAX_KEYED_BODY),
    /// is the suggested limit).
    pub fn key_request_bodies(self, max_bytes: usize) -> CacheLayer<St, BodyKeys> {
        CacheLayer {
            store: self.store,
            bodies: BodyKeys { limit: max_bytes },
            config: self.config,
        }
    }

    /// Signs every entry with this key (a [`SecretKey`](crate::SecretKey)) or key ring
    /// ([`KeyRing`], for rotation), and refuses entries that do not verify.
    ///
    /// Default: no key, entries unsigned.
    pub fn secret_key(mut self, keys: impl Into<KeyRing>) -> Self {
        self.config.envelope = Envelope::new(Some(keys.into()));
        self
    }

    /// The MAC that signs new entries (with [`secret_key`](Self::secret_key)). By default
    /// ([`Mac::Auto`](crate::Mac::Auto)) HMAC-SHA256 for bodies announced at
    /// [`MAC_AUTO_BELOW`](crate::MAC_AUTO_BELOW) bytes or less and keyed BLAKE3 for the others,
    /// each the faster there; `Mac::HmacSha256` for deployments that need a FIPS-approved MAC.
    /// Entries signed with either are read whatever this says (the algorithm is in each entry);
    /// docs/security.md has the argument for both.
    ///
    /// ```
    /// use hyper_client_cache::{CacheLayer, Mac, MemoryStore, SecretKey};
    /// let layer = CacheLayer::new(MemoryStore::default())
    ///     .secret_key(SecretKey::new("a secret of at least 32 bytes, from a vault").unwrap())
    ///     .mac(Mac::HmacSha256);
    /// ```
    pub fn mac(mut self, mac: crate::Mac) -> Self {
        self.config.mac = mac;
        self
    }

    /// Compresses stored bodies (features `lz4`, `zstd`): each 64 KiB segment, before it is
    /// signed or encrypted, when that pays (see [`Compression`](crate::Compression): a size
    /// threshold, never a body with a `Content-Encoding`, never a segment that does not shrink).
    /// Stores then hold more entries in the same memory, and hits move fewer bytes. Entries are
    /// read whether or not they were compressed, whatever this says.
    ///
    /// ```
    /// use hyper_client_cache::{CacheLayer, Compression, MemoryStore};
    /// let layer = CacheLayer::new(MemoryStore::default()).compress(Compression::default());
    /// ```
    ///
    /// Default: off. With [`encrypt`](Self::encrypt), off unless
    /// [`Compression::when_encrypted`](crate::Compression::when_encrypted) (docs/security.md).
    #[cfg(any(feature = "lz4", feature = "zstd"))]
    pub fn compress(mut self, compression: crate::Compression) -> Self {
        self.config.compression = Some(compression);
        self
    }

    /// Encrypts every entry with AES-256-GCM under this key (or key ring), so that whoever can
    /// read the store cannot read the responses, and refuses entries that do not decrypt
    /// (tampered, moved to another key, or merely signed: a downgrade). Replaces
    /// [`secret_key`](Self::secret_key); the same secret can be used for both, since each purpose
    /// gets its own HKDF-derived key.
    ///
    /// Default: off.
    pub fn encrypt(mut self, keys: impl Into<KeyRing>) -> Self {
        self.config.envelope = Envelope::encrypted(keys.into());
        self
    }

    /// The largest blob the cache accepts from the store; larger blobs are refused (a miss, and
    /// the entry is replaced) before any MAC, decryption or decoding work, so a store writer
    /// cannot make clients burn CPU or memory.
    ///
    /// Default: `max_body_size` + 1 MiB (room for headers).
    pub fn max_blob_size(mut self, bytes: usize) -> Self {
        self.config.max_blob_size = Some(bytes);
        self
    }

    /// Query parameters and request headers left out of the cache key **and removed from what is
    /// stored** (typically API keys and tracking parameters): the parameters are dropped from the
    /// stored URI, and a header named here that a response varies on is kept only as a keyed
    /// digest, so a request with another value still misses (RFC 9111 §4.1) but the value itself
    /// is never written. Parameter names are matched exactly, header names case-insensitively.
    ///
    /// Default: none.
    pub fn ignored_parameters<I, T>(mut self, names: I) -> Self
    where
        I: IntoIterator<Item = T>,
        T: Into<String>,
    {
        self.config.keying.ignored = names.into_iter().map(Into::into).collect();
        self
    }

    /// The freshness lifetime for responses that do not state their own (requests-cache's
    /// `expire_after`). With [`cache_control(false)`](Self::cache_control) it applies to every
    /// response, replacing what the headers say. See [`ExpireAfter`] for the values and
    /// [docs/configuration.md](https://github.com/hyper-client-cache/hyper-client-cache/blob/main/docs/configuration.md) for the precedence table.
    ///
    /// Default: none (RFC 9111 rules only: explicit freshness, else the `Last-Modified`
    /// heuristic).
    pub fn expire_after(mut self, value: impl Into<ExpireAfter>) -> Self {
        self.config.expire_after = Some(value.into());
        self
    }

    /// An expiry rule for the URLs matching `pattern`, a glob over `host/path` (no scheme, no
    /// query; the host lowercased, a default port dropped, any other port kept:
    /// `api.example.com:8443/*`): `*` matches any run of characters, `/` included, `?` one
    /// character, `{a,b}` either. Rules are tried in the order they were added; the first match
    /// wins, over [`expire_after`](Self::expire_after), and a request's own [`ExpireAfter`]
    /// extension wins over the rules.
    ///
    /// The pattern is parsed before the chain ([`UrlPattern::new`](crate::UrlPattern::new)),
    /// so the builder never fails half-way:
    ///
    /// ```
    /// use std::time::Duration;
    /// use hyper_client_cache::{CacheLayer, ExpireAfter, MemoryStore, UrlPattern};
    ///
    /// # fn main() -> Result<(), hyper_client_cache::PatternError> {
    /// let statics = UrlPattern::new("static.example.com/*")?;
    /// let live = UrlPattern::new("api.example.com/v1/live/*")?;
    /// let api = UrlPattern::new("api.example.com/*")?;
    /// let layer = CacheLayer::new(MemoryStore::default())
    ///     .expire_url(statics, ExpireAfter::Never)
    ///     .expire_url(live, ExpireAfter::DoNotCache)
    ///     .expire_url(api, Duration::from_secs(60));
    /// # drop(layer);
    /// # Ok(())
    /// # }
    /// ```
    pub fn expire_url(mut self, pattern: UrlPattern, value: impl Into<ExpireAfter>) -> Self {
        self.config
            .url_rules
            .add(pattern.matcher().clone(), value.into());
        self
    }

    /// Whether a response's explicit freshness (`Cache-Control: max-age`/`s-maxage`, `Expires`)
    /// wins over [`expire_after`](Self::expire_after) and URL rules. `false` makes the user's
    /// lifetime apply to every response and stops the response's reuse directives (`no-cache`,
    /// `must-revalidate`, `stale-*`) from being consulted; `no-store`, `private` (shared mode),
    /// `Authorization` (shared mode) and `Vary` are still obeyed. Without a user lifetime, the
    /// headers decide either way.
    ///
    /// Default: `true`.
    pub fn cache_control(mut self, honor: bool) -> Self {
        self.config.cache_control = honor;
        self
    }

    /// Treat every entry received from the origin before `time` as absent: a lookup that finds
    /// one answers as a miss (and the response that replaces it is stored as usual).
    ///
    /// This bounds what a store writer can do by *replaying* entries this cache sealed earlier
    /// ([docs/security.md, "Replay"](https://github.com/hyper-client-cache/hyper-client-cache/blob/main/docs/security.md#threat-model)): nothing from before `time` is ever served, whatever mode,
    /// `max-stale` or stale rule applies. It is also "purge everything" without a scan: set it to
    /// now (in every instance of a fleet) and the whole store is cold. The time compared is the
    /// entry's `response_time`, which is inside the signed (or sealed) part of the blob, so an
    /// attacker without the key cannot move it; a 304 revalidation renews it.
    ///
    /// Default: none.
    pub fn not_before(mut self, time: std::time::SystemTime) -> Self {
        self.config.not_before = Some(time);
        self
    }

    /// Use the cache but never write to it: lookups as usual, no stores, no deletions (neither
    /// invalidation nor the removal of rejected entries).
    ///
    /// Default: `false`.
    pub fn read_only(mut self, read_only: bool) -> Self {
        self.config.read_only = read_only;
        self
    }

    /// The request methods that are cached. `HEAD` requests are answered from a stored `GET`.
    /// A method other than `GET`/`HEAD` (a `POST` to a search or GraphQL endpoint) is cached
    /// only when its requests can be told apart: with a [`key_fn`](Self::key_fn) that looks at
    /// what differs, or with [`key_request_bodies`](Self::key_request_bodies); otherwise it goes
    /// to the origin uncached. A cached method is treated as safe: its responses do not
    /// invalidate stored entries (RFC 9111 §4.4).
    ///
    /// Default: `GET`, `HEAD`.
    pub fn allowed_methods<I>(mut self, methods: I) -> Self
    where
        I: IntoIterator<Item = Method>,
    {
        self.config.methods = methods.into_iter().collect();
        self
    }

    /// The response statuses that are stored; any other is not, whatever its headers say.
    ///
    /// Default: none set: RFC 9111 decides (any final status except 206 and 304 with explicit
    /// freshness; RFC 9110 §15.1's heuristically cacheable ones, 200, 203, 204, 300, 301, 308,
    /// 404, 405, 410, 414, 501, also by heuristic or by the user's
    /// [`expire_after`](Self::expire_after)).
    pub fn allowed_statuses<I>(mut self, statuses: I) -> Self
    where
        I: IntoIterator<Item = StatusCode>,
    {
        self.config.statuses = Some(statuses.into_iter().collect());
        self
    }

    /// A predicate over the response (status, version, headers) deciding whether it is stored,
    /// applied again on every read: a stored entry the predicate now rejects is deleted and the
    /// request goes to the origin.
    ///
    /// ```
    /// use hyper_client_cache::{CacheLayer, MemoryStore};
    ///
    /// // Never cache responses that carry a Set-Cookie.
    /// let layer = CacheLayer::new(MemoryStore::default())
    ///     .filter(|parts: &http::response::Parts| !parts.headers.contains_key("set-cookie"));
    /// # drop(layer);
    /// ```
    ///
    /// Default: none.
    pub fn filter<F>(mut self, predicate: F) -> Self
    where
        F: Fn(&http::response::Parts) -> bool + Send + Sync + 'static,
    {
        self.config.filter = Some(Arc::new(predicate));
        self
    }

    /// Request headers whose values become part of the cache key (requests-cache's
    /// `match_headers`), for APIs whose answers depend on a header but that do not say so with
    /// `Vary`. A name also given to [`ignored_parameters`](Self::ignored_parameters) is left out.
    ///
    /// Default: none (RFC 9111: method and URI; `Vary` selects among variants).
    pub fn match_headers<I>(mut self, names: I) -> Self
    where
        I: IntoIterator<Item = HeaderName>,
    {
        self.config.keying.match_headers = names.into_iter().collect();
        self
    }

    /// Replaces the cache key: the string `f` returns is hashed (in its own domain, so it
    /// never collides with a built-in key) into the key an entry is stored under. `Vary` still
    /// selects among variants stored under one key.
    ///
    /// ```
    /// use hyper_client_cache::{CacheLayer, KeyParts, MemoryStore};
    ///
    /// // One entry per path, whatever the host (say, several mirrors of one API).
    /// let layer = CacheLayer::new(MemoryStore::default())
    ///     .key_fn(|parts: &KeyParts<'_>| format!("{} {}", parts.method, parts.uri.path()));
    /// # drop(layer);
    /// ```
    ///
    /// Default: none (see [`CacheKey::for_request`](crate::CacheKey::for_request)).
    pub fn key_fn<F>(mut self, f: F) -> Self
    where
        F: Fn(&KeyParts<'_>) -> String + Send + Sync + 'static,
    {
        self.config.keying.custom = Some(Arc::new(f));
        self
    }

    /// The response field that carries cache tags, besides `Surrogate-Key` (default:
    /// `Cache-Tag`). Tags are stored with the entry (inside its signed bytes) and select
    /// entries for [`Inspector::purge_tag`](crate::Inspector::purge_tag); values are split on
    /// commas and whitespace. The tag fields are removed from every answer to callers unless
    /// [`keep_tag_headers`](Self::keep_tag_headers) says otherwise.
    pub fn tag_header(mut self, name: HeaderName) -> Self {
        self.config.tag_headers = vec![name, HeaderName::from_static("surrogate-key")];
        self.config.tag_headers.dedup();
        self
    }

    /// Pass the tag fields ([`tag_header`](Self::tag_header)) on to callers. Default: `false`
    /// (they are removed, as a CDN removes them before a response leaves it).
    pub fn keep_tag_headers(mut self, keep: bool) -> Self {
        self.config.keep_tag_headers = keep;
        self
    }

    /// Add an RFC 9211 `Cache-Status` header to every response, e.g.
    /// `hyper-client-cache; hit; ttl=42` or `hyper-client-cache; fwd=miss; fwd-status=200; stored`.
    /// The same information is always in the [`CacheStatus`](crate::CacheStatus) and
    /// [`CacheInfo`](crate::CacheInfo) extensions.
    ///
    /// Default: off.
    pub fn cache_status_header(mut self, enabled: bool) -> Self {
        self.config.cache_status_header = enabled;
        self
    }

    /// An [`Inspector`](crate::Inspector) over this layer's store, with its keys and settings:
    /// list, count and delete entries.
    pub fn inspector(&self) -> crate::Inspector<St>
    where
        St: Clone,
    {
        crate::Inspector::new(self.store.clone(), Arc::new(self.config.finished()))
    }

    /// What to do with an entry that fails verification.
    ///
    /// Default: [`OnBadSignature::Error`].
    pub fn on_bad_signature(mut self, policy: OnBadSignature) -> Self {
        self.config.on_bad_signature = policy;
        self
    }

    /// The largest body that is stored; larger responses stream through to the caller in full
    /// and are not stored, and the layer never holds more than this much of one body.
    ///
    /// Default: [`DEFAULT_MAX_BODY_SIZE`](crate::DEFAULT_MAX_BODY_SIZE) (8 MiB).
    pub fn max_body_size(mut self, bytes: usize) -> Self {
        self.config.max_body_size = bytes;
        self
    }

    /// Use shared-cache rules (RFC 9111 §3.5, §5.2.2.7, §5.2.2.10: `private` is not stored,
    /// `s-maxage` applies, responses to requests with `Authorization` need explicit permission).
    ///
    /// Default: `false`, a private cache, as a client's cache usually is.
    pub fn shared(mut self, shared: bool) -> Self {
        self.config.shared = shared;
        self.config.note_reuse_settings();
        self
    }

    /// How long one store operation (lookup, write, delete) may take. A lookup that takes longer
    /// is treated as a store failure (a miss, or an error when [`fail_closed`](Self::fail_closed));
    /// a write that takes longer is dropped. On tokio's timer when the runtime has one, else on
    /// a timer thread ([docs/stores.md](https://github.com/hyper-client-cache/hyper-client-cache/blob/main/docs/stores.md)).
    ///
    /// Default: [`DEFAULT_STORE_TIMEOUT`](crate::DEFAULT_STORE_TIMEOUT) (500 ms).
    pub fn store_timeout(mut self, timeout: Duration) -> Self {
        self.config.store_timeout = timeout;
        self
    }

    /// The circuit breaker over every store operation of the layer: after consecutive failures
    /// or timeouts the store is not asked (requests go to the origin at once,
    /// [`CacheStatus::StoreUnavailable`](crate::CacheStatus::StoreUnavailable)) until a probe
    /// succeeds. Pass a [`CircuitBreaker`] to tune it or to watch its state; it keeps its own
    /// clock (the default one follows [`clock`](Self::clock)).
    ///
    /// Default: on, [`CircuitBreaker::new()`] (5 failures, probes after 250 ms, then at least
    /// once a second). See [docs/stores.md](https://github.com/hyper-client-cache/hyper-client-cache/blob/main/docs/stores.md#when-the-store-is-down-the-circuit-breaker).
    pub fn circuit_breaker(mut self, breaker: CircuitBreaker) -> Self {
        self.config.breaker = Some(breaker);
        self.config.breaker_default = false;
        self
    }

    /// No circuit breaker: every store operation asks the store, and pays its timeout when the
    /// store is down.
    pub fn without_circuit_breaker(mut self) -> Self {
        self.config.breaker = None;
        self.config.breaker_default = false;
        self
    }

    /// The layer's circuit breaker (shared by every service it builds), to read its state.
    pub fn breaker(&self) -> Option<&CircuitBreaker> {
        self.config.breaker.as_ref()
    }

    /// Fail requests whose store lookup fails or times out, with a
    /// [`StoreError`](crate::StoreError), instead of going to the origin.
    ///
    /// Default: `false` (fail-open: a broken store costs hits, never requests).
    pub fn fail_closed(mut self, fail_closed: bool) -> Self {
        self.config.fail_closed = fail_closed;
        self
    }

    /// Serve a stored response that is at most `max_staleness` past its freshness when the
    /// origin fails (a transport error, or 500, 502, 503, 504), even if the response did not
    /// allow it with `stale-if-error` (RFC 5861). Responses with `must-revalidate` or `no-cache`
    /// (and `proxy-revalidate` / `s-maxage` in shared mode) are never served stale.
    ///
    /// Default: off (only `stale-if-error` allows it).
    pub fn serve_stale_on_error(mut self, max_staleness: Duration) -> Self {
        self.config.stale_on_error = Some(max_staleness);
        self
    }

    /// Counters of hits, misses, store errors and bad signatures, shared by every service this
    /// layer builds (and by clones of the layer).
    pub fn metrics(&self) -> CacheMetrics {
        self.config.metrics.clone()
    }

    /// The clock used for every freshness decision; tests pass a
    /// [`ManualClock`](crate::ManualClock).
    ///
    /// Default: [`SystemClock`](crate::SystemClock).
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.config.clock = Arc::new(clock);
        // The default breaker measures its waits on the layer's clock.
        if self.config.breaker_default {
            let clock = self.config.clock.clone();
            self.config.breaker = self.config.breaker.map(|b| b.with_clock(clock));
        }
        self
    }

    /// The same settings over another store (e.g. to give each tenant its own store while
    /// keeping one configuration).
    pub fn with_store<St2>(mut self, store: St2) -> CacheLayer<St2, K> {
        // Another store has its own health: the default breaker starts closed again.
        if self.config.breaker_default {
            self.config.breaker = self.config.breaker.map(|b| b.fresh());
        }
        CacheLayer {
            store,
            bodies: self.bodies,
            config: self.config,
        }
    }

    /// The key under which this layer stores the response to `request` (for a `HEAD`, the
    /// `GET`'s), with every setting that shapes keys applied: ignored parameters, `match_headers`,
    /// `key_fn`, and, with a secret key, the keyed name ([docs/security.md, "Key names"](https://github.com/hyper-client-cache/hyper-client-cache/blob/main/docs/security.md#key-names)). For
    /// looking an entry up in a store by hand; [`CacheKey::for_request`](crate::CacheKey::for_request)
    /// is the key of a layer without any of those settings.
    ///
    /// ```
    /// use hyper_client_cache::{CacheKey, CacheLayer, MemoryStore, SecretKey};
    ///
    /// let request = http::Request::get("http://example.com/a").body(()).unwrap();
    /// let plain = CacheLayer::new(MemoryStore::default());
    /// assert_eq!(plain.key_for(&request), CacheKey::for_request(&request));
    /// let signed = plain.secret_key(SecretKey::new("a long random secret from your vault").unwrap());
    /// assert_ne!(signed.key_for(&request), CacheKey::for_request(&request));
    /// assert!(signed.key_for(&request).as_str().starts_with("hcc1k:"));
    /// ```
    pub fn key_for<B>(&self, request: &http::Request<B>) -> crate::CacheKey {
        let method = crate::policy::decision::stored_method(request.method());
        self.config.finished_keying().key(request, method, None)
    }

    /// The store this layer writes to.
    pub fn store(&self) -> &St {
        &self.store
    }
}

impl<S, St: Clone, K: Clone> Layer<S> for CacheLayer<St, K> {
    type Service = Cache<S, St, K>;

    fn layer(&self, inner: S) -> Cache<S, St, K> {
        Cache::from_parts(
            inner,
            self.store.clone(),
            self.bodies.clone(),
            Arc::new(self.config.finished()),
        )
    }
}

impl<St: fmt::Debug, K> fmt::Debug for CacheLayer<St, K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CacheLayer")
            .field("store", &self.store)
            .field("protection", &self.config.envelope.mode())
            .field("on_bad_signature", &self.config.on_bad_signature)
            .field("max_body_size", &self.config.max_body_size)
            .field("shared", &self.config.shared)
            .field("coalesce_timeout", &self.config.coalesce_timeout)
            .field("store_timeout", &self.config.store_timeout)
            .field("fail_closed", &self.config.fail_closed)
            .finish_non_exhaustive()
    }
}
