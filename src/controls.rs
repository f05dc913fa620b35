//! The controls people know from requests-cache and the fetch() API: expiry values, per-request
//! cache modes, URL rules and response filters. What the cache reports back is in `status.rs`;
//! custom keys are in `key/`.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use globset::{Glob, GlobMatcher};

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

/// A user's response filter.
pub(crate) type ResponseFilter = Arc<dyn Fn(&http::response::Parts) -> bool + Send + Sync>;

/// A glob pattern that does not compile. It names the pattern; why it does not compile is its
/// [`source`](std::error::Error::source) (the message is not repeated in `Display`).
#[derive(Debug)]
pub struct PatternError {
    pattern: String,
    source: globset::Error,
}

impl fmt::Display for PatternError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid URL pattern {:?}", self.pattern)
    }
}

impl std::error::Error for PatternError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

/// Compiles a URL glob; `*` matches any run of characters, `/` included.
pub(crate) fn url_glob(pattern: &str) -> Result<Glob, PatternError> {
    globset::GlobBuilder::new(pattern)
        .case_insensitive(false)
        .literal_separator(false)
        .build()
        .map_err(|source| PatternError {
            pattern: pattern.to_owned(),
            source,
        })
}

/// Per-URL expiry rules: glob patterns over `host/path`, first match wins. Each pattern is
/// compiled when it is parsed ([`UrlPattern::new`](crate::UrlPattern::new)), so adding a rule
/// cannot fail; a request tries them in order (a handful per layer).
#[derive(Clone, Default)]
pub(crate) struct UrlRules {
    rules: Vec<(GlobMatcher, ExpireAfter)>,
}

impl UrlRules {
    /// Adds a rule after the others (for tests that compile the glob in the same expression;
    /// it cannot fail).
    #[cfg(test)]
    pub(crate) fn push(&mut self, glob: Glob, value: ExpireAfter) -> Result<(), PatternError> {
        self.add(glob.compile_matcher(), value);
        Ok(())
    }

    /// Adds a rule after the others.
    pub(crate) fn add(&mut self, matcher: GlobMatcher, value: ExpireAfter) {
        self.rules.push((matcher, value));
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// The value of the first rule whose pattern matches `host_path`.
    pub(crate) fn find(&self, host_path: &str) -> Option<ExpireAfter> {
        self.rules
            .iter()
            .find(|(matcher, _)| matcher.is_match(host_path))
            .map(|(_, value)| *value)
    }
}

impl fmt::Debug for UrlRules {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.rules.iter().map(|(m, v)| (m.glob().glob(), v)))
            .finish()
    }
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
    fn bad_pattern_is_an_error() {
        assert!(url_glob("a/{b").is_err());
    }
}
