//! The plan of a request, made before anything is awaited: its key, how the cache reads its
//! directives (with the user's modes and expiry folded in), whether it is looked up, whether its
//! response may be stored (and why not), and what it invalidates. Pure: no I/O, no clock.

use http::{Method, Request, Uri};

use crate::config::Config;
use crate::controls::{CacheMode, ExpireAfter};
use crate::key::{host_is_keyable, target_uri, CacheKey};
use crate::policy::decision::stored_method;
use crate::policy::invalidation::is_safe;
use crate::policy::ranges::{parse_range, ByteRange, RangeRequest};
use crate::policy::validation::{has_unsupported_preconditions, is_conditional};
use crate::policy::RequestDirectives;
use crate::status::{CacheStatus, NotStoredReason};

/// Whether the response to a request may be stored, decided from the request alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub(super) enum StoreIntent {
    /// It may be (the response still has to be storable, RFC 9111 §3).
    Store,
    /// It is not, for this reason.
    Skip(NotStoredReason),
}

/// §4.4: what an unsafe request invalidates when its response is not an error.
#[derive(Debug, Clone)]
pub(super) struct Invalidation {
    /// The GET keys of the target URI, under every name set of the key ring.
    pub(super) targets: Vec<CacheKey>,
    /// The target URI, to resolve `Location` / `Content-Location` against.
    pub(super) uri: Uri,
    /// The request's `Host`: the keys of those URIs on the same origin carry it too.
    pub(super) host: Option<http::HeaderValue>,
}

/// A `GET` for one byte range (RFC 9110 §14.2), answered from a stored response when one holds
/// it; with several ranges the request is not looked up.
#[derive(Debug, Clone)]
pub(super) struct Ranged {
    pub(super) range: ByteRange,
    /// `If-Range` (§13.1.5): serve the range only if it holds for the stored response.
    pub(super) if_range: Option<http::HeaderValue>,
}

/// What the cache does with one request, decided before anything is awaited.
#[derive(Debug, Clone)]
pub(super) struct Plan {
    /// The request's key, when its method is cached.
    pub(super) key: Option<CacheKey>,
    /// Its keys under the previous keys of the ring (during a rotation; else empty): looked up
    /// in turn when the current key misses.
    pub(super) older_keys: Vec<CacheKey>,
    /// The request's directives as the cache reads them (modes and own expiry folded in).
    pub(super) cc: RequestDirectives,
    /// The request's cache mode (an extension; never sent to the origin).
    pub(super) mode: CacheMode,
    /// The user's expiry for this request (per-request, URL rule or default).
    pub(super) expire: Option<ExpireAfter>,
    /// A HEAD request: a hit is served without its body.
    pub(super) head: bool,
    /// The request has If-None-Match / If-Modified-Since of its own.
    pub(super) conditional: bool,
    /// The store is asked before the origin.
    pub(super) lookup: bool,
    pub(super) store: StoreIntent,
    /// The method is one the user allowed beyond GET/HEAD (its key tells requests apart).
    pub(super) method_allowed: bool,
    pub(super) invalidate: Option<Box<Invalidation>>,
    /// A `GET` for one byte range.
    pub(super) range: Option<Box<Ranged>>,
    /// A `POST` whose response may be stored for later `GET`s of its target, under this key
    /// (RFC 9110 §9.3.3: with explicit freshness and a `Content-Location` naming the target).
    pub(super) post_key: Option<CacheKey>,
}

