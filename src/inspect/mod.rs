//! [`Inspector`]: listing, counting and deleting stored entries, through the [`Store`] service,
//! so it works on every backend.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use http::{Method, StatusCode};

use crate::config::Config;
use crate::controls::url_glob;
use crate::envelope::OpenError;
use crate::error::{BoxError, StoreError};
use crate::key::{host_path, CacheKey};
use crate::policy::fresh::lifetime;
use crate::policy::freshness::AgeInputs;
use crate::policy::retention::expires_at;
use crate::store::{Store, StoreRequest, StoreResponse};

mod read;

/// Lists, counts and deletes the entries of a layer's store, verifying each one with the
/// layer's key. Built by [`CacheLayer::inspector`](crate::CacheLayer::inspector).
///
/// Every operation goes through the store's [`StoreRequest::Keys`], `Get`, `Delete` and `Clear`.
/// `Get` and `Delete` are bounded by the layer's store timeout; `Keys` and `Clear`, which walk
/// the whole store (every file of a disk store, a `SCAN` of the whole Redis database), by
/// [`Inspector::whole_store_timeout`] (default [`DEFAULT_WHOLE_STORE_TIMEOUT`]). An entry that fails verification (tampered, written
/// with another key, garbage) is never decoded: a listing reports it in
/// [`Listing::invalid`] and carries on.
///
/// # Example
///
/// ```
/// use hyper_client_cache::{CacheLayer, MemoryStore};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
/// let layer = CacheLayer::new(MemoryStore::default());
/// let inspector = layer.inspector();
/// // ... use services built from `layer` ...
/// let listing = inspector.entries().await?;
/// for entry in &listing.entries {
///     println!("{} {} {} bytes, expired: {}", entry.status, entry.url, entry.size, entry.is_expired);
/// }
/// println!("{} entries, {} bytes", listing.count(), listing.total_bytes());
/// inspector.delete_expired().await?;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct Inspector<St> {
    store: St,
    config: Arc<Config>,
    whole_store_timeout: Duration,
}

/// Default for [`Inspector::whole_store_timeout`]: 60 seconds.
pub const DEFAULT_WHOLE_STORE_TIMEOUT: Duration = Duration::from_secs(60);

/// One stored entry, as [`Inspector::entries`] reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct EntryInfo {
    /// The key it is stored under.
    pub key: CacheKey,
    /// The request method it answers.
    pub method: Method,
    /// The request URL, as stored (ignored parameters removed, credentials redacted).
    pub url: String,
    /// The response status.
    pub status: StatusCode,
    /// The size of the stored blob in bytes.
    pub size: usize,
    /// When the response was received from the origin.
    pub created_at: SystemTime,
    /// When it stops (or stopped) being fresh.
    pub expires: Option<SystemTime>,
    /// It is no longer fresh (it may still be revalidated or served stale where allowed).
    pub is_expired: bool,
    /// It is the copy of a `Vary` variant stored under its own key (every varying response is
    /// stored under the URL's key and under its variant's key).
    pub is_variant: bool,
    /// Its cache tags (`Cache-Tag`, `Surrogate-Key`; see
    /// [`CacheLayer::tag_header`](crate::CacheLayer::tag_header)), as signed with the entry.
    pub tags: Vec<String>,
}

/// An entry that could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct InvalidEntry {
    /// The key it is stored under.
    pub key: CacheKey,
    /// It failed verification (tampered, or written with a key this layer does not accept),
    /// as opposed to merely being unreadable (another format version, or garbage in an
    /// unsigned store).
    pub bad_signature: bool,
    /// It may be somebody else's valid entry, which this inspector cannot judge: signed under a
    /// key id its key ring does not hold (another deployment sharing the store, a key rotated
    /// out), protected while it has no key, in a newer release's format, or larger than its
    /// `max_blob_size`. `false` for what fails under a key id of the ring, is no envelope, or
    /// is unsigned where signing is required. `hcc verify --delete` deletes these only with
    /// `--delete-foreign`.
    pub foreign: bool,
    /// Why, for humans.
    pub reason: String,
}

/// What [`Inspector::describe`] found under a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Described {
    /// An entry that verified.
    Entry(EntryInfo),
    /// An entry that did not (never decoded).
    Invalid(InvalidEntry),
}

