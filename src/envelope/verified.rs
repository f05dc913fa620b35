//! Blobs of an in-process store that this envelope has opened: a later hit on the very same
//! buffer gets a copy of the entry opened from it, without proving, decrypting or decoding the
//! blob again (the MAC of a small signed entry was about a quarter of its hit, the decoding of
//! its head most of the rest: docs/benchmarks.md).
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
//! - **Per key name.** A blob is trusted only under the name it was opened under. What opening
//!   decides (the proof, the embedded cache key, the variant, the key ring, the mode) depends
//!   only on the envelope, the name and the bytes, none of which can differ for the same buffer
//!   under the same name: the entry it gave is the entry it would give again. What the cache
//!   checks after opening (`not_before`, the filter, freshness) runs on every hit as before.
//! - **Encrypted entries too**: their plaintext is kept in this process's memory, as the
//!   store's ciphertext and the key that opens it are; nothing of it reaches a store.
//! - **Not blobs over 16 KiB** (their proof is a small part of the hit), nor entries that open
//!   to more than 16 KiB (a compressed body decompresses to more than its blob).
//!
//! Bounded: 4 MiB in all, counting each blob and the entry opened from it (its body, header
//! fields and URI), 32 KiB at most each; it may keep blobs the store has evicted alive until
//! then. What the cache itself removes (a `Delete`, a purge, a `Clear`, through any service
//! built from the layer or its `Inspector`: `Memos`, called by `Config::call_bounded`) is
//! forgotten as the request is sent and again once the store answered; what others remove
//! through the store, and entries replaced under their name, are kept until dropped (never
//! served: a lookup needs the store to answer the very buffer). Over the bound, entries are
//! dropped at random (a few dozen per shard, so picking one costs little more than a hash).
//! The entry is shared (`Arc`) and copied outside the shard's lock.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::{Arc, Mutex, PoisonError, Weak};

use bytes::Bytes;

use crate::entry::{Entry, EntryBody, EntryHead};
use crate::CacheKey;

/// The largest blob remembered.
const MAX_BLOB: usize = 16 << 10;
/// The bytes of blobs remembered in all.
const MAX_BYTES: usize = 4 << 20;
const SHARDS: usize = 16;

#[derive(Default)]
struct Shard {
    blobs: HashMap<CacheKey, Remembered>,
    bytes: usize,
    /// Evictions so far: with the key being remembered, what picks the next one's victim.
    evictions: u64,
}

/// A blob, and the entry opened from it.
struct Remembered {
    blob: Bytes,
    entry: Arc<OpenedEntry>,
    /// What it counts for against the bound: the blob and the entry.
    size: usize,
}

/// An entry whose body is in memory, shared between threads (an `Entry`'s body may be a
/// stream, which is not).
struct OpenedEntry {
    head: EntryHead,
    parts: Vec<Bytes>,
    len: u64,
    trailers: Option<http::HeaderMap>,
}

impl OpenedEntry {
    fn of(entry: &Entry) -> Option<Self> {
        let EntryBody::Parts { parts, len } = &entry.body else {
            return None;
        };
        Some(Self {
            head: entry.head.clone(),
            parts: parts.clone(),
            len: *len,
            trailers: entry.trailers.clone(),
        })
    }

    fn to_entry(&self) -> Entry {
        Entry {
            head: self.head.clone(),
            body: EntryBody::Parts {
                parts: self.parts.clone(),
                len: self.len,
            },
            trailers: self.trailers.clone(),
        }
    }
}

/// The bytes `entry` holds of its own: its body, header fields, URI and trailers (`None` for a
/// body not in memory).
fn opened_size(entry: &Entry) -> Option<usize> {
    let EntryBody::Parts { len, .. } = &entry.body else {
        return None;
    };
    let fields = |map: &http::HeaderMap| -> usize {
        map.iter().map(|(n, v)| n.as_str().len() + v.len()).sum()
    };
    let head = fields(&entry.head.headers) + entry.head.uri.len();
    let trailers = entry.trailers.as_ref().map_or(0, fields);
    usize::try_from(*len).ok()?.checked_add(head + trailers)
}

/// The memos of every service built from one layer (and from its clones) and of its
/// `Inspector`s: what one of them removes from the store is forgotten by all (`forget`, `clear`:
/// `Config::forget_removed`).
#[derive(Default)]
pub(crate) struct Memos(Mutex<Vec<Weak<VerifiedBlobs>>>);

impl std::fmt::Debug for Memos {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Memos").finish_non_exhaustive()
    }
}

impl Memos {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Weak<VerifiedBlobs>>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A new memo (a service being built), forgetting with the others from now on. Memos of
    /// dropped services are swept out when the list is full, so that building a service costs
    /// O(1) amortized however many are alive (a sweep on every build made it O(n)).
    pub(crate) fn new_memo(&self) -> Arc<VerifiedBlobs> {
        let memo = Arc::new(VerifiedBlobs::default());
        let mut all = self.lock();
        if all.len() == all.capacity() {
            all.retain(|m| m.strong_count() > 0);
        }
        all.push(Arc::downgrade(&memo));
        memo
    }