impl Plan {
    /// The plan of `request`, whose buffered body is `body` when the layer keys bodies.
    pub(super) fn new<B>(config: &Config, request: &Request<B>, body: Option<&[u8]>) -> Self {
        let mut cc = RequestDirectives::parse(request.headers());
        let mode = request
            .extensions()
            .get::<CacheMode>()
            .copied()
            .unwrap_or_default();
        let (expire, own_expiry) = config.expiry_for(request);
        let method = request.method();
        // GET is looked up and stored; HEAD is answered from a stored GET (RFC 9111 §4: the
        // stored method must allow the response to be used for the presented request) but its
        // own responses are not stored. Other methods are cached only when the user allowed
        // them and the key can tell their requests apart (a key function); else they go
        // straight through.
        let head = method == Method::HEAD;
        let allowed = config.methods.contains(method);
        let method_allowed = allowed && method != Method::GET && !head;
        let keyable = method == Method::GET
            || head
            || config.keying.custom.is_some()
            || (method_allowed && body.is_some());
        let disabled = mode == CacheMode::NoStore || expire == Some(ExpireAfter::DoNotCache);
        // A repeated or invalid `Host`: which host the origin sees is unknowable, so no key.
        let host_ok = host_is_keyable(request);
        let cacheable = allowed && keyable && !disabled && host_ok;
        let key = cacheable.then(|| config.keying.key(request, stored_method(method), body));
        let older_keys = match key {
            Some(_) if config.keying.name_sets() > 1 => (1..config.keying.name_sets())
                .map(|set| {
                    config
                        .keying
                        .key_in(set, request, stored_method(method), body)
                })
                .collect(),
            _ => Vec::new(),
        };
        // The modes and a request's own expiry act on the cache's reading of the request, never
        // on the headers sent to the origin.
        match mode {
            CacheMode::NoCache | CacheMode::Refresh => cc.no_cache = true,
            CacheMode::OnlyIfCached => cc.only_if_cached = true,
            _ => {}
        }
        if own_expiry {
            match expire {
                // Not older than this, as a request max-age would say (§5.2.1.1).
                Some(ExpireAfter::Duration(d)) => {
                    let secs = d.as_secs();
                    cc.max_age = Some(cc.max_age.map_or(secs, |m| m.min(secs)));
                }
                Some(ExpireAfter::ExpireImmediately) => cc.no_cache = true,
                _ => {}
            }
        }
        // Preconditions the cache does not evaluate send the request to the origin untouched;
        // If-None-Match / If-Modified-Since are answered from a fresh entry (§4.3.2). Request
        // no-cache is handled by the decision (validate first).
        // RFC 9110 §14.2: "GET is the only method for which range handling is defined". One
        // range is answered from a stored response; several go to the origin.
        let range = if method == Method::GET {
            parse_range(request.headers())
        } else {
            None
        };
        let lookup = cacheable
            && mode != CacheMode::Reload
            && range != Some(RangeRequest::Multiple)
            && !has_unsupported_preconditions(request.headers());
        // RFC 9110 §9.3.3: "Responses to POST requests are only cacheable when they include
        // explicit freshness information ... and a Content-Location header field that has the
        // same value as the POST's target URI ... A cached POST response can be reused to
        // satisfy a later GET or HEAD request." (A POST the user caches as such is keyed apart.)
        let post_key = (method == Method::POST
            && !allowed
            && host_ok
            && !disabled
            && !cc.no_store
            && !config.read_only
            && config.methods.contains(&Method::GET))
        .then(|| config.keying.key(request, &Method::GET, None));
        let range = match range {
            Some(RangeRequest::Single(range)) => Some(Box::new(Ranged {
                range,
                if_range: request.headers().get(http::header::IF_RANGE).cloned(),
            })),
            _ => None,
        };
        let store = if disabled {
            StoreIntent::Skip(NotStoredReason::Disabled)
        } else if allowed && !host_ok {
            StoreIntent::Skip(NotStoredReason::InvalidHost)
        } else if allowed && !keyable {
            StoreIntent::Skip(NotStoredReason::RequestBody)
        } else if !allowed || head {
            StoreIntent::Skip(NotStoredReason::Method)
        } else if cc.no_store {
            StoreIntent::Skip(NotStoredReason::RequestNoStore)
        } else if config.read_only {
            StoreIntent::Skip(NotStoredReason::ReadOnly)
        } else {
            StoreIntent::Store
        };
        // §4.4: unsafe methods invalidate what is stored for their target (and Location /
        // Content-Location) when the response is not an error. A method the user caches is
        // treated as safe; a read-only cache deletes nothing.
        let safe = is_safe(method) || method_allowed;
        let invalidate = (!safe && !config.read_only).then(|| {
            Box::new(Invalidation {
                targets: (0..config.keying.name_sets())
                    .map(|set| config.keying.key_in(set, request, &Method::GET, None))
                    .collect(),
                uri: target_uri(request),
                host: request.headers().get(http::header::HOST).cloned(),
            })
        });
        Plan {
            key,
            older_keys,
            cc,
            mode,
            expire,
            head,
            conditional: is_conditional(request.headers()),
            lookup,
            store,
            method_allowed,
            invalidate,
            range,
            post_key,
        }
    }

