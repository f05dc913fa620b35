//! The settings of [`CacheLayer`] that choose which HTTP rules beyond RFC 9111's defaults apply:
//! targeted cache-control fields (RFC 9213), Surrogate-Control (deprecated), `Accept-Language`
//! ties. (Kept apart from `mod.rs` to keep each file short.)

use http::HeaderName;

use super::CacheLayer;

impl<St, K> CacheLayer<St, K> {
    /// Obey `CDN-Cache-Control` (RFC 9213 §3) over `Cache-Control` and `Expires`: the
    /// targeted field for CDN caches. The same as
    /// [`targeted_fields([CDN_CACHE_CONTROL])`](Self::targeted_fields).
    ///
    /// For a cache that acts for the origin's owner (a gateway, a reverse proxy, a CDN-like tier
    /// of a service), not for a client's cache of other people's APIs: the origin meant those
    /// directives for its CDN. Default: off.
    pub fn cdn_cache_control(self) -> Self {
        self.targeted_fields([crate::CDN_CACHE_CONTROL])
    }

    /// Obey these targeted cache-control fields (RFC 9213) over `Cache-Control`: the target
    /// list, most specific first (e.g. a product's own `Foo-Cache-Control`, then
    /// `CDN-Cache-Control`).
    ///
    /// RFC 9213 §2.1: of the fields on the list, the first one with a valid, non-empty value
    /// decides the caching policy of a response, and `Cache-Control` and `Expires` are then
    /// ignored (a `Cache-Control: no-store` next to `CDN-Cache-Control: max-age=60` is stored
    /// for 60 s). A field that is not a valid Structured Field dictionary (RFC 8941), or is
    /// empty, is ignored as if absent. Directives keep their `Cache-Control` meaning
    /// (`max-age`, `s-maxage`, `no-store`, `no-cache`, `private`, `must-revalidate`,
    /// `stale-while-revalidate`, `stale-if-error`, ...); a value of the wrong type
    /// (`max-age="60"`) is not consumed. Replaces any list set before; an empty list turns
    /// targeted fields off. Default: off.
    pub fn targeted_fields(mut self, fields: impl IntoIterator<Item = HeaderName>) -> Self {
        self.config.targets = fields.into_iter().collect();
        self.config.note_reuse_settings();
        self
    }

    /// Act as a *surrogate* named `id` (W3C Edge Architecture Specification 1.0): a gateway
    /// cache run by the origin's owner. Forwarded requests carry
    /// `Surrogate-Capability: id="Surrogate/1.0"`, and `Surrogate-Control` response directives
    /// (`max-age`, `no-store`; untargeted or targeted `;id`) take precedence over
    /// `Cache-Control` (and over a targeted field of [`targeted_fields`](Self::targeted_fields)).
    ///
    /// Default: off (`Surrogate-Control` is ignored and nothing is added to requests).
    #[deprecated(
        since = "0.2.0",
        note = "Surrogate-Control is superseded by RFC 9213 targeted fields: use `cdn_cache_control()` or `targeted_fields(..)`; `surrogate` will be removed in the release after"
    )]
    pub fn surrogate(mut self, id: impl Into<String>) -> Self {
        self.config.surrogate = Some(id.into());
        self.config.note_reuse_settings();
        self
    }

    /// Let `Accept-Language` values whose members of equal weight come in another order select
    /// the same stored variant (`en, de` and `de, en`). RFC 9110 §12.4.2 gives such members the
    /// same preference, but many negotiators (Express's among them) break ties by order, and
    /// would answer the two in different languages: turn this on only for origins that
    /// negotiate by weight alone. Case, whitespace, `q=1` and the spelling of weights are
    /// normalised either way, and members of different weights may come in any order.
    ///
    /// Default: `false`.
    pub fn accept_language_ties(mut self, any_order: bool) -> Self {
        self.config.language_ties = any_order;
        self
    }
}
