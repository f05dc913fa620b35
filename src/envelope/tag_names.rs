//! The names of cache tags in a store's tag index.
//!
//! A tag is what an origin put in `Cache-Tag` or `Surrogate-Key`: a customer's address, an
//! invoice number. It is signed (and, with `encrypt`, encrypted) inside the entry, but a store's
//! index names it outside any entry (Redis: one sorted set per tag, `{prefix}#tag:{name}`), so
//! the cache gives the store a digest instead, and the store sees only opaque names:
//!
//! - with a secret, `t1k:` and the hex of HMAC-SHA256 under a key of its own (HKDF label
//!   `hcc/v1/tag-names`): a store reader can neither read a tag nor confirm a guess of one;
//! - without one, `t1:` and the hex of SHA-256 over a domain label and the tag: a store reader
//!   cannot read a tag, but can confirm a guess (as for the key names of an unsigned cache).
//!
//! After a key rotation, entries written under a previous key of the ring were indexed under
//! that key's name of the tag: a purge purges the name under every key ([`Envelope::tag_names`]).

use ring::{digest, hmac};

use super::keys::HexId;
use super::Envelope;

/// What precedes a keyed tag name.
const KEYED: &str = "t1k:";
/// What precedes an unkeyed tag name.
const PLAIN: &str = "t1:";
/// Separates unkeyed tag digests from every other SHA-256 the crate computes.
const PLAIN_LABEL: &[u8] = b"hcc/v1/tag-names\0";

impl Envelope {
    /// The name of `tag` in a store's tag index, under the current key: what a write sends in
    /// [`StoreRequest::PutTagged`](crate::StoreRequest::PutTagged).
    pub(crate) fn tag_name(&self, tag: &str) -> String {
        match &self.keys {
            Some(ring) => keyed(ring.current().tag_names.clone(), tag),
            None => plain(tag),
        }
    }

    /// The names of `tag` under every key of the ring, current first (one without a key): what
    /// a purge sends in [`StoreRequest::PurgeTag`](crate::StoreRequest::PurgeTag).
    pub(crate) fn tag_names(&self, tag: &str) -> Vec<String> {
        match &self.keys {
            Some(ring) => ring
                .tag_name_keys()
                .map(|key| keyed(key.clone(), tag))
                .collect(),
            None => vec![plain(tag)],
        }
    }
}

fn keyed(key: hmac::Key, tag: &str) -> String {
    let mac = hmac::sign(&key, tag.as_bytes());
    format!("{KEYED}{}", HexId(mac.as_ref()))
}

fn plain(tag: &str) -> String {
    let mut ctx = digest::Context::new(&digest::SHA256);
    ctx.update(PLAIN_LABEL);
    ctx.update(tag.as_bytes());
    format!("{PLAIN}{}", HexId(ctx.finish().as_ref()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{KeyRing, SecretKey};

    fn ring(secret: &str) -> KeyRing {
        KeyRing::new(SecretKey::new(secret).unwrap())
    }

    #[test]
    fn names_are_opaque_stable_and_per_key() {
        let tag = "customer-alice@example.com";
        let unsigned = Envelope::new(None);
        let a = Envelope::new(Some(ring("key a key a key a key a")));
        let a_encrypting = Envelope::encrypted(ring("key a key a key a key a"));
        let b = Envelope::new(Some(ring("key b key b key b key b")));
        for name in [unsigned.tag_name(tag), a.tag_name(tag), b.tag_name(tag)] {
            assert!(!name.contains("alice"), "{name}");
            assert!(name.bytes().all(|c| c.is_ascii_graphic()), "{name}");
        }
        assert!(unsigned.tag_name(tag).starts_with("t1:"));
        assert_eq!(unsigned.tag_name(tag).len(), 3 + 64);
        assert!(a.tag_name(tag).starts_with("t1k:"));
        assert_eq!(a.tag_name(tag), a_encrypting.tag_name(tag));
        assert_ne!(a.tag_name(tag), b.tag_name(tag));
        assert_ne!(a.tag_name(tag), a.tag_name("customer-bob@example.com"));
        assert_eq!(unsigned.tag_names(tag), [unsigned.tag_name(tag)]);
    }

    #[test]
    fn a_ring_names_a_tag_under_every_key_current_first() {
        let tag = "invoice-4711";
        let old = Envelope::new(Some(ring("the old key, the old key")));
        let new = Envelope::new(Some(ring("the new key, the new key")));
        let both = Envelope::new(Some(
            ring("the new key, the new key")
                .with_previous(SecretKey::new("the old key, the old key").unwrap()),
        ));
        assert_eq!(both.tag_names(tag), [new.tag_name(tag), old.tag_name(tag)]);
        assert_eq!(both.tag_name(tag), new.tag_name(tag));
    }

    #[test]
    fn the_tag_name_key_is_not_the_key_name_key() {
        let ring = ring("one key for everything!!");
        let envelope = Envelope::new(Some(ring.clone()));
        let names = ring.name_keys();
        let as_key_name = keyed(names[0].clone(), "t");
        assert_ne!(envelope.tag_name("t"), as_key_name);
    }
}
