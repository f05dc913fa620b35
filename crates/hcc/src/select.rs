//! What `--url` and `show` select (a URL as requested, or a glob over `host/path`), and what
//! `hcc` says when nothing matches.

use hyper_client_cache::{BoxError, UrlPattern};

use crate::{escape, output};

/// What `--url` and `show` select: one URL (as requested), or a glob over `host/path`.
pub(crate) enum Selector {
    Url(String),
    Glob(UrlPattern),
}

impl Selector {
    pub(crate) fn parse(text: &str) -> Result<Self, BoxError> {
        if text.contains("://") {
            Ok(Selector::Url(normal_url(text)))
        } else {
            Ok(Selector::Glob(UrlPattern::new(text)?))
        }
    }

    pub(crate) fn matches(&self, url: &str) -> bool {
        match self {
            Selector::Url(wanted) => normal_url(url) == *wanted,
            Selector::Glob(pattern) => pattern.matches(url),
        }
    }
}

/// A URL as the cache writes it: scheme and host lowercased, the scheme's default port
/// dropped, `/` for an empty path.
fn normal_url(url: &str) -> String {
    let Ok(uri) = url.parse::<http::Uri>() else {
        return url.to_owned();
    };
    let (Some(scheme), Some(authority)) = (uri.scheme_str(), uri.authority()) else {
        return url.to_owned();
    };
    let scheme = scheme.to_ascii_lowercase();
    let host = authority.host().to_ascii_lowercase();
    let port = match (scheme.as_str(), authority.port_u16()) {
        ("http", Some(80)) | ("https", Some(443)) | (_, None) => String::new(),
        (_, Some(port)) => format!(":{port}"),
    };
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    format!("{scheme}://{host}{port}{path}")
}

/// Why nothing matched, on stderr (stdout stays machine-readable): the usual causes.
/// What a walk saw, for the hint: counts, and the authorities (`host:port`) of the valid
/// entries (a bounded sample).
#[derive(Default)]
pub(crate) struct Seen {
    pub(crate) valid: u64,
    pub(crate) invalid: u64,
    authorities: std::collections::BTreeSet<String>,
}

impl Seen {
    /// Most authorities kept for the hint.
    const MAX_AUTHORITIES: usize = 10_000;

    pub(crate) fn entry(&mut self, url: &str) {
        self.valid += 1;
        if self.authorities.len() < Self::MAX_AUTHORITIES {
            if let Some(authority) = url
                .parse::<http::Uri>()
                .ok()
                .and_then(|u| u.authority().cloned())
            {
                self.authorities
                    .insert(authority.as_str().to_ascii_lowercase());
            }
        }
    }

    /// The stored authorities with a port whose host is `host`.
    fn with_port(&self, host: &str) -> Vec<&str> {
        self.authorities
            .iter()
            .filter(|a| {
                a.rsplit_once(':')
                    .is_some_and(|(h, _)| h.eq_ignore_ascii_case(host))
            })
            .map(String::as_str)
            .collect()
    }
}

pub(crate) fn no_match_hint(selector: Option<(&str, &Selector)>, seen: &Seen) {
    let (valid, invalid) = (seen.valid, seen.invalid);
    let mut hint = match selector {
        Some((text, _)) => format!(
            "hcc: nothing matches `{}` ({} in the store",
            escape::text(text),
            output::count(valid, "valid entry", "valid entries")
        ),
        None => format!(
            "hcc: nothing to list ({}",
            output::count(valid, "valid entry", "valid entries")
        ),
    };
    if invalid > 0 {
        let verb = if invalid == 1 { "does" } else { "do" };
        hint.push_str(&format!(", {invalid} that {verb} not verify"));
    }
    hint.push_str(").");
    if let Some((text, Selector::Glob(_))) = selector {
        let (host, rest) = text.split_once('/').unwrap_or((text, "*"));
        if !host.contains(':') {
            let stored = seen.with_port(host);
            if let Some(first) = stored.first() {
                hint.push_str(&format!(
                    "\n  A port is part of the host: entries are stored for {}; try `{}/{}`.",
                    stored
                        .iter()
                        .take(5)
                        .map(|a| format!("`{}`", escape::text(a)))
                        .collect::<Vec<_>>()
                        .join(", "),
                    escape::text(first),
                    escape::text(rest)
                ));
            } else {
                hint.push_str(
                    "\n  A port is part of the host: `127.0.0.1:8080/*` matches \
                     http://127.0.0.1:8080/..., `127.0.0.1/*` does not.",
                );
            }
        }
        hint.push_str("\n  A glob is over host/path, without the scheme or the query.");
    }
    if let Some((_, Selector::Url(_))) = selector {
        hint.push_str(
            "\n  A URL matches as requested, query included; a glob (`host/path*`) is looser.",
        );
    }
    if valid == 0 || invalid > 0 {
        hint.push_str(
            "\n  The entries may be under another key prefix (`--prefix`, Redis), or written \
             with another key (`--key-env`: entries of another key do not verify; see `hcc \
             verify`).",
        );
    }
    eprintln!("{hint}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_selector_is_a_url_or_a_glob() {
        let url = Selector::parse("HTTP://Example.COM:80/a?b=1").unwrap();
        assert!(url.matches("http://example.com/a?b=1"));
        assert!(!url.matches("http://example.com/a"));
        let glob = Selector::parse("example.com:8080/a/*").unwrap();
        assert!(glob.matches("http://example.com:8080/a/b/c"));
        assert!(!glob.matches("http://example.com/a/b"));
        assert!(Selector::parse("example.com/{a").is_err());
    }
}
