//! The one URI and authority normalization of the crate: what keys, URL rules and
//! invalidation see of a request's target.

use http::uri::Scheme;
use http::{header, Request, Uri};

/// The authority a request goes to, as keys and URL rules see it, with the scheme's default
/// port dropped; not lowercased (callers lowercase while they copy). The one authority
/// normalization of the crate.
///
/// The URI's authority when it has one: it is where the client connects (and, for https, whose
/// certificate it checks), so an entry is always keyed by the server that answered. Only a
/// relative URI (as a server sees it) takes its authority from `host`. A `Host` header that
/// differs from the URI's authority is keyed *as well* ([`normalized_target`]): an HTTP/1 origin
/// routes on it, so two virtual hosts behind one address never share an entry, and a request
/// sent to one server with another's name in `Host` never stores under that other name.
fn authority<'a>(uri: &'a Uri, host: Option<&'a str>) -> &'a str {
    let authority = match uri.authority() {
        Some(a) => a.as_str(),
        None => host.unwrap_or(""),
    };
    without_default_port(uri, authority)
}

fn without_default_port<'a>(uri: &Uri, authority: &'a str) -> &'a str {
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

/// Whether the request's `Host` is one the cache can key: absent, or one field line holding a
/// valid authority without userinfo. A repeated `Host` (servers disagree on which counts) or one
/// that is not an authority (non-ASCII bytes, `/`, `@`, ...) makes the request bypass the cache:
/// the key could not say what the origin will see.
pub(crate) fn host_is_keyable<B>(request: &Request<B>) -> bool {
    let mut hosts = request.headers().get_all(header::HOST).iter();
    let Some(first) = hosts.next() else {
        return true;
    };
    hosts.next().is_none()
        && first
            .to_str()
            .ok()
            .filter(|h| !h.contains('@'))
            .and_then(|h| h.parse::<http::uri::Authority>().ok())
            .is_some()
}

fn host_header<B>(request: &Request<B>) -> Option<&str> {
    request
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
}

/// `host[:port]/path` of a URI, as URL patterns see it: the host lowercased, a default port
/// dropped, no scheme, no query. A relative URI takes its authority from `host`.
pub(crate) fn host_path(uri: &Uri, host: Option<&str>) -> String {
    let mut out = authority(uri, host).to_ascii_lowercase();
    out.push_str(match uri.path() {
        "" => "/",
        p => p,
    });
    out
}

/// The target URI, absolute: the request's URI, or for a relative one (as a server sees it) the
/// URI on its `Host`, for resolving `Location` / `Content-Location` against (RFC 9111 §4.4).
pub(crate) fn target_uri<B>(request: &Request<B>) -> Uri {
    let uri = request.uri();
    let host = host_header(request).filter(|h| !h.is_empty());
    let (None, Some(host)) = (uri.authority(), host) else {
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

/// `host_path` of a request (its `Host` header for a relative URI).
pub(crate) fn request_host_path<B>(request: &Request<B>) -> String {
    host_path(request.uri(), host_header(request))
}

/// `scheme://authority/path?sorted-query`, normalized as described on [`CacheKey::for_request`].
/// Built in one buffer: this runs on every request.
pub(crate) fn normalized_target<B>(request: &Request<B>, ignored: &[String]) -> String {
    let uri = request.uri();
    let scheme = uri.scheme_str().unwrap_or("http");
    let host = host_header(request).filter(|h| !h.is_empty());
    let authority = authority(uri, host);
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
    // A `Host` that names another authority than the one connected to is what an HTTP/1 origin
    // routes on: keyed too, after a NUL (which no URI contains, so no URL collides with it).
    if let (Some(_), Some(host)) = (uri.authority(), host) {
        let host = without_default_port(uri, host);
        if !host.eq_ignore_ascii_case(authority) {
            out.push_str("\0host\0");
            let at = out.len();
            out.push_str(host);
            out[at..].make_ascii_lowercase();
        }
    }
    out
}

pub(super) fn param_name(pair: &str) -> &str {
    pair.split_once('=').map_or(pair, |(name, _)| name)
}
