//! Cache keys: which stored entry a request maps to.
//!
//! The primary key (RFC 9111 §2: "the request method and target URI") is a SHA-256 digest of the
//! method and a normalized URI, prefixed with a format version. Changing how keys are built bumps
//! the version, so an upgrade produces clean misses instead of wrong hits.

use std::fmt;
use std::sync::Arc;

use http::uri::Scheme;
use http::{header, HeaderMap, Method, Request, Uri};
use percent_encoding::percent_decode_str;
use ring::digest;

/// The version prefix of every key this crate builds. Bump it whenever normalization changes.
const KEY_FORMAT: &str = "hcc1";

/// The name an entry is stored under.
///
/// Keys are built by the cache (see [`CacheKey::for_request`]); stores treat them as opaque
/// strings. Cloning is cheap (a reference count).
///
/// # Example
///
/// ```
/// use hyper_client_cache::CacheKey;
///
/// let a = http::Request::get("http://Example.COM:80/a?y=2&x=1").body(()).unwrap();
/// let b = http::Request::get("http://example.com/a?x=1&y=2").body(()).unwrap();
/// assert_eq!(CacheKey::for_request(&a), CacheKey::for_request(&b));
/// assert!(CacheKey::for_request(&a).as_str().starts_with("hcc1:"));
/// ```
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CacheKey(Arc<str>);

impl CacheKey {
    /// The key for a request: a digest of its method and normalized URI.
    ///
    /// Normalization: scheme and host are lowercased, a default port (80 for `http`, 443 for
    /// `https`) is dropped, an empty path becomes `/`, and query parameters are sorted by name
    /// (a stable sort, so repeated names keep their order).
    ///
    /// The authority is the one the origin sees (RFC 9110 §7.2): the `Host` header when the
    /// request has one (an HTTP/1 origin routes on it; hyper-util sends a caller's own `Host`),
    /// else the URI's (HTTP/2's `:authority`). So two virtual hosts behind one address never
    /// share an entry, and an HTTP/2 request whose `Host` differs from its `:authority` (a
    /// malformed request, RFC 9113 §8.3.1) gets an entry of its own.
    ///
    /// ```
    /// use hyper_client_cache::CacheKey;
    ///
    /// let a = http::Request::get("http://10.0.0.1/").header("host", "a.example").body(()).unwrap();
    /// let b = http::Request::get("http://10.0.0.1/").header("host", "b.example").body(()).unwrap();
    /// let a2 = http::Request::get("http://A.example/").body(()).unwrap();
    /// assert_ne!(CacheKey::for_request(&a), CacheKey::for_request(&b));
    /// assert_eq!(CacheKey::for_request(&a), CacheKey::for_request(&a2));
    /// ```
    pub fn for_request<B>(request: &Request<B>) -> Self {
        let normalized = normalized_target(request, &[]);
        Self::from_parts(request.method(), &normalized)
    }

    fn from_parts(method: &Method, normalized_target: &str) -> Self {
        Self::from_digest(Self::start(method, normalized_target))
    }

    fn start(method: &Method, normalized_target: &str) -> digest::Context {
        let mut ctx = digest::Context::new(&digest::SHA256);
        ctx.update(method.as_str().as_bytes());
        ctx.update(b"\0");
        ctx.update(normalized_target.as_bytes());
        ctx
    }

    /// A key from a user's key function: the digest of what it returned, in its own domain
    /// (`custom\0` first), so it can never equal a key built from a request.
    fn custom(user_key: &str) -> Self {
        let mut ctx = digest::Context::new(&digest::SHA256);
        ctx.update(b"custom\0");
        ctx.update(user_key.as_bytes());
        Self::from_digest(ctx)
    }

    fn from_digest(ctx: digest::Context) -> Self {
        let digest = ctx.finish();
        // Built on the stack and allocated once (this runs on every request).
        let mut buf = [0u8; KEY_FORMAT.len() + 1 + 64];
        let (prefix, hex) = buf.split_at_mut(KEY_FORMAT.len() + 1);
        prefix[..KEY_FORMAT.len()].copy_from_slice(KEY_FORMAT.as_bytes());
        prefix[KEY_FORMAT.len()] = b':';
        write_hex(hex, digest.as_ref());
        Self::from_ascii(&buf)
    }

    /// Only ever given ASCII (a prefix and hex digits), so the conversion cannot fail; the
    /// empty key of the error arm is unreachable.
    fn from_ascii(bytes: &[u8]) -> Self {
        Self(std::str::from_utf8(bytes).map_or_else(|_| Arc::from(""), Arc::from))
    }

