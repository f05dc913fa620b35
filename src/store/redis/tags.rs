//! The tag index: one sorted set per tag, `{prefix}#tag:{tag}`, whose members are the keys of
//! the entries that carry the tag, scored by when they expire (server time, in milliseconds).
//!
//! - Written before the entry (`PutTagged`): if the index write fails, the entry is not written,
//!   so an entry is never stored without being findable by its tags. (The other way round, a
//!   member whose entry was never written, or was overwritten without the tag, only makes a
//!   purge delete one key more: a miss.)
//! - Cleaned on expiry: each write to a tag first drops the members that have expired (their
//!   entries are gone from Redis too), and the set itself expires with its last member. A tag
//!   that is never written again is reclaimed by that expiry.
//! - One key per script, so that it runs on a cluster as on one server (the entry and its tags
//!   live in different slots; they are not written atomically, see above).
//! - Scores come from the server's clock (`TIME`), not from the clients': in a fleet, a client
//!   whose clock runs ahead must not drop members that are still alive.

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
const PURGE_BATCH: isize = 500;
/// The index keeps a member at most this long (~100 years), so that scores stay exact in
/// Lua's doubles.
const MAX_INDEX_TTL_MS: u64 = 100 * 365 * 24 * 3600 * 1000;

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
    let ttl_ms = ttl_ms.min(MAX_INDEX_TTL_MS);
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

/// Deletes every key recorded under `tag`, then the tag's set; how many existed.
pub(super) async fn purge(conn: &mut Conn, prefix: &str, tag: &str) -> Result<usize, RedisError> {
    let index = index_key(prefix, tag);
    let mut removed = 0usize;
    // Bounded: each round takes members out of the set; writers adding new ones while a purge
    // runs could otherwise keep it going.
    for _ in 0..100_000 {
        let members: Vec<Vec<u8>> = redis::cmd("ZRANGE")
            .arg(&index)
            .arg(0)
            .arg(PURGE_BATCH - 1)
            .query_async(conn)
            .await?;
        if members.is_empty() {
            let _: Value = redis::cmd("UNLINK").arg(&index).query_async(conn).await?;
            return Ok(removed);
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
        let _: Value = redis::cmd("ZREM")
            .arg(&index)
            .arg(&members)
            .query_async(conn)
            .await?;
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
