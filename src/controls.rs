//! The controls people know from requests-cache and the fetch() API: expiry values, per-request
//! cache modes, URL rules, custom keys, and the [`CacheInfo`] a response carries.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use globset::{Glob, GlobSet, GlobSetBuilder};
use http::{HeaderMap, Method, Uri};

use crate::CacheKey;

/// How long a response stays fresh, as the user sets it: a layer default
/// ([`CacheLayer::expire_after`](crate::CacheLayer::expire_after)), a URL rule
/// ([`CacheLayer::expire_url`](crate::CacheLayer::expire_url)) or one request's override (an
/// `ExpireAfter` in the request's [`http::Extensions`]).
///
/// Named values instead of magic numbers: there is no `0` whose meaning differs between
/// libraries (aiohttp-client-cache reads `expire_after=0` as "do not cache", requests-cache as
/// "revalidate every time"); here those are [`DoNotCache`](Self::DoNotCache) and
/// [`ExpireImmediately`](Self::ExpireImmediately).
///
/// Unless [`cache_control(false)`](crate::CacheLayer::cache_control) is set, a response's own
/// explicit freshness (`Cache-Control: max-age`, `s-maxage`, `Expires`) wins over this value:
/// the setting only replaces the heuristic for responses that say nothing.
///
/// # Example
///
/// ```
/// use std::time::Duration;
/// use hyper_client_cache::ExpireAfter;
///
/// let mut request = http::Request::get("http://example.com/").body(()).unwrap();
/// // This request's response is kept for 5 minutes (and a stored one older than that is not
/// // used for it). Nothing is added to the headers sent to the origin.
/// request.extensions_mut().insert(ExpireAfter::from(Duration::from_secs(300)));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ExpireAfter {
    /// Fresh for this long after it was received.
    Duration(Duration),
    /// Fresh forever (until evicted or deleted).
    Never,
    /// Neither looked up nor stored: the request goes to the origin as if there were no cache.
    DoNotCache,
    /// Stored only when it has a validator (`ETag` / `Last-Modified`), and revalidated with the
    /// origin on every use.
    ExpireImmediately,
}

impl From<Duration> for ExpireAfter {
    fn from(d: Duration) -> Self {
        ExpireAfter::Duration(d)
    }
}

impl ExpireAfter {
    /// The freshness lifetime this value gives, `None` for `DoNotCache`.
    pub(crate) fn lifetime(self) -> Option<Duration> {
        match self {
            ExpireAfter::Duration(d) => Some(d),
            ExpireAfter::Never => Some(NEVER),
            ExpireAfter::ExpireImmediately => Some(Duration::ZERO),
            ExpireAfter::DoNotCache => None,
        }
    }
}

/// "Forever": about 136 years, far enough and small enough to add to a `SystemTime`.
pub(crate) const NEVER: Duration = Duration::from_secs(u32::MAX as u64);

/// How one request uses the cache, named after the fetch() `cache` modes. Put it in the
/// request's [`http::Extensions`]; it affects that request only and is never sent to the origin.
///
/// # Example
///
/// ```
/// use hyper_client_cache::CacheMode;
///
/// let mut request = http::Request::get("http://example.com/").body(()).unwrap();
/// request.extensions_mut().insert(CacheMode::Reload);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum CacheMode {
    /// The HTTP rules and the layer's settings decide (the default).
    #[default]
    Default,
    /// Neither look up nor store: as if there were no cache.
    NoStore,
    /// Skip the lookup, go to the origin, and store the answer (requests-cache's
    /// `force_refresh`).
    Reload,
    /// Use a stored response only after validating it with the origin (a conditional request
    /// when it has a validator), even when it is fresh.
    NoCache,
    /// Revalidate the stored response now (requests-cache's `refresh=True`): the same as
    /// [`NoCache`](Self::NoCache), under the name requests-cache users know.
    Refresh,
    /// Use any stored response that matches, fresh or stale, without contacting the origin;
    /// go to the origin (and store the answer) only when nothing is stored.
    ForceCache,
    /// Use any stored response that matches, fresh or stale; when nothing is stored, answer
    /// `504 Gateway Timeout` without contacting the origin.
    OnlyIfCached,
}

/// What the cache knows about the entry behind a response, in the response's
/// [`http::Extensions`] next to [`CacheStatus`](crate::CacheStatus).
///
/// # Example
///
/// ```
/// # use hyper_client_cache::CacheInfo;
/// # fn show(response: &http::Response<()>) {
/// if let Some(info) = response.extensions().get::<CacheInfo>() {
///     println!("from cache: {}, expires: {:?}", info.from_cache, info.expires);
/// }
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct CacheInfo {
    /// The body comes from the store (a hit, a coalesced wait, a revalidation or a stale
    /// response).
    pub from_cache: bool,
    /// The key the entry is (or is being) stored under; `None` when the request was not cached.
    pub key: Option<CacheKey>,
    /// When the stored response was received from the origin (for a response being stored: now).
    pub created_at: Option<SystemTime>,
    /// When it stops being fresh; `None` when it is not stored.
    pub expires: Option<SystemTime>,
    /// It was already stale when served (served stale by `max-stale`, a mode, or an error rule).
    pub is_expired: bool,
    /// It was validated with the origin (a `304 Not Modified`) before being served.
    pub revalidated: bool,
    /// The size of the stored blob in bytes, for responses served from the store.
    pub size: Option<usize>,
}