    /// The key of one Vary variant of this (primary) key (RFC 9111 §4.1): a digest of the
    /// URL's variant generation and the selecting request header values, in order.
    pub(crate) fn variant<'a>(
        &self,
        generation: u64,
        values: impl IntoIterator<Item = &'a crate::entry::VaryValue>,
    ) -> Self {
        use crate::entry::VaryValue;
        let mut ctx = digest::Context::new(&digest::SHA256);
        ctx.update(&generation.to_be_bytes());
        for value in values {
            match value {
                VaryValue::Absent => ctx.update(b"A"),
                VaryValue::Clear(bytes) => {
                    ctx.update(b"C");
                    ctx.update(&(bytes.len() as u64).to_be_bytes());
                    ctx.update(bytes);
                }
                VaryValue::Digest(d) => {
                    ctx.update(b"D");
                    ctx.update(d);
                }
            }
        }
        let mut suffix = [0u8; 1 + 32];
        suffix[0] = b'#';
        write_hex(&mut suffix[1..], &ctx.finish().as_ref()[..16]);
        let mut s = String::with_capacity(self.0.len() + suffix.len());
        s.push_str(&self.0);
        s.push_str(std::str::from_utf8(&suffix).unwrap_or_default());
        Self(s.into())
    }

    /// Wraps a string a store handed back (for example while listing) as a key.
    pub fn from_stored(key: impl Into<Arc<str>>) -> Self {
        Self(key.into())
    }

    /// The key as a string, as stores see it.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Lowercase hex of `bytes` into `out` (twice as long; extra room is left as is).
fn write_hex(out: &mut [u8], bytes: &[u8]) {
    for (pair, b) in out.chunks_exact_mut(2).zip(bytes) {
        pair[0] = HEX[usize::from(b >> 4)];
        pair[1] = HEX[usize::from(b & 0xf)];
    }
}