    /// How many memos are registered, alive or not yet swept.
    #[cfg(test)]
    pub(crate) fn registered(&self) -> usize {
        self.lock().len()
    }

    /// The memos alive now.
    fn all(&self) -> Vec<Arc<VerifiedBlobs>> {
        self.lock().iter().filter_map(Weak::upgrade).collect()
    }

    /// Every memo forgets `key` (the cache is deleting it from its store).
    pub(crate) fn forget(&self, key: &CacheKey) {
        for memo in self.all() {
            memo.forget(key);
        }
    }

    /// Every memo forgets everything (a purge or a `Clear`, whose keys the cache does not know).
    pub(crate) fn clear(&self) {
        for memo in self.all() {
            memo.clear();
        }
    }
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

    /// A copy of the entry opened from `blob` under `key`, if `blob` is the very buffer it was
    /// opened from.
    pub(crate) fn opened(&self, key: &CacheKey, blob: &Bytes) -> Option<Entry> {
        if blob.is_empty() || blob.len() > MAX_BLOB {
            return None;
        }
        let entry = {
            let shard = self.shard(key);
            let r = shard.blobs.get(key)?;
            if r.blob.as_ptr() != blob.as_ptr() || r.blob.len() != blob.len() {
                return None;
            }
            r.entry.clone()
        };
        Some(entry.to_entry())
    }

    /// Whether `blob` is the very buffer opened under `key`.
    #[cfg(test)]
    pub(crate) fn holds(&self, key: &CacheKey, blob: &Bytes) -> bool {
        self.opened(key, blob).is_some()
    }

    /// Remembers `blob`, opened under `key` into `entry` (a clone of the blob: see the
    /// module's documentation). An entry whose body is not in memory is not remembered.
    pub(crate) fn remember(&self, key: &CacheKey, blob: Bytes, entry: &Entry) {
        if blob.is_empty() || blob.len() > MAX_BLOB {
            return;
        }
        let Some(opened) = opened_size(entry).filter(|n| *n <= MAX_BLOB) else {
            return;
        };
        let Some(entry) = OpenedEntry::of(entry) else {
            return;
        };
        let size = blob.len() + opened;
        let r = Remembered {
            blob,
            entry: Arc::new(entry),
            size,
        };
        let mut shard = self.shard(key);
        shard.bytes += r.size;
        if let Some(old) = shard.blobs.insert(key.clone(), r) {
            shard.bytes -= old.size;
        }
        while shard.bytes > MAX_BYTES / SHARDS {
            // A victim at random among the others. Not the first key the map yields: the same
            // key would be dropped at every eviction of the shard, however often it is hit
            // (a test measured a quarter of hot hits verified again).
            let others = shard.blobs.len().saturating_sub(1);
            if others == 0 {
                break;
            }
            shard.evictions = shard.evictions.wrapping_add(1);
            let pick = self.hasher.hash_one((key, shard.evictions)) as usize % others;
            let Some(other) = shard.blobs.keys().filter(|k| *k != key).nth(pick).cloned() else {
                break;
            };
            if let Some(dropped) = shard.blobs.remove(&other) {
                shard.bytes -= dropped.size;
            }
        }
    }

    /// Drops what is remembered under `key` (the cache deletes it: its entry, plaintext with
    /// `encrypt`, is not kept in memory after that).
    fn forget(&self, key: &CacheKey) {
        let mut shard = self.shard(key);
        if let Some(r) = shard.blobs.remove(key) {
            shard.bytes -= r.size;
        }
    }

    /// Drops everything remembered.
    fn clear(&self) {
        for shard in self.shards.iter() {
            let mut shard = shard.lock().unwrap_or_else(PoisonError::into_inner);
            shard.blobs.clear();
            shard.bytes = 0;
        }
    }