impl CacheInfo {
    pub(crate) fn bypass() -> Self {
        Self {
            from_cache: false,
            key: None,
            created_at: None,
            expires: None,
            is_expired: false,
            revalidated: false,
            size: None,
        }
    }
}

/// The parts of a request a custom key function sees (see
/// [`CacheLayer::key_fn`](crate::CacheLayer::key_fn)).
#[derive(Debug)]
#[non_exhaustive]
pub struct KeyParts<'a> {
    /// The method the entry is stored for (`GET` for a `HEAD` request, which is answered from
    /// the stored `GET`).
    pub method: &'a Method,
    /// The request URI.
    pub uri: &'a Uri,
    /// The request headers.
    pub headers: &'a HeaderMap,
    /// The request body, when the layer keys request bodies and this request's body was
    /// buffered.
    pub body: Option<&'a [u8]>,
}

/// A user's key function.
pub(crate) type KeyFn = Arc<dyn Fn(&KeyParts<'_>) -> String + Send + Sync>;

/// A user's response filter.
pub(crate) type ResponseFilter = Arc<dyn Fn(&http::response::Parts) -> bool + Send + Sync>;

/// A glob pattern that does not compile.
#[derive(Debug)]
pub struct PatternError(globset::Error);

impl fmt::Display for PatternError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid URL pattern: {}", self.0)
    }
}

impl std::error::Error for PatternError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.0)
    }
}

/// Compiles a URL glob; `*` matches any run of characters, `/` included.
pub(crate) fn url_glob(pattern: &str) -> Result<Glob, PatternError> {
    globset::GlobBuilder::new(pattern)
        .case_insensitive(false)
        .literal_separator(false)
        .build()
        .map_err(PatternError)
}

/// Per-URL expiry rules: glob patterns over `host/path`, first match wins.
#[derive(Clone, Default)]
pub(crate) struct UrlRules {
    globs: Vec<Glob>,
    values: Vec<ExpireAfter>,
    set: GlobSet,
}

impl UrlRules {
    pub(crate) fn push(&mut self, glob: Glob, value: ExpireAfter) -> Result<(), PatternError> {
        let mut builder = GlobSetBuilder::new();
        for g in self.globs.iter().chain(std::iter::once(&glob)) {
            builder.add(g.clone());
        }
        self.set = builder.build().map_err(PatternError)?;
        self.globs.push(glob);
        self.values.push(value);
        Ok(())
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.globs.is_empty()
    }

    /// The value of the first rule whose pattern matches `host_path`.
    pub(crate) fn find(&self, host_path: &str) -> Option<ExpireAfter> {
        self.set
            .matches(host_path)
            .into_iter()
            .min()
            .and_then(|i| self.values.get(i).copied())
    }
}

impl fmt::Debug for UrlRules {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(
                self.globs
                    .iter()
                    .zip(&self.values)
                    .map(|(g, v)| (g.glob(), v)),
            )
            .finish()
    }
}

/// `host[:port]/path` of a URI, as URL patterns see it: the host lowercased, a default port
/// dropped, no scheme, no query. A relative URI takes its authority from `host`.
pub(crate) fn host_path(uri: &Uri, host: Option<&str>) -> String {
    let scheme = uri.scheme_str().unwrap_or("http");
    let authority = uri.authority().map(|a| a.as_str()).or(host).unwrap_or("");
    let default_port = if scheme.eq_ignore_ascii_case("https") {
        ":443"
    } else if scheme.eq_ignore_ascii_case("http") {
        ":80"
    } else {
        ""
    };
    let authority = if default_port.is_empty() {
        authority
    } else {
        authority.strip_suffix(default_port).unwrap_or(authority)
    };
    let mut out = authority.to_ascii_lowercase();
    out.push_str(match uri.path() {
        "" => "/",
        p => p,
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_matching_rule_wins() {
        let mut rules = UrlRules::default();
        let d = |s| ExpireAfter::Duration(Duration::from_secs(s));
        rules
            .push(url_glob("api.example.com/v1/static/*").unwrap(), d(1))
            .unwrap();
        rules
            .push(url_glob("api.example.com/*").unwrap(), d(2))
            .unwrap();
        rules
            .push(url_glob("*.example.com/*").unwrap(), ExpireAfter::Never)
            .unwrap();
        assert_eq!(rules.find("api.example.com/v1/static/a/b.css"), Some(d(1)));
        assert_eq!(rules.find("api.example.com/v1/users"), Some(d(2)));
        assert_eq!(rules.find("cdn.example.com/x"), Some(ExpireAfter::Never));
        assert_eq!(rules.find("example.org/x"), None);
    }

    #[test]
    fn host_path_normalizes() {
        let uri: Uri = "HTTPS://API.Example.com:443/A/b?q=1".parse().unwrap();
        assert_eq!(host_path(&uri, None), "api.example.com/A/b");
        let uri: Uri = "http://e.com:8080".parse().unwrap();
        assert_eq!(host_path(&uri, None), "e.com:8080/");
        let uri: Uri = "/x".parse().unwrap();
        assert_eq!(host_path(&uri, Some("H.com")), "h.com/x");
    }

    #[test]
    fn bad_pattern_is_an_error() {
        assert!(url_glob("a/{b").is_err());
    }
}