impl fmt::Debug for CacheKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl fmt::Display for CacheKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for CacheKey {
    fn as_ref(&self) -> &str {
        &self.0
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

/// The authority a request is for, as keys and URL rules see it, with the scheme's default port
/// dropped; not lowercased (callers lowercase while they copy). The one authority normalization
/// of the crate.
///
/// What the origin sees wins (RFC 9110 §7.2, RFC 9111 §4): the `Host` header when the request
/// has one (an HTTP/1 origin routes on it, and hyper-util sends a caller's own `Host`), else the
/// URI's authority (HTTP/2's `:authority`). Over HTTP/2 a `Host` must equal `:authority` (RFC 9113
/// §8.3.1); one that differs gets an entry of its own, never a shared one.
fn authority<'a>(uri: &'a Uri, host: Option<&'a str>) -> &'a str {
    let authority = match host.filter(|h| !h.is_empty()) {
        Some(host) => host,
        None => uri.authority().map_or("", |a| a.as_str()),
    };
    // `Scheme` parses `http` / `https` in any case into its standard variants: no string
    // comparison here.
    let default_port = match uri.scheme() {
        None => ":80",
        Some(s) if *s == Scheme::HTTP => ":80",
        Some(s) if *s == Scheme::HTTPS => ":443",
        Some(_) => return authority,
    };
    authority.strip_suffix(default_port).unwrap_or(authority)
}

fn host_header<B>(request: &Request<B>) -> Option<&str> {
    request
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
}

/// `host[:port]/path` of a URI, as URL patterns see it: the host lowercased, a default port
/// dropped, no scheme, no query. `host` (a request's `Host` header) wins over the URI's
/// authority, as in the key.
pub(crate) fn host_path(uri: &Uri, host: Option<&str>) -> String {
    let mut out = authority(uri, host).to_ascii_lowercase();
    out.push_str(match uri.path() {
        "" => "/",
        p => p,
    });
    out
}

/// The target URI the origin sees: the request's URI with the authority that keys it
/// ([`authority`]), for resolving `Location` / `Content-Location` against (RFC 9111 §4.4).
pub(crate) fn target_uri<B>(request: &Request<B>) -> Uri {
    let uri = request.uri();
    let Some(host) = host_header(request).filter(|h| !h.is_empty()) else {
        return uri.clone();
    };
    let mut parts = uri.clone().into_parts();
    match host.parse() {
        Ok(authority) => parts.authority = Some(authority),
        Err(_) => return uri.clone(),
    }
    if parts.scheme.is_none() {
        parts.scheme = Some(Scheme::HTTP);
    }
    if parts.path_and_query.is_none() {
        parts.path_and_query = Some(http::uri::PathAndQuery::from_static("/"));
    }
    Uri::from_parts(parts).unwrap_or_else(|_| uri.clone())
}

/// `host_path` of a request (its `Host` header, if any, wins over the URI's authority).
pub(crate) fn request_host_path<B>(request: &Request<B>) -> String {
    host_path(request.uri(), host_header(request))
}

/// `scheme://authority/path?sorted-query`, normalized as described on [`CacheKey::for_request`].
/// Built in one buffer: this runs on every request.
pub(crate) fn normalized_target<B>(request: &Request<B>, ignored: &[String]) -> String {
    let uri = request.uri();
    let scheme = uri.scheme_str().unwrap_or("http");
    let authority = authority(uri, host_header(request));
    let path = match uri.path() {
        "" => "/",
        p => p,
    };
    let query = uri.query().unwrap_or("");
    let mut out =
        String::with_capacity(scheme.len() + authority.len() + path.len() + query.len() + 5);
    out.push_str(scheme);
    out.make_ascii_lowercase();
    out.push_str("://");
    let host_at = out.len();
    out.push_str(authority);
    out[host_at..].make_ascii_lowercase();
    out.push_str(path);
    if query.contains('&') || !ignored.is_empty() {
        let mut pairs: Vec<&str> = query
            .split('&')
            .filter(|p| !p.is_empty() && !ignored.iter().any(|i| i == param_name(p)))
            .collect();
        // Stable: `a=2&a=1` keeps its order, only different names are reordered.
        pairs.sort_by(|a, b| param_name(a).cmp(param_name(b)));
        if let Some((first, rest)) = pairs.split_first() {
            out.push('?');
            out.push_str(first);
            for p in rest {
                out.push('&');
                out.push_str(p);
            }
        }
    } else if !query.is_empty() {
        out.push('?');
        out.push_str(query);
    }
    out
}

fn param_name(pair: &str) -> &str {
    pair.split_once('=').map_or(pair, |(name, _)| name)
}

/// How a layer turns requests into keys and into the URI it stores.
#[derive(Clone)]
pub(crate) struct Keying {
    /// Query parameters (and request headers) left out of the key and of what is stored.
    pub(crate) ignored: Vec<String>,
    /// Query parameters whose values are replaced by `REDACTED` in the stored URI.
    pub(crate) redacted: Vec<String>,
    /// Request headers whose values are part of the key.
    pub(crate) match_headers: Vec<http::HeaderName>,
    /// The user's key function, replacing all of the above for the key.
    pub(crate) custom: Option<KeyFn>,
}

impl fmt::Debug for Keying {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keying")
            .field("ignored", &self.ignored)
            .field("redacted", &self.redacted)
            .field("match_headers", &self.match_headers)
            .field("custom", &self.custom.is_some())
            .finish()
    }
}

impl Keying {
    pub(crate) fn new(redacted: &[&str]) -> Self {
        Self {
            ignored: Vec::new(),
            redacted: redacted.iter().map(|s| (*s).to_owned()).collect(),
            match_headers: Vec::new(),
            custom: None,
        }
    }

    /// The key of `request` as if its method were `method` (a HEAD is answered from the GET
    /// entry, and invalidation removes GET entries).
    pub(crate) fn key_as<B>(&self, request: &Request<B>, method: &Method) -> CacheKey {
        self.key(request, method, None)
    }

    /// The key of `request` stored for `method`, with its buffered body when bodies are keyed.
    /// Without `match_headers` and a body the key is the plain method + URI digest, so adding
    /// these features did not change existing keys.
    pub(crate) fn key<B>(
        &self,
        request: &Request<B>,
        method: &Method,
        body: Option<&[u8]>,
    ) -> CacheKey {
        if let Some(custom) = &self.custom {
            return CacheKey::custom(&custom(&KeyParts {
                method,
                uri: request.uri(),
                headers: request.headers(),
                body,
            }));
        }
        let target = normalized_target(request, &self.ignored);
        if self.match_headers.is_empty() && body.is_none() {
            return CacheKey::from_parts(method, &target);
        }
        let mut ctx = CacheKey::start(method, &target);
        for name in &self.match_headers {
            if self
                .ignored
                .iter()
                .any(|i| i.eq_ignore_ascii_case(name.as_str()))
            {
                continue;
            }
            // Length-prefixed, so that no two different header sets digest alike.
            ctx.update(b"\0h");
            ctx.update(&(name.as_str().len() as u64).to_be_bytes());
            ctx.update(name.as_str().as_bytes());
            for value in request.headers().get_all(name) {
                ctx.update(&(value.len() as u64).to_be_bytes());
                ctx.update(value.as_bytes());
            }
            ctx.update(b"\0e");
        }
        if let Some(body) = body {
            ctx.update(b"\0b");
            ctx.update(&(body.len() as u64).to_be_bytes());
            ctx.update(body);
        }
        CacheKey::from_digest(ctx)
    }