/// A glob over `host/path`, as for [`CacheLayer::expire_url`](crate::CacheLayer::expire_url),
/// to select entries by URL.
#[derive(Debug, Clone)]
pub struct UrlPattern(globset::GlobMatcher);

impl UrlPattern {
    /// Compiles `pattern` (`*` matches any run of characters, `/` included), before a builder
    /// chain takes it ([`CacheLayer::expire_url`](crate::CacheLayer::expire_url) cannot fail).
    ///
    /// ```
    /// use hyper_client_cache::UrlPattern;
    ///
    /// let pattern = UrlPattern::new("api.example.com:8443/v1/*")?;
    /// assert!(pattern.matches("https://api.example.com:8443/v1/users?page=2"));
    /// assert!(!pattern.matches("https://api.example.com/v1/users"), "the port is part of the host");
    /// assert!(UrlPattern::new("api.example.com/{v1").is_err());
    /// # Ok::<(), hyper_client_cache::PatternError>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`PatternError`](crate::PatternError) for a glob that does not compile.
    pub fn new(pattern: &str) -> Result<Self, crate::PatternError> {
        Ok(Self(url_glob(pattern)?.compile_matcher()))
    }

    /// Whether `url` (an absolute URL) matches.
    pub fn matches(&self, url: &str) -> bool {
        url.parse::<http::Uri>()
            .is_ok_and(|uri| self.0.is_match(host_path(&uri, None)))
    }

    /// The glob, as given to [`new`](Self::new).
    pub fn as_str(&self) -> &str {
        self.0.glob().glob()
    }

    pub(crate) fn matcher(&self) -> &globset::GlobMatcher {
        &self.0
    }
}

/// The result of [`Inspector::entries`].
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct Listing {
    /// The entries that verified, in key order.
    pub entries: Vec<EntryInfo>,
    /// The entries that did not; they are never decoded.
    pub invalid: Vec<InvalidEntry>,
}

impl Listing {
    /// How many valid entries were listed.
    pub fn count(&self) -> usize {
        self.entries.len()
    }

    /// The total size of the valid entries' blobs, in bytes.
    pub fn total_bytes(&self) -> u64 {
        self.entries.iter().map(|e| e.size as u64).sum()
    }
}

impl<St> Inspector<St> {
    pub(crate) fn new(store: St, config: Arc<Config>) -> Self {
        Self {
            store,
            config,
            whole_store_timeout: DEFAULT_WHOLE_STORE_TIMEOUT,
        }
    }

    /// Bounds the operations that walk the whole store (`Keys` and `Clear`), which take longer
    /// than the store timeout meant for one key on a large store. A `Clear` that runs out of
    /// time may have removed part of the entries.
    ///
    /// Default: [`DEFAULT_WHOLE_STORE_TIMEOUT`] (60 seconds).
    #[must_use]
    pub fn whole_store_timeout(mut self, timeout: Duration) -> Self {
        self.whole_store_timeout = timeout;
        self
    }
}

impl<St: fmt::Debug> fmt::Debug for Inspector<St> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Inspector")
            .field("store", &self.store)
            .finish_non_exhaustive()
    }
}

impl<St: Store> Inspector<St> {
    async fn call(&self, request: StoreRequest) -> Result<StoreResponse, StoreError> {
        let bound = match request {
            StoreRequest::Keys | StoreRequest::Clear | StoreRequest::PurgeTag { .. } => {
                self.whole_store_timeout
            }
            _ => self.config.store_timeout,
        };
        self.config.call_bounded(&self.store, bound, request).await
    }

    /// Every key of the store, sorted (one `Keys` walk). With [`describe`](Self::describe), a
    /// listing that holds one entry at a time: what a tool over a large store wants (it can
    /// show progress, and stop early).
    ///
    /// # Errors
    ///
    /// [`StoreError`] when the store cannot list its keys.
    pub async fn keys(&self) -> Result<Vec<CacheKey>, StoreError> {
        match self.call(StoreRequest::Keys).await? {
            StoreResponse::Keys(mut keys) => {
                keys.sort();
                Ok(keys)
            }
            other => Err(StoreError::failed(
                format!("the store cannot list its keys (answered {other:?})").into(),
            )),
        }
    }

