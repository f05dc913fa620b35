//! The tag index: one sorted set per tag, `{prefix}#tag:{tag}`, whose members are the keys of
//! the entries that carry the tag, scored by when they expire (server time, in milliseconds,
//! plus a margin).
//!
//! - **Written around the entry** (`PutTagged`): the key is recorded under each tag, the entry
//!   is written, then the writer checks that every tag still has it. A purge *takes* members out
//!   of the set (atomically, a batch at a time) before it deletes their entries; so a purge
//!   that ran between the writer's two steps took the member before the entry existed, and the
//!   writer, finding it gone, deletes its own entry (answering `NotStored`). Every interleaving
//!   ends with the entry either purged or indexed. (A member whose entry was never written, or
//!   was overwritten without the tag, only makes a purge delete one key more: a miss.)
//! - **Cleaned on expiry:** each write to a tag first drops the members that have expired, and
//!   the set itself expires with its last member. A member is scored [`MARGIN_MS`] past its
//!   entry's expiry, so that the entry (written after the member) never outlives it.
//! - **One key per script**, so that it runs on a cluster as on one server (the entry and its
//!   tags live in different slots).
//! - **Scores come from the server's clock** (`TIME`), not from the clients': in a fleet, a
//!   client whose clock runs ahead must not drop members that are still alive.
//! - **Eviction:** under `maxmemory`, Redis may evict a tag's set and keep its entries. The
//!   index cannot tell, so a purge answers `complete: false` whenever the server has evicted any
//!   key since it started (`INFO stats`, `evicted_keys`), and the inspector then also walks.

use std::sync::LazyLock;
use std::time::Duration;

use redis::{RedisError, Script, Value};

use super::conn::{client_error, Conn};

/// Tags per entry recorded in the index; an entry with more is not stored (`NotStored`), so
/// that a purge never misses one and a hostile origin cannot make one write cost thousands of
/// commands.
pub(super) const MAX_TAGS: usize = 64;
/// The longest tag recorded (bytes); an entry with a longer one is not stored.
pub(super) const MAX_TAG_LEN: usize = 1024;
/// Keys removed per round trip of a purge.
const PURGE_BATCH: usize = 500;
/// The index keeps a member at most this long (~100 years), so that scores stay exact in
/// Lua's doubles.
const MAX_INDEX_TTL_MS: u64 = 100 * 365 * 24 * 3600 * 1000;
/// How much longer than its entry a member lives: more than the time between recording a key
/// and writing its entry can take (store timeouts, cluster redirections).
pub(super) const MARGIN_MS: u64 = 60_000;

/// Takes up to `ARGV[1]` members out of the set `KEYS[1]` (the set is gone once empty).
static TAKE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local members = redis.call('ZRANGE', KEYS[1], 0, tonumber(ARGV[1]) - 1)
if #members > 0 then
  redis.call('ZREM', KEYS[1], unpack(members))
end
return members
",
    )
});

/// `KEYS[1]` the tag's set, `ARGV[1]` the entry's key, `ARGV[2]` its TTL in milliseconds.
static RECORD: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. string.format('%.0f', now))
redis.call('ZADD', KEYS[1], string.format('%.0f', now + tonumber(ARGV[2])), ARGV[1])
local last = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
redis.call('PEXPIREAT', KEYS[1], string.format('%.0f', tonumber(last[2])))
return 1
",
    )
});

/// The name of a tag's set. Inside the namespace (so that clearing the store and an ACL on the
/// prefix cover it), under a name no cache key has (keys start with `hcc1`).
pub(super) fn index_key(prefix: &str, tag: &str) -> String {
    format!("{prefix}{INDEX_MARK}{tag}")
}

/// What follows the prefix in every index key; listing skips these keys.
pub(super) const INDEX_MARK: &str = "#tag:";

/// Whether an entry's tags fit the index.
pub(super) fn fits(tags: &[String]) -> bool {
    tags.len() <= MAX_TAGS && tags.iter().all(|t| t.len() <= MAX_TAG_LEN)
}