    /// The GET key of `uri`, as a plain GET request for it would have.
    pub(crate) fn get_key(&self, uri: http::Uri) -> CacheKey {
        let mut probe = Request::new(());
        *probe.uri_mut() = uri;
        self.key_as(&probe, &Method::GET)
    }

    /// The request URI as it is kept with a stored entry: no userinfo (`user:password@`),
    /// ignored parameters removed, redacted ones with their value replaced by `REDACTED`.
    /// Names are compared after percent-decoding (`access%5Ftoken` is `access_token`),
    /// case-insensitively for redaction (a credential is a credential whatever its case) and
    /// exactly for ignoring.
    pub(crate) fn stored_uri(&self, uri: &Uri) -> String {
        let mut out = String::new();
        // Writing into a `String` cannot fail.
        let _ = self.write_uri(uri, &mut out);
        out
    }

    /// The URI as log lines show it: redacted as [`stored_uri`](Self::stored_uri), and
    /// formatted only when a log line is actually written.
    pub(crate) fn log_uri<'a>(&'a self, uri: &'a Uri) -> impl fmt::Display + 'a {
        struct Redacted<'a>(&'a Keying, &'a Uri);
        impl fmt::Display for Redacted<'_> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.write_uri(self.1, f)
            }
        }
        Redacted(self, uri)
    }

    fn write_uri(&self, uri: &Uri, out: &mut impl fmt::Write) -> fmt::Result {
        if let Some(scheme) = uri.scheme_str() {
            write!(out, "{scheme}://")?;
        }
        if let Some(authority) = uri.authority() {
            // RFC 3986 §3.2.1: userinfo ends at the last `@` of the authority.
            let host = authority
                .as_str()
                .rsplit_once('@')
                .map_or(authority.as_str(), |(_, h)| h);
            out.write_str(host)?;
        }
        out.write_str(uri.path())?;
        let Some(query) = uri.query() else {
            return Ok(());
        };
        let mut first = true;
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let raw = param_name(pair);
            let name = percent_decode_str(raw).decode_utf8_lossy();
            if self.ignored.iter().any(|i| i == raw || *i == name) {
                continue;
            }
            out.write_char(if first { '?' } else { '&' })?;
            first = false;
            if pair.contains('=') && self.redacted.iter().any(|r| r.eq_ignore_ascii_case(&name)) {
                write!(out, "{raw}=REDACTED")?;
            } else {
                out.write_str(pair)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(method: &str, uri: &str) -> CacheKey {
        CacheKey::for_request(&Request::builder().method(method).uri(uri).body(()).unwrap())
    }

    #[test]
    fn normalization_table() {
        let same = [
            ("http://example.com/", "HTTP://EXAMPLE.com:80/"),
            ("http://example.com", "http://example.com/"),
            ("https://example.com/x", "https://example.com:443/x"),
            ("http://e.com/p?a=1&b=2", "http://e.com/p?b=2&a=1"),
            ("http://e.com/p?a=1", "http://e.com/p?a=1&"),
        ];
        for (a, b) in same {
            assert_eq!(key("GET", a), key("GET", b), "{a} vs {b}");
        }
        let different = [
            ("http://e.com/p?a=1&a=2", "http://e.com/p?a=2&a=1"),
            ("http://e.com/P", "http://e.com/p"),
            ("http://e.com:8080/", "http://e.com/"),
            ("http://e.com/", "https://e.com/"),
        ];
        for (a, b) in different {
            assert_ne!(key("GET", a), key("GET", b), "{a} vs {b}");
        }
        assert_ne!(key("GET", "http://e.com/"), key("HEAD", "http://e.com/"));
    }

    #[test]
    fn relative_uri_uses_host_header() {
        let rel = Request::get("/x")
            .header(header::HOST, "Example.com")
            .body(())
            .unwrap();
        assert_eq!(
            CacheKey::for_request(&rel),
            key("GET", "http://example.com/x")
        );
    }

    #[test]
    fn ignored_parameters_leave_key_and_stored_uri() {
        let mut keying = Keying::new(&["api_key", "token"]);
        keying.ignored = vec!["utm_source".into(), "api_key".into()];
        let req = |uri: &str| Request::get(uri).body(()).unwrap();
        let a = keying.key_as(
            &req("http://e.com/p?a=1&utm_source=x&api_key=SECRET"),
            &Method::GET,
        );
        let b = keying.key_as(&req("http://e.com/p?a=1"), &Method::GET);
        assert_eq!(a, b);
        assert_ne!(
            keying.key_as(&req("http://e.com/p?a=1&token=T1"), &Method::GET),
            b
        );
        let stored = keying.stored_uri(
            &"http://e.com/p?a=1&utm_source=x&api_key=SECRET&Token=T1"
                .parse()
                .unwrap(),
        );
        assert_eq!(stored, "http://e.com/p?a=1&Token=REDACTED");
        assert_eq!(keying.stored_uri(&"/rel?x=1".parse().unwrap()), "/rel?x=1");
        // Userinfo is never kept; percent-encoded names are redacted and ignored as decoded.
        let uri = "http://u:PW@e.com:8080/p?TO%4bEN=S1&api%5Fkey=S2&flag&token"
            .parse()
            .unwrap();
        assert_eq!(
            keying.stored_uri(&uri),
            "http://e.com:8080/p?TO%4bEN=REDACTED&flag&token"
        );
        assert_eq!(keying.log_uri(&uri).to_string(), keying.stored_uri(&uri));
        assert_eq!(
            keying.stored_uri(&"http://u@e.com".parse().unwrap()),
            "http://e.com/"
        );
    }

    #[test]
    fn invalidation_targets_stay_on_the_same_origin() {
        use crate::policy::invalidation::same_origin;
        let keying = Keying::new(&[]);
        let post = Request::post("http://e.com/items/1").body(()).unwrap();
        // What invalidation does with a `Location`: the policy's same-origin rule, then the key.
        struct Targets<'a>(&'a Keying);
        impl Targets<'_> {
            fn same_origin_get_key(&self, post: &Request<()>, r: &str) -> Option<CacheKey> {
                same_origin(post.uri(), r).map(|uri| self.0.get_key(uri))
            }
        }
        let targets = Targets(&keying);
        let get = |u: &str| keying.key_as(&Request::get(u).body(()).unwrap(), &Method::GET);
        assert_eq!(
            targets.same_origin_get_key(&post, "/items/2"),
            Some(get("http://e.com/items/2"))
        );
        assert_eq!(
            targets.same_origin_get_key(&post, "HTTP://E.COM/items/3"),
            Some(get("http://e.com/items/3"))
        );
        assert_eq!(
            targets.same_origin_get_key(&post, "http://other.com/items/2"),
            None
        );
        assert_eq!(
            targets.same_origin_get_key(&post, "https://e.com/items/2"),
            None
        );
        assert_eq!(targets.same_origin_get_key(&post, "relative/path"), None);
        assert_eq!(targets.same_origin_get_key(&post, "not a uri"), None);
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
    fn the_host_header_wins_over_the_uri_authority() {
        let with_host =
            |uri: &str, host: &str| Request::get(uri).header("host", host).body(()).unwrap();
        let r = with_host("http://10.0.0.1:8080/p?q=1", "Tenant.example");
        assert_eq!(normalized_target(&r, &[]), "http://tenant.example/p?q=1");
        assert_eq!(request_host_path(&r), "tenant.example/p");
        assert_eq!(target_uri(&r), "http://Tenant.example/p?q=1");
        let r = with_host("https://x/", "x:443");
        assert_eq!(normalized_target(&r, &[]), "https://x/");
        // A relative URI (as a server sees it) becomes absolute on its Host.
        let r = with_host("/rel", "h.example");
        assert_eq!(target_uri(&r), "http://h.example/rel");
        // An empty or unparsable Host leaves the URI as it is.
        let r = with_host("http://e.com/", "");
        assert_eq!(normalized_target(&r, &[]), "http://e.com/");
        let r = with_host("http://e.com/", "bad host");
        assert_eq!(target_uri(&r), "http://e.com/");
    }

    #[test]
    fn key_is_versioned_hex() {
        let k = key("GET", "http://e.com/");
        assert_eq!(k.as_str().len(), 5 + 64);
        assert!(k.as_str().starts_with("hcc1:"));
    }
}