    /// Every entry of the store, verified and described; entries that fail verification are
    /// reported in [`Listing::invalid`], not decoded. An entry that disappears while the listing
    /// runs (expired, evicted) is left out.
    ///
    /// # Errors
    ///
    /// [`StoreError`] when the store cannot list its keys or fails a read.
    pub async fn entries(&self) -> Result<Listing, StoreError> {
        let mut listing = Listing::default();
        for key in self.keys().await? {
            match self.describe(&key).await? {
                Some(Described::Entry(entry)) => listing.entries.push(entry),
                Some(Described::Invalid(invalid)) => listing.invalid.push(invalid),
                None => {}
            }
        }
        Ok(listing)
    }

    /// The store's keys a page at a time ([`StoreRequest::KeysPage`]): a walk over a store with
    /// millions of keys holds one page (a Redis `SCAN` step) and the entry being described, not
    /// the whole list. A store that cannot page (memory, disk) answers with all its keys as one
    /// page ([`StoreRequest::Keys`]). A key may come twice (Redis `SCAN` while it rehashes).
    /// With [`describe`](Self::describe): a listing in bounded memory.
    pub fn key_pages(
        &self,
    ) -> impl futures_util::Stream<Item = Result<Vec<CacheKey>, StoreError>> + '_ {
        enum Step {
            First,
            Next(String),
            Done,
        }
        futures_util::stream::unfold(Step::First, move |step| async move {
            let cursor = match step {
                Step::Done => return None,
                Step::First => None,
                Step::Next(cursor) => Some(cursor),
            };
            let first = cursor.is_none();
            Some(match self.call(StoreRequest::KeysPage { cursor }).await {
                Ok(StoreResponse::KeysPage { keys, next }) => {
                    (Ok(keys), next.map_or(Step::Done, Step::Next))
                }
                Ok(StoreResponse::Unsupported) if first => (self.keys().await, Step::Done),
                Ok(other) => (
                    Err(StoreError::failed(
                        format!("the store cannot page its keys (answered {other:?})").into(),
                    )),
                    Step::Done,
                ),
                Err(e) => (Err(e), Step::Done),
            })
        })
    }

    /// The entry stored under `key`, verified and described, or why it could not be read;
    /// `None` when nothing is stored there (any more).
    ///
    /// # Errors
    ///
    /// [`StoreError`] when the store fails the read.
    pub async fn describe(&self, key: &CacheKey) -> Result<Option<Described>, StoreError> {
        let Some(read::Read { size, head }) = self.read_entry(key).await? else {
            return Ok(None);
        };
        let key = key.clone();
        let now = self.config.clock.now();
        Ok(Some(match head {
            Ok(head) => {
                let head = &head;
                let (_, lifetime) = lifetime(&head.stored(), &self.config.reuse());
                let age =
                    AgeInputs::from_headers(&head.headers, head.request_time, head.response_time)
                        .current_age(now);
                Described::Entry(EntryInfo {
                    is_variant: key.as_str().contains('#'),
                    key,
                    method: head.method.clone(),
                    url: String::from_utf8_lossy(&head.uri).into_owned(),
                    status: head.status,
                    size,
                    created_at: head.response_time,
                    expires: expires_at(now, lifetime, age),
                    // Before the layer's `not_before` it is never served: as expired.
                    is_expired: age >= lifetime || self.before_not_before(head.response_time),
                    tags: crate::config::tags_in(&head.headers, &self.config.tag_headers),
                })
            }
            Err(error) => {
                let foreign = error.is_foreign();
                let (bad_signature, reason) = match error {
                    OpenError::BadSignature(bad) => {
                        tracing::warn!(key = %key, error = %bad, "listing: an entry fails verification");
                        (true, bad.to_string())
                    }
                    OpenError::Unusable(why) => {
                        tracing::debug!(key = %key, reason = why, "listing: an unreadable entry");
                        (false, why.to_owned())
                    }
                };
                Described::Invalid(InvalidEntry {
                    key,
                    bad_signature,
                    foreign,
                    reason,
                })
            }
        }))
    }

    /// Whether a valid `GET` entry is stored for `url` (any variant).
    ///
    /// # Errors
    ///
    /// [`StoreError`] when the store fails, or `url` is not a valid URI.
    pub async fn contains(&self, url: &str) -> Result<bool, StoreError> {
        // Under every name: during a key rotation an entry may still have its old one.
        for key in self.url_keys(url)? {
            if let Some(read::Read { head: Ok(head), .. }) = self.read_entry(&key).await? {
                if !self.before_not_before(head.response_time) {
                    return Ok(true);
                }
            }
        }
        Ok(false)
    }

    /// Received before the layer's `not_before`: the layer treats it as absent.
    fn before_not_before(&self, response_time: std::time::SystemTime) -> bool {
        self.config.not_before.is_some_and(|t| response_time < t)
    }

    /// The GET keys of `url` under every name set of the key ring, current first.
    fn url_keys(&self, url: &str) -> Result<Vec<CacheKey>, StoreError> {
        let uri: http::Uri = url.parse().map_err(|e| StoreError::failed(Box::new(e)))?;
        Ok(self.config.keying.get_keys(uri, None))
    }

    /// Deletes the entry stored under `key`.
    ///
    /// # Errors
    ///
    /// [`StoreError`] when the store fails.
    pub async fn delete(&self, key: &CacheKey) -> Result<(), StoreError> {
        self.call(StoreRequest::Delete { key: key.clone() })
            .await
            .map(drop)
    }

    async fn delete_keys(&self, keys: Vec<CacheKey>) -> Result<usize, StoreError> {
        let n = keys.len();
        for key in keys {
            self.delete(&key).await?;
        }
        Ok(n)
    }

    /// Deletes what is stored for `GET url`: the entry and every `Vary` variant of it. Returns
    /// how many blobs were deleted.
    ///
    /// # Errors
    ///
    /// [`StoreError`] when the store fails, or `url` is not a valid URI.
    pub async fn delete_url(&self, url: &str) -> Result<usize, StoreError> {
        // Under every name (and each name's variants): during a key rotation an entry may
        // still have its old one.
        let names = self.url_keys(url)?;
        let prefixes: Vec<String> = names.iter().map(|k| format!("{k}#")).collect();
        let keys = self
            .keys()
            .await?
            .into_iter()
            .filter(|k| names.contains(k) || prefixes.iter().any(|p| k.as_str().starts_with(p)))
            .collect();
        self.delete_keys(keys).await
    }

    /// Deletes the entries for which `predicate` returns `true`. Entries that fail verification
    /// are left alone (see [`Listing::invalid`] to delete them by key). Returns how many were
    /// deleted.
    ///
    /// # Errors
    ///
    /// [`StoreError`] when the store fails.
    pub async fn delete_where<F>(&self, predicate: F) -> Result<usize, StoreError>
    where
        F: Fn(&EntryInfo) -> bool,
    {
        let keys = self
            .entries()
            .await?
            .entries
            .into_iter()
            .filter(|e| predicate(e))
            .map(|e| e.key)
            .collect();
        self.delete_keys(keys).await
    }

    /// Deletes the entries whose URL matches `pattern`, a glob over `host/path` as for
    /// [`CacheLayer::expire_url`](crate::CacheLayer::expire_url).
    ///
    /// # Errors
    ///
    /// An invalid pattern ([`PatternError`](crate::PatternError)) or a [`StoreError`].
    pub async fn delete_matching(&self, pattern: &str) -> Result<usize, BoxError> {
        let pattern = UrlPattern::new(pattern)?;
        let deleted = self.delete_where(|e| pattern.matches(&e.url)).await?;
        Ok(deleted)
    }

    /// Deletes every entry that carries `tag` (in its `Cache-Tag` or `Surrogate-Key` field).
    /// Returns how many keys were deleted.
    ///
    /// A store with a tag index ([`RedisStore`](crate::RedisStore): a sorted set per tag,
    /// written with each entry) purges from the index, without reading an entry: one round trip
    /// per 500 keys. The index knows the tag by its digests ([`tag_index_names`](Self::tag_index_names)):
    /// one purge per key of the ring, since entries written before a key rotation were indexed
    /// under the previous key's name. Any other store, and a store whose index may be
    /// incomplete or was found tampered with (it answers `complete: false`), is walked as by
    /// [`purge_tag_verified`](Self::purge_tag_verified).
    ///
    /// The index lives in the store, beside the entries, and is not signed: whoever can write to
    /// the store can add keys to it (so a purge deletes entries that do not carry the tag,
    /// which that writer could delete anyway) or take keys out of it (so a purge misses them).
    /// Neither lets anything be *served* that the cache did not sign. Where that matters, use
    /// [`purge_tag_verified`](Self::purge_tag_verified), which reads the signed tags.
    ///
    /// # Errors
    ///
    /// [`StoreError`] when the store fails.
    pub async fn purge_tag(&self, tag: &str) -> Result<usize, StoreError> {
        // A store with a tag index purges from it, without reading the entries.
        let mut removed = 0;
        let mut complete = true;
        for name in self.tag_index_names(tag) {
            match self.call(StoreRequest::PurgeTag { tag: name }).await? {
                StoreResponse::Purged {
                    removed: n,
                    complete: c,
                } => {
                    removed += n;
                    complete &= c;
                }
                StoreResponse::Unsupported => {
                    return Ok(removed + self.purge_tag_verified(tag).await?)
                }
                other => {
                    return Err(StoreError::failed(
                        format!("the store cannot purge by tag (answered {other:?})").into(),
                    ))
                }
            }
        }
        if complete {
            Ok(removed)
        } else {
            // The index may have lost some (evicted, tampered with): the walk finds the rest.
            Ok(removed + self.purge_tag_verified(tag).await?)
        }
    }

    /// The names this layer gives `tag` in a store's tag index (what
    /// [`StoreRequest::PutTagged`] and [`StoreRequest::PurgeTag`] carry): opaque digests, one
    /// per key of the ring, current first (one without a key). With a secret, `t1k:` and an
    /// HMAC-SHA256 under a key derived for this purpose; without, `t1:` and a SHA-256. For tools
    /// that look at the index: a [`RedisStore`](crate::RedisStore) keeps the set of a name at
    /// `{prefix}#tag:{name}`.
    pub fn tag_index_names(&self, tag: &str) -> Vec<String> {
        self.config.envelope.tag_names(tag)
    }

    /// Deletes every entry that carries `tag`, as stored and signed with it, on any store: a
    /// walk of the store a page of keys at a time ([`key_pages`](Self::key_pages)), so it costs
    /// a read per entry. A store writer cannot make it delete an entry that does not carry the
    /// tag (the tags are inside the verified entry), nor hide one that does (it would have to
    /// alter the entry, which then fails verification; [`Listing::invalid`] entries are left
    /// alone). Returns how many were deleted.
    ///
    /// # Errors
    ///
    /// [`StoreError`] when the store fails.
    pub async fn purge_tag_verified(&self, tag: &str) -> Result<usize, StoreError> {
        use futures_util::StreamExt;
        let mut doomed = Vec::new();
        {
            let mut pages = std::pin::pin!(self.key_pages());
            while let Some(page) = pages.next().await {
                for key in page? {
                    if let Some(Described::Entry(entry)) = self.describe(&key).await? {
                        if entry.tags.iter().any(|t| t == tag) {
                            doomed.push(entry.key);
                        }
                    }
                }
            }
        }
        doomed.sort();
        doomed.dedup();
        self.delete_keys(doomed).await
    }

    /// Deletes the entries that are no longer fresh. (The cache keeps stale entries a while, to
    /// revalidate them cheaply or serve them when the origin fails; this gives the space back.)
    ///
    /// # Errors
    ///
    /// [`StoreError`] when the store fails.
    pub async fn delete_expired(&self) -> Result<usize, StoreError> {
        self.delete_where(|e| e.is_expired).await
    }

    /// Deletes the entries received more than `age` ago.
    ///
    /// # Errors
    ///
    /// [`StoreError`] when the store fails.
    pub async fn delete_older_than(&self, age: Duration) -> Result<usize, StoreError> {
        let now = self.config.clock.now();
        self.delete_where(|e| now.duration_since(e.created_at).unwrap_or_default() > age)
            .await
    }

    /// Deletes every entry of the store.
    ///
    /// # Errors
    ///
    /// [`StoreError`] when the store fails.
    pub async fn clear(&self) -> Result<(), StoreError> {
        self.call(StoreRequest::Clear).await.map(drop)
    }

    /// How many valid entries are stored.
    ///
    /// # Errors
    ///
    /// [`StoreError`] when the store fails.
    pub async fn count(&self) -> Result<usize, StoreError> {
        Ok(self.entries().await?.count())
    }

    /// The total size in bytes of the valid entries' blobs.
    ///
    /// # Errors
    ///
    /// [`StoreError`] when the store fails.
    pub async fn total_bytes(&self) -> Result<u64, StoreError> {
        Ok(self.entries().await?.total_bytes())
    }
}