    /// The bytes remembered.
    #[cfg(test)]
    pub(crate) fn bytes(&self) -> usize {
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

    /// An entry whose body is `body`.
    fn entry(body: &Bytes) -> Entry {
        use crate::entry::{EntryBody, EntryHead};
        Entry {
            head: EntryHead::for_tests(),
            body: EntryBody::parts(vec![body.clone()]),
            trailers: None,
        }
    }

    #[test]
    fn only_the_very_buffer_under_its_own_name_is_held() {
        let memo = VerifiedBlobs::default();
        let blob = Bytes::from(vec![7u8; 1000]);
        assert!(!memo.holds(&k("a"), &blob));
        memo.remember(&k("a"), blob.clone(), &entry(&blob));
        assert!(memo.holds(&k("a"), &blob));
        let copy = memo.opened(&k("a"), &blob).unwrap();
        assert_eq!(
            copy.body.to_bytes().unwrap(),
            blob,
            "a copy of the entry remembered"
        );
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
        memo.remember(&k("a"), next.clone(), &entry(&next));
        assert!(memo.holds(&k("a"), &next));
        assert!(!memo.holds(&k("a"), &blob));
    }

    /// What the cache removes from its store is forgotten: a `Delete` its key, a purge or a
    /// `Clear` everything (with `encrypt`, the plaintext of a purged entry is not kept).
    #[test]
    fn what_the_cache_removes_is_forgotten() {
        let memos = Memos::default();
        let memo = memos.new_memo();
        let other = memos.new_memo();
        let remember = |memo: &VerifiedBlobs, name: &str| {
            let blob = Bytes::from(vec![3u8; 100]);
            memo.remember(&k(name), blob.clone(), &entry(&blob));
            blob
        };
        let (a, b, c) = (
            remember(&memo, "a"),
            remember(&memo, "b"),
            remember(&other, "a"),
        );
        let both = memo.bytes();
        memos.forget(&k("a"));
        assert!(!memo.holds(&k("a"), &a));
        assert!(!other.holds(&k("a"), &c), "by every memo");
        assert!(memo.holds(&k("b"), &b), "another key is kept");
        assert_eq!(memo.bytes() * 2, both, "and counted as before");
        let a = remember(&memo, "a");
        memos.clear();
        assert!(!memo.holds(&k("a"), &a) && !memo.holds(&k("b"), &b));
        assert_eq!(memo.bytes(), 0);
        drop(other);
        // Services built and dropped: their memos do not pile up.
        for _ in 0..1000 {
            drop(memos.new_memo());
        }
        assert!(memos.lock().len() <= 16, "{}", memos.lock().len());
        // Nor do live ones cost a sweep each: the list grows by doubling.
        let live: Vec<_> = (0..1000).map(|_| memos.new_memo()).collect();
        assert!(memos.lock().len() >= live.len());
    }

    #[test]
    fn it_is_bounded_in_bytes_and_ignores_large_blobs() {
        let memo = VerifiedBlobs::default();
        let large = Bytes::from(vec![0u8; MAX_BLOB + 1]);
        memo.remember(&k("large"), large.clone(), &entry(&large));
        assert!(!memo.holds(&k("large"), &large));
        for i in 0..2000 {
            let blob = Bytes::from(vec![1u8; 8 << 10]);
            memo.remember(&k(&format!("k{i}")), blob.clone(), &entry(&blob));
        }
        assert!(memo.bytes() <= MAX_BYTES, "{}", memo.bytes());
        assert!(memo.bytes() >= MAX_BYTES / 2, "{}", memo.bytes());
    }

    /// A small blob that opens to a large entry (a compressed body) is not remembered: the
    /// bound counts what the memo holds, the opened entry included.
    #[test]
    fn an_entry_larger_than_its_blob_counts_and_a_large_one_is_not_kept() {
        let memo = VerifiedBlobs::default();
        let blob = Bytes::from(vec![1u8; 1000]);
        memo.remember(
            &k("zip"),
            blob.clone(),
            &entry(&Bytes::from(vec![0u8; MAX_BLOB + 1])),
        );
        assert!(!memo.holds(&k("zip"), &blob));
        assert_eq!(memo.bytes(), 0);
        memo.remember(
            &k("ok"),
            blob.clone(),
            &entry(&Bytes::from(vec![0u8; 10_000])),
        );
        assert!(memo.holds(&k("ok"), &blob));
        assert!(memo.bytes() >= 11_000, "{}", memo.bytes());
    }

    /// Hot keys stay remembered while a stream of other keys passes through a full memo: the
    /// entry dropped to make room is not always the one the map happens to yield first (a hot
    /// key there was dropped again at every eviction of its shard, and verified again at
    /// every hit).
    #[test]
    fn hot_keys_are_not_the_ones_always_dropped() {
        let memo = VerifiedBlobs::default();
        let blob = |i: usize| Bytes::from(vec![(i % 251) as u8; 4 << 10]);
        let hot: Vec<(CacheKey, Bytes)> =
            (0..32).map(|i| (k(&format!("hot{i}")), blob(i))).collect();
        // Hits on the hot keys, each remembered again when it was dropped (as a hit verifies
        // and remembers it), between writes of cold keys that keep the memo full.
        let mut verified_again = 0;
        for round in 0..4000 {
            let cold = blob(round);
            memo.remember(&k(&format!("cold{round}")), cold.clone(), &entry(&cold));
            for (key, blob) in &hot {
                if !memo.holds(key, blob) {
                    verified_again += 1;
                    memo.remember(key, blob.clone(), &entry(blob));
                }
            }
        }
        // A shard holds about 30 entries of this size: each eviction in it drops a given hot key
        // once in 30 at random, and a hot key's shard sees one eviction in 16 rounds. About
        // 32 * 4000 / 16 / 30 = 270 in all (266-328 measured). Dropping the first key the map
        // yields verified 31,236 of the 128,000 hot hits again.
        assert!(
            verified_again < 1000,
            "{verified_again} hot hits verified again"
        );
    }
}