/// Records `key` (the full Redis key) under each tag; the entry lives `ttl_ms`.
pub(super) async fn record(
    conn: &mut Conn,
    prefix: &str,
    key: &str,
    tags: &[String],
    ttl_ms: u64,
) -> Result<(), RedisError> {
    let ttl_ms = ttl_ms.min(MAX_INDEX_TTL_MS) + MARGIN_MS;
    let writes = tags.iter().map(|tag| {
        let mut conn = conn.clone();
        let index = index_key(prefix, tag);
        async move {
            // EVALSHA; on NOSCRIPT the script is loaded (on every primary) and run again.
            let _: Value = RECORD
                .key(index)
                .arg(key)
                .arg(ttl_ms)
                .invoke_async(&mut conn)
                .await?;
            Ok::<_, RedisError>(())
        }
    });
    for result in futures_util::future::join_all(writes).await {
        result?;
    }
    Ok(())
}

/// Whether every tag's set still holds `key` (a purge that ran since `record` took it).
pub(super) async fn still_recorded(
    conn: &mut Conn,
    prefix: &str,
    key: &str,
    tags: &[String],
) -> Result<bool, RedisError> {
    let checks = tags.iter().map(|tag| {
        let mut conn = conn.clone();
        let index = index_key(prefix, tag);
        async move {
            let score: Option<f64> = redis::cmd("ZSCORE")
                .arg(index)
                .arg(key)
                .query_async(&mut conn)
                .await?;
            Ok::<_, RedisError>(score.is_some())
        }
    });
    let mut all = true;
    for result in futures_util::future::join_all(checks).await {
        all &= result?;
    }
    Ok(all)
}

/// Deletes every key recorded under `tag`, taking them out of its set a batch at a time; how
/// many existed, and whether the index can be trusted to have held them all (no key was ever
/// evicted by this server, or on a cluster by any primary).
pub(super) async fn purge(
    conn: &mut Conn,
    prefix: &str,
    tag: &str,
) -> Result<(usize, bool), RedisError> {
    let index = index_key(prefix, tag);
    let mut removed = 0usize;
    // Bounded: writers adding to the tag while it is purged could otherwise keep it going.
    for _ in 0..100_000 {
        let members: Vec<Vec<u8>> = TAKE.key(&index).arg(PURGE_BATCH).invoke_async(conn).await?;
        if members.is_empty() {
            return Ok((removed, !super::conn::evicted_any(conn).await?));
        }
        // Only keys of this namespace (a store writer could add anything to the set).
        let own: Vec<&Vec<u8>> = members
            .iter()
            .filter(|m| m.starts_with(prefix.as_bytes()))
            .collect();
        if !own.is_empty() {
            let n: usize = redis::cmd("UNLINK").arg(&own).query_async(conn).await?;
            removed += n;
        }
    }
    Err(client_error(
        "a purge by tag did not end (writers keep adding to the tag)",
    ))
}

/// The TTL to record for an entry stored with `ttl` (`None`: kept until evicted).
pub(super) fn ttl_ms(ttl: Option<Duration>) -> u64 {
    ttl.map_or(MAX_INDEX_TTL_MS, |ttl| {
        u64::try_from(ttl.as_millis()).map_or(MAX_INDEX_TTL_MS, |ms| ms.max(1))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits() {
        assert!(fits(&vec!["a".to_owned(); MAX_TAGS]));
        assert!(!fits(&vec!["a".to_owned(); MAX_TAGS + 1]));
        assert!(!fits(&["x".repeat(MAX_TAG_LEN + 1)]));
        assert_eq!(ttl_ms(None), MAX_INDEX_TTL_MS);
        assert_eq!(ttl_ms(Some(Duration::from_micros(1))), 1);
        assert_eq!(ttl_ms(Some(Duration::MAX)), MAX_INDEX_TTL_MS);
        assert_eq!(index_key("hcc:", "a b"), "hcc:#tag:a b");
    }
}
