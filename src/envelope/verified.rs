//! Blobs of an in-process store that this envelope has verified: a later hit on the very same
//! buffer skips the head record's proof (the MAC of a small signed entry, about a quarter of its
//! hit: docs/benchmarks.md).
//!
//! Why it is sound (docs/security.md, "Verified blobs of a memory store"):
//! - **Only for `MemoryStore` and `NearCache`** (the cache checks the store's type:
//!   `store::answers_held_buffers`), whose `Get` answers a clone of the `Bytes` they hold: the same
//!   buffer, and `Bytes` cannot be changed through any handle.
//! - **The same buffer, not equal bytes.** An entry is remembered with a clone of the blob it
//!   verified, which keeps that allocation alive: while it is remembered, no other blob can be
//!   allocated at its address, so a blob at the same address and of the same length *is* it.
//!   Another blob under the key (a new write, or anyone's `Put` of forged bytes) is another
//!   buffer, and is verified as any blob is.
//! - **Per key name.** A blob is trusted only under the name it was verified under; everything
//!   else the opening checks (the embedded cache key, the variant, the key ring, `not_before`, the
//!   filter) runs on every hit as before. The key ring of an envelope does not change.
//! - **Not for encrypted entries** (decrypting proves them anyway), nor blobs over 16 KiB (their
//!   proof is a small part of the hit).
//!
//! Bounded: blobs of 16 KiB at most, 4 MiB in all (it may keep blobs the store has evicted
//! alive until then); over the bound, entries are dropped in no particular order.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::{Mutex, PoisonError};

use bytes::Bytes;

use crate::CacheKey;

/// The largest blob remembered.
const MAX_BLOB: usize = 16 << 10;
/// The bytes of blobs remembered in all.
const MAX_BYTES: usize = 4 << 20;
const SHARDS: usize = 16;

#[derive(Default)]
struct Shard {
    blobs: HashMap<CacheKey, Bytes>,
    bytes: usize,
}

/// The blobs verified under each key name (see the module's documentation).
pub(crate) struct VerifiedBlobs {
    shards: Box<[Mutex<Shard>]>,
    hasher: RandomState,
}

impl Default for VerifiedBlobs {
    fn default() -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            hasher: RandomState::new(),
        }
    }
}

impl std::fmt::Debug for VerifiedBlobs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifiedBlobs").finish_non_exhaustive()
    }
}

impl VerifiedBlobs {
    fn shard(&self, key: &CacheKey) -> std::sync::MutexGuard<'_, Shard> {
        let i = self.hasher.hash_one(key) as usize % SHARDS;
        self.shards[i]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether `blob` is the very buffer verified under `key`.
    pub(crate) fn holds(&self, key: &CacheKey, blob: &Bytes) -> bool {
        if blob.is_empty() || blob.len() > MAX_BLOB {
            return false;
        }
        self.shard(key)
            .blobs
            .get(key)
            .is_some_and(|b| b.as_ptr() == blob.as_ptr() && b.len() == blob.len())
    }

    /// Remembers `blob`, verified under `key` (a clone of it: see the module's documentation).
    pub(crate) fn remember(&self, key: &CacheKey, blob: Bytes) {
        if blob.is_empty() || blob.len() > MAX_BLOB {
            return;
        }
        let mut shard = self.shard(key);
        shard.bytes += blob.len();
        if let Some(old) = shard.blobs.insert(key.clone(), blob) {
            shard.bytes -= old.len();
        }
        while shard.bytes > MAX_BYTES / SHARDS {
            let Some(other) = shard.blobs.keys().find(|k| *k != key).cloned() else {
                break;
            };
            if let Some(dropped) = shard.blobs.remove(&other) {
                shard.bytes -= dropped.len();
            }
        }
    }

    #[cfg(test)]
    fn bytes(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(PoisonError::into_inner).bytes)
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn k(name: &str) -> CacheKey {
        CacheKey::from_stored(name)
    }

    #[test]
    fn only_the_very_buffer_under_its_own_name_is_held() {
        let memo = VerifiedBlobs::default();
        let blob = Bytes::from(vec![7u8; 1000]);
        assert!(!memo.holds(&k("a"), &blob));
        memo.remember(&k("a"), blob.clone());
        assert!(memo.holds(&k("a"), &blob));
        assert!(
            memo.holds(&k("a"), &blob.clone()),
            "a clone is the same buffer"
        );
        // Equal bytes in another buffer, a part of it, or another name: not held.
        assert!(!memo.holds(&k("a"), &Bytes::from(vec![7u8; 1000])));
        assert!(!memo.holds(&k("a"), &blob.slice(..999)));
        assert!(!memo.holds(&k("a"), &blob.slice(1..)));
        assert!(!memo.holds(&k("b"), &blob));
        // Replaced by the next blob verified under the name.
        let next = Bytes::from(vec![8u8; 1000]);
        memo.remember(&k("a"), next.clone());
        assert!(memo.holds(&k("a"), &next));
        assert!(!memo.holds(&k("a"), &blob));
    }

    #[test]
    fn it_is_bounded_in_bytes_and_ignores_large_blobs() {
        let memo = VerifiedBlobs::default();
        let large = Bytes::from(vec![0u8; MAX_BLOB + 1]);
        memo.remember(&k("large"), large.clone());
        assert!(!memo.holds(&k("large"), &large));
        for i in 0..2000 {
            memo.remember(&k(&format!("k{i}")), Bytes::from(vec![1u8; 8 << 10]));
        }
        assert!(memo.bytes() <= MAX_BYTES, "{}", memo.bytes());
        assert!(memo.bytes() >= MAX_BYTES / 2, "{}", memo.bytes());
    }
}
