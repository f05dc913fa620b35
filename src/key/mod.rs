//! Cache keys: which stored entry a request maps to.
//!
//! The primary key (RFC 9111 §2: "the request method and target URI") is a SHA-256 digest of the
//! method and a normalized URI, prefixed with a format version. Changing how keys are built bumps
//! the version, so an upgrade produces clean misses instead of wrong hits.

use std::fmt;
use std::sync::Arc;

use http::{HeaderMap, Method, Request, Uri};
use percent_encoding::percent_decode_str;
use ring::{digest, hmac};

/// The version prefix of every key this crate builds. Bump it whenever normalization changes.
const KEY_FORMAT: &str = "hcc1";
/// The prefix of a keyed name (an HMAC under the layer's key-name key instead of SHA-256).
const KEY_FORMAT_KEYED: &str = "hcc1k";

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
    /// The authority is the URI's (where the client connects; a relative URI, as a server sees
    /// it, takes the `Host` header's). A `Host` header naming another authority is part of the
    /// key as well (RFC 9110 §7.2: an HTTP/1 origin routes on it, and hyper-util sends a caller's
    /// own `Host`): two virtual hosts behind one address never share an entry, and a request sent
    /// to one server with another's name in `Host` never answers for that other name.
    ///
    /// ```
    /// use hyper_client_cache::CacheKey;
    ///
    /// let a = http::Request::get("http://10.0.0.1/").header("host", "a.example").body(()).unwrap();
    /// let b = http::Request::get("http://10.0.0.1/").header("host", "b.example").body(()).unwrap();
    /// let plain = http::Request::get("http://a.example/").body(()).unwrap();
    /// let same = http::Request::get("http://A.example:80/").header("host", "a.example").body(()).unwrap();
    /// assert_ne!(CacheKey::for_request(&a), CacheKey::for_request(&b));
    /// assert_ne!(CacheKey::for_request(&a), CacheKey::for_request(&plain));
    /// assert_eq!(CacheKey::for_request(&same), CacheKey::for_request(&plain));
    /// ```
    pub fn for_request<B>(request: &Request<B>) -> Self {
        let normalized = normalized_target(request, &[]);
        Self::from_parts(request.method(), &normalized)
    }

    fn from_parts(method: &Method, normalized_target: &str) -> Self {
        let mut h = digest::Context::new(&digest::SHA256);
        start(&mut h, method, normalized_target);
        Digest::finish(h)
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

    /// The key of the incomplete entry (a stored `206`, RFC 9111 §3.3) of this key's request:
    /// beside the complete one, never in its place. `#` starts every derived key (variants'
    /// too), so removing a URL's `key#…` removes it as well.
    pub(crate) fn partial(&self) -> Self {
        let mut s = String::with_capacity(self.0.len() + 8);
        s.push_str(&self.0);
        s.push_str("#partial");
        Self(s.into())
    }

    /// Whether this key has the shape of a variant name of `primary`: `primary#` followed by 32
    /// lowercase hex digits. A cheap check before an entry is decoded; [`is_variant_of`]
    /// (Self::is_variant_of) decides.
    pub(crate) fn may_be_variant_of(&self, primary: &[u8]) -> bool {
        let me = self.0.as_bytes();
        me.len() == primary.len() + 33
            && me.starts_with(primary)
            && me[primary.len()] == b'#'
            && me[primary.len() + 1..]
                .iter()
                .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    }

    /// Whether this key is the name of the variant of `primary` that `head` (a response that
    /// varies) is stored under: its generation and selecting values hash to this name.
    pub(crate) fn is_variant_of(&self, primary: &[u8], head: &crate::entry::EntryHead) -> bool {
        let Ok(primary) = std::str::from_utf8(primary) else {
            return false;
        };
        !head.vary.is_empty()
            && CacheKey::from_stored(primary)
                .variant(head.generation, head.vary.iter().map(|(_, v)| v))
                == *self
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

/// The digest behind a key name: SHA-256 without a secret (`hcc1:`), HMAC-SHA256 under the
/// layer's key-name key with one (`hcc1k:`), so that names cannot be recomputed, nor guesses of
/// what they hash confirmed, without the secret ([docs/security.md, "Key names"](https://github.com/hyper-client-cache/hyper-client-cache/blob/main/docs/security.md#key-names)). A trait, not an
/// enum: the HMAC state is large, and the plain path should not carry (and copy) it.
trait Digest {
    const FORMAT: &'static str;
    fn update(&mut self, bytes: &[u8]);
    fn digest(self) -> [u8; 32];

    /// The key named by this digest.
    fn finish(self) -> CacheKey
    where
        Self: Sized,
    {
        let digest = self.digest();
        // Built on the stack and allocated once (this runs on every request).
        let mut buf = [0u8; KEY_FORMAT_KEYED.len() + 1 + 64];
        let format = Self::FORMAT.as_bytes();
        let len = format.len() + 1 + 2 * digest.len();
        let (prefix, hex) = buf.split_at_mut(format.len() + 1);
        prefix[..format.len()].copy_from_slice(format);
        prefix[format.len()] = b':';
        write_hex(hex, &digest);
        CacheKey::from_ascii(&buf[..len])
    }
}

impl Digest for digest::Context {
    const FORMAT: &'static str = KEY_FORMAT;
    fn update(&mut self, bytes: &[u8]) {
        digest::Context::update(self, bytes);
    }
    fn digest(self) -> [u8; 32] {
        let mut out = [0u8; 32];
        out.copy_from_slice(self.finish().as_ref());
        out
    }
}

impl Digest for hmac::Context {
    const FORMAT: &'static str = KEY_FORMAT_KEYED;
    fn update(&mut self, bytes: &[u8]) {
        hmac::Context::update(self, bytes);
    }
    fn digest(self) -> [u8; 32] {
        let mut out = [0u8; 32];
        out.copy_from_slice(self.sign().as_ref());
        out
    }
}

/// Method and normalized target: the start of every request's key.
fn start(h: &mut impl Digest, method: &Method, normalized_target: &str) {
    h.update(method.as_str().as_bytes());
    h.update(b"\0");
    h.update(normalized_target.as_bytes());
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
    /// With a secret: the key-name keys of the ring, current first (`Envelope::name_keys`).
    /// Names are HMACs under the current one; the previous ones name the entries written before
    /// a rotation, looked up when the current name misses.
    pub(crate) names: Vec<hmac::Key>,
}

impl fmt::Debug for Keying {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keying")
            .field("ignored", &self.ignored)
            .field("redacted", &self.redacted)
            .field("match_headers", &self.match_headers)
            .field("custom", &self.custom.is_some())
            .field("keyed_names", &self.names.len())
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
            names: Vec::new(),
        }
    }

    /// How many sets of names a request has: one, plus one per previous key of the ring.
    pub(crate) fn name_sets(&self) -> usize {
        self.names.len().max(1)
    }

    /// The key of `request` as if its method were `method` (a HEAD is answered from the GET
    /// entry, and invalidation removes GET entries).
    #[cfg(test)]
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
        self.key_in(0, request, method, body)
    }

    /// [`key`](Self::key) under name set `set` (0: the current key's; see `names`).
    pub(crate) fn key_in<B>(
        &self,
        set: usize,
        request: &Request<B>,
        method: &Method,
        body: Option<&[u8]>,
    ) -> CacheKey {
        match self.names.get(set) {
            Some(names) => self.key_with(hmac::Context::with_key(names), request, method, body),
            None => self.key_with(digest::Context::new(&digest::SHA256), request, method, body),
        }
    }

    fn key_with<B>(
        &self,
        mut h: impl Digest,
        request: &Request<B>,
        method: &Method,
        body: Option<&[u8]>,
    ) -> CacheKey {
        if let Some(custom) = &self.custom {
            // The user's key in its own domain (`custom\0` first): it never equals a request's.
            let user_key = custom(&KeyParts {
                method,
                uri: request.uri(),
                headers: request.headers(),
                body,
            });
            h.update(b"custom\0");
            h.update(user_key.as_bytes());
            return h.finish();
        }
        let target = normalized_target(request, &self.ignored);
        start(&mut h, method, &target);
        for name in &self.match_headers {
            if self
                .ignored
                .iter()
                .any(|i| i.eq_ignore_ascii_case(name.as_str()))
            {
                continue;
            }
            // Length-prefixed, so that no two different header sets digest alike.
            h.update(b"\0h");
            h.update(&(name.as_str().len() as u64).to_be_bytes());
            h.update(name.as_str().as_bytes());
            for value in request.headers().get_all(name) {
                h.update(&(value.len() as u64).to_be_bytes());
                h.update(value.as_bytes());
            }
            h.update(b"\0e");
        }
        if let Some(body) = body {
            h.update(b"\0b");
            h.update(&(body.len() as u64).to_be_bytes());
            h.update(body);
        }
        h.finish()
    }

    /// The GET keys of `uri` under every name set, current first (what an invalidation removes),
    /// as a GET with this `Host` header (the unsafe request's, whose origin `uri` is on) would
    /// have them.
    pub(crate) fn get_keys(
        &self,
        uri: http::Uri,
        host: Option<&http::HeaderValue>,
    ) -> Vec<CacheKey> {
        let mut probe = Request::new(());
        *probe.uri_mut() = uri;
        if let Some(host) = host {
            probe.headers_mut().insert(http::header::HOST, host.clone());
        }
        (0..self.name_sets())
            .map(|set| self.key_in(set, &probe, &Method::GET, None))
            .collect()
    }

    /// The GET key of `uri` under the current names, as a plain GET request for it would have.
    #[cfg(test)]
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

    /// A (decoded) parameter name that carries a credential: a redacted name in any case, also
    /// as the base or a bracketed part of a structured name (`token[]`, `user[password]`, as
    /// PHP and Rails read them).
    fn is_redacted(&self, name: &str) -> bool {
        let hit = |n: &str| self.redacted.iter().any(|r| r.eq_ignore_ascii_case(n));
        let base = name.split('[').next().unwrap_or(name);
        hit(name)
            || hit(base)
            || name
                .split('[')
                .skip(1)
                .any(|part| hit(part.split(']').next().unwrap_or(part)))
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
        // Pairs are separated by `&` or `;` (some servers accept either): each kept pair keeps
        // the separator it had.
        let mut rest = query;
        let mut sep = '&';
        while !rest.is_empty() {
            let end = rest.find(['&', ';']).unwrap_or(rest.len());
            let pair = &rest[..end];
            let next_sep = rest[end..].chars().next();
            rest = rest.get(end + 1..).unwrap_or("");
            let this_sep = std::mem::replace(&mut sep, next_sep.unwrap_or('&'));
            if pair.is_empty() {
                continue;
            }
            let raw = param_name(pair);
            let name = percent_decode_str(raw).decode_utf8_lossy();
            if self.ignored.iter().any(|i| i == raw || *i == name) {
                continue;
            }
            out.write_char(if first { '?' } else { this_sep })?;
            first = false;
            if pair.contains('=') && self.is_redacted(&name) {
                write!(out, "{raw}=REDACTED")?;
            } else {
                out.write_str(pair)?;
            }
        }
        Ok(())
    }
}

mod uri;

pub(crate) use uri::{host_is_keyable, host_path, request_host_path, target_uri};
use uri::{normalized_target, param_name};

#[cfg(test)]
mod tests;