    /// The response may be stored (a cached method, nothing in the request or the layer
    /// forbids it). Implies a key.
    pub(super) fn may_store(&self) -> bool {
        self.store == StoreIntent::Store && self.key.is_some()
    }

    /// Why nothing is stored, when the request alone says so.
    pub(super) fn not_stored(&self) -> Option<NotStoredReason> {
        match self.store {
            StoreIntent::Store => None,
            StoreIntent::Skip(why) => Some(why),
        }
    }

    /// What a response from the origin reports unless something else happens.
    pub(super) fn status(&self) -> CacheStatus {
        if self.may_store() {
            CacheStatus::Miss
        } else {
            CacheStatus::NotCacheable
        }
    }

    /// The plan of a background refresh of the same request: a plain GET (no client
    /// conditional, no HEAD, no mode), stored under the same key.
    pub(super) fn for_refresh(&self) -> Self {
        Plan {
            key: self.key.clone(),
            older_keys: self.older_keys.clone(),
            cc: self.cc.clone(),
            mode: CacheMode::Default,
            expire: self.expire,
            head: false,
            conditional: false,
            lookup: false,
            store: self.store,
            method_allowed: self.method_allowed,
            invalidate: None,
            range: None,
            post_key: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controls::UrlRules;
    use std::time::Duration;

    fn config() -> Config {
        Config::new().finished()
    }

    fn get(uri: &str) -> http::request::Builder {
        Request::get(uri)
    }

    fn plan(config: &Config, request: http::request::Builder) -> Plan {
        Plan::new(config, &request.body(()).unwrap(), None)
    }

    #[test]
    fn a_plain_get_is_looked_up_and_may_be_stored() {
        let p = plan(&config(), get("http://e.com/a"));
        assert!(p.lookup);
        assert!(p.may_store());
        assert_eq!(p.status(), CacheStatus::Miss);
        assert_eq!(p.not_stored(), None);
        assert!(p.invalidate.is_none());
        assert!(!p.head && !p.conditional);
        let want = CacheKey::for_request(&Request::get("http://e.com/a").body(()).unwrap());
        assert_eq!(p.key, Some(want));
    }

    #[test]
    fn head_is_answered_from_the_get_entry_but_not_stored() {
        let c = config();
        let p = plan(&c, Request::head("http://e.com/a"));
        let g = plan(&c, get("http://e.com/a"));
        assert!(p.head && p.lookup);
        assert_eq!(p.key, g.key);
        assert_eq!(p.store, StoreIntent::Skip(NotStoredReason::Method));
        assert_eq!(p.status(), CacheStatus::NotCacheable);
    }

    #[test]
    fn why_nothing_is_stored_has_one_answer_per_request() {
        let c = config();
        let post = plan(&c, Request::post("http://e.com/a"));
        assert_eq!(post.key, None);
        assert!(!post.lookup);
        assert_eq!(post.not_stored(), Some(NotStoredReason::Method));

        let no_store = plan(
            &c,
            get("http://e.com/a").header("cache-control", "no-store"),
        );
        assert!(no_store.lookup, "no-store still reads the cache");
        assert_eq!(no_store.not_stored(), Some(NotStoredReason::RequestNoStore));

        let mode = plan(&c, get("http://e.com/a").extension(CacheMode::NoStore));
        assert_eq!(mode.key, None);
        assert_eq!(mode.not_stored(), Some(NotStoredReason::Disabled));
        let never = plan(&c, get("http://e.com/a").extension(ExpireAfter::DoNotCache));
        assert_eq!(never.not_stored(), Some(NotStoredReason::Disabled));

        let mut ro = config();
        ro.read_only = true;
        let p = plan(&ro, get("http://e.com/a"));
        assert!(p.lookup);
        assert_eq!(p.not_stored(), Some(NotStoredReason::ReadOnly));

        // A cached POST whose body could not be buffered cannot be told apart from others.
        let mut posts = config();
        posts.methods.push(Method::POST);
        let p = plan(&posts, Request::post("http://e.com/a"));
        assert_eq!(p.key, None);
        assert_eq!(p.not_stored(), Some(NotStoredReason::RequestBody));
        let p = Plan::new(
            &posts,
            &Request::post("http://e.com/a").body(()).unwrap(),
            Some(b"q=1"),
        );
        assert!(p.may_store() && p.method_allowed);
        assert!(p.invalidate.is_none(), "a cached method is treated as safe");
    }

    #[test]
    fn modes_and_own_expiry_fold_into_the_request_directives() {
        let c = config();
        let p = plan(&c, get("http://e.com/").extension(CacheMode::NoCache));
        assert!(p.cc.no_cache);
        let p = plan(&c, get("http://e.com/").extension(CacheMode::Refresh));
        assert!(p.cc.no_cache);
        let p = plan(&c, get("http://e.com/").extension(CacheMode::OnlyIfCached));
        assert!(p.cc.only_if_cached);
        let p = plan(&c, get("http://e.com/").extension(CacheMode::Reload));
        assert!(
            !p.lookup && p.may_store(),
            "reload skips the lookup, still stores"
        );
        let p = plan(
            &c,
            get("http://e.com/")
                .header("cache-control", "max-age=100")
                .extension(ExpireAfter::Duration(Duration::from_secs(30))),
        );
        assert_eq!(p.cc.max_age, Some(30));
        let p = plan(
            &c,
            get("http://e.com/").extension(ExpireAfter::ExpireImmediately),
        );
        assert!(p.cc.no_cache);
    }

    #[test]
    fn a_url_rule_sets_the_expiry_without_touching_the_directives() {
        let mut c = config();
        let mut rules = UrlRules::default();
        let glob = crate::controls::url_glob("e.com/*").unwrap();
        rules.push(glob, ExpireAfter::ExpireImmediately).unwrap();
        c.url_rules = rules;
        let p = plan(&c, get("http://e.com/a"));
        assert_eq!(p.expire, Some(ExpireAfter::ExpireImmediately));
        assert!(
            !p.cc.no_cache,
            "only a request's own expiry acts like a request directive"
        );
    }

    #[test]
    fn unsupported_preconditions_skip_the_lookup_and_client_conditionals_are_noted() {
        let c = config();
        let p = plan(&c, get("http://e.com/").header("if-match", "\"x\""));
        assert!(!p.lookup);
        let p = plan(&c, get("http://e.com/").header("if-none-match", "\"x\""));
        assert!(p.lookup && p.conditional);
    }

    #[test]
    fn unsafe_methods_invalidate_their_target_unless_read_only() {
        let c = config();
        let p = plan(&c, Request::delete("http://e.com/items/1"));
        let inv = p.invalidate.expect("a DELETE invalidates");
        assert_eq!(
            inv.targets,
            [CacheKey::for_request(
                &Request::get("http://e.com/items/1").body(()).unwrap()
            )]
        );
        assert_eq!(inv.uri, "http://e.com/items/1");
        let mut ro = config();
        ro.read_only = true;
        assert!(plan(&ro, Request::delete("http://e.com/items/1"))
            .invalidate
            .is_none());
        let options = plan(&c, Request::options("http://e.com/"));
        assert!(options.invalidate.is_none());
    }

    #[test]
    fn a_repeated_or_invalid_host_bypasses_the_cache() {
        let c = config();
        let two = plan(
            &c,
            get("http://e.com/").header("host", "a").header("host", "b"),
        );
        let bad = Request::get("http://e.com/")
            .header("host", http::HeaderValue::from_bytes(b"a\xff").unwrap())
            .body(())
            .unwrap();
        let bad = Plan::new(&c, &bad, None);
        let at = plan(&c, get("http://e.com/").header("host", "user@e.com"));
        for p in [two, bad, at] {
            assert_eq!(p.key, None);
            assert!(!p.lookup);
            assert_eq!(p.not_stored(), Some(NotStoredReason::InvalidHost));
        }
        let fine = plan(
            &c,
            get("http://e.com/").header("host", "other.example:8080"),
        );
        assert!(fine.lookup && fine.may_store());
    }

    #[test]
    fn a_refresh_is_a_plain_request_for_the_same_key() {
        let c = config();
        let p = plan(
            &c,
            get("http://e.com/")
                .header("if-none-match", "\"x\"")
                .extension(CacheMode::ForceCache),
        );
        let r = p.for_refresh();
        assert_eq!(r.key, p.key);
        assert_eq!(r.store, p.store);
        assert!(!r.conditional && !r.head);
        assert_eq!(r.mode, CacheMode::Default);
    }
}
