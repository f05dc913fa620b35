//! The tag index: one sorted set per tag, `{prefix}#tag:{tag}`, whose members are the keys of
//! the entries that carry the tag, scored by when they expire (server time, in milliseconds,
//! plus a margin), or -1 while a purge is taking them. The cache sends a digest of each tag as
//! `{tag}` (`envelope::tag_names`): this store never sees a tag as the origin wrote it.
//!
//! - **A write** (`PutTagged`) records the key under each tag (`ZADD GT`: a member's score only
//!   grows), writes the entry with a provisional TTL of a few seconds, checks that every tag
//!   still has the key unmarked, and only then gives the entry its TTL. If a purge took the key
//!   in between, the writer deletes its own entry (answering `NotStored`).
//! - **A purge** (`PurgeTag`) marks a batch of members as taken (score -1), unlinks their
//!   entries, then removes the members still marked. Cut short anywhere (a dropped connection, a
//!   cancelled future), it leaves its batch marked, and the next purge (marked members sort
//!   first) finishes it. A writer that records a key again meanwhile unmarks it: that entry
//!   stays indexed. A writer cut short after its `SET` leaves an entry that lives the
//!   provisional TTL at most.
//! - **Cleaned on expiry:** each write to a tag first drops the members that have expired, and
//!   the set itself expires with its last member. A member is scored [`MARGIN_MS`] past its
//!   entry's expiry, so that the entry (written after the member) never outlives it.
//! - **One key per script**, so that it runs on a cluster as on one server (the entry and its
//!   tags live in different slots).
//! - **Scores come from the server's clock** (`TIME`), not from the clients': in a fleet, a
//!   client whose clock runs ahead must not drop members that are still alive.
//! - **Written by others:** whoever can write to the server can put anything under a set's
//!   name. A key of another type is replaced by the next write to the tag (which would fail on
//!   it otherwise), members scored later than any writer records are dropped by it (the set's
//!   expiry is computed from them). Only members naming an entry of the namespace are ever
//!   unlinked (never another tag's set); a purge that meets another member, or a key of
//!   another type, answers `complete: false`.
//! - **Eviction:** under `maxmemory` with any policy but `noeviction`, Redis may evict a tag's
//!   set and keep its entries, and nothing tells the store afterwards. A purge then answers
//!   `complete: false` (unless the store was told to trust its index), and the inspector also
//!   walks.

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

/// How long a tagged entry lives until its writer has checked that no purge took it from the
/// index; then it gets its own TTL.
pub(super) const PROVISIONAL: std::time::Duration = std::time::Duration::from_secs(5);

/// Marks up to `ARGV[1]` members of the set `KEYS[1]` as taken (score -1), members already
/// marked first (they sort first), and returns `{0, members}`: a purge that was cut short is
/// finished by the next one. A key of another type under the set's name answers `{1, {}}` (and
/// is deleted when `ARGV[2]` is `1`, for `Clear`).
static TAKE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local kind = redis.call('TYPE', KEYS[1])['ok']
if kind ~= 'zset' then
  if kind == 'none' then
    return {0, {}}
  end
  if ARGV[2] == '1' then
    redis.call('DEL', KEYS[1])
  end
  return {1, {}}
end
local batch = redis.call('ZRANGE', KEYS[1], 0, tonumber(ARGV[1]) - 1, 'WITHSCORES')
local members = {}
for i = 1, #batch, 2 do
  members[#members + 1] = batch[i]
  if tonumber(batch[i + 1]) >= 0 then
    redis.call('ZADD', KEYS[1], 'XX', -1, batch[i])
  end
end
return {0, members}
",
    )
});

/// Removes from the set `KEYS[1]` those of `ARGV` still marked as taken (a writer that recorded
/// one again since gave it a positive score: it stays).
static DONE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
for i = 1, #ARGV do
  local s = redis.call('ZSCORE', KEYS[1], ARGV[i])
  if s and tonumber(s) < 0 then
    redis.call('ZREM', KEYS[1], ARGV[i])
  end
end
return 1
",
    )
});

/// `KEYS[1]` the tag's set, `ARGV[1]` the entry's key, `ARGV[2]` its TTL in milliseconds,
/// `ARGV[3]` the longest TTL any writer records ([`MAX_RECORDED_MS`]).
static RECORD: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
-- Another type under the set's name (a store writer's SET): it indexes nothing, and every
-- write to the tag would fail on it. Replaced by the set.
local kind = redis.call('TYPE', KEYS[1])['ok']
if kind ~= 'zset' and kind ~= 'none' then
  redis.call('DEL', KEYS[1])
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], 0, '(' .. string.format('%.0f', now))
-- Scored later than any writer records (planted, up to +inf): the set's expiry below must
-- stay a time Redis accepts.
redis.call('ZREMRANGEBYSCORE', KEYS[1],
  '(' .. string.format('%.0f', now + tonumber(ARGV[3])), '+inf')
redis.call('ZADD', KEYS[1], 'GT', string.format('%.0f', now + tonumber(ARGV[2])), ARGV[1])
local last = tonumber(redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')[2])
-- Never earlier than it was: members marked by a purge cut short are scored -1, and their
-- entries may outlive every unmarked member.
if redis.call('PEXPIRETIME', KEYS[1]) < last then
  redis.call('PEXPIREAT', KEYS[1], string.format('%.0f', last))
end
return 1
",
    )
});

/// The longest a writer keeps a member: the longest TTL recorded plus the margin. A member
/// scored later than that was not written by one.
const MAX_RECORDED_MS: u64 = MAX_INDEX_TTL_MS + MARGIN_MS;

/// Gives the entry `KEYS[1]` its TTL (`ARGV[3]` ms, or none when empty) only if it still holds
/// this writer's blob: its length `ARGV[1]` and its last bytes `ARGV[2]` (a sealed blob ends
/// with its MAC, tag or checksum, so another writer's blob differs there). Another writer's
/// entry keeps its own lifetime; O(1) on the server, whatever the blob's size.
pub(super) static FINALIZE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('STRLEN', KEYS[1]) ~= tonumber(ARGV[1]) then
  return 0
end
local n = string.len(ARGV[2])
if n > 0 and redis.call('GETRANGE', KEYS[1], -n, -1) ~= ARGV[2] then
  return 0
end
if ARGV[3] == '' then
  redis.call('PERSIST', KEYS[1])
else
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
end
return 1
",
    )
});

/// How many of a blob's last bytes identify it for [`FINALIZE`].
pub(super) const TAIL: usize = 32;

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
                .arg(MAX_RECORDED_MS)
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

/// Whether every tag's set still holds `key`, unmarked (a purge that ran since `record` took
/// it, or is taking it).
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
            let score: Option<f64> = match redis::cmd("ZSCORE")
                .arg(index)
                .arg(key)
                .query_async(&mut conn)
                .await
            {
                // Another type planted under the set's name since `record`: not recorded.
                Err(e) if e.code() == Some("WRONGTYPE") => None,
                other => other?,
            };
            // Absent, or marked by a purge that is under way: taken.
            Ok::<_, RedisError>(score.is_some_and(|s| s >= 0.0))
        }
    });
    let mut all = true;
    for result in futures_util::future::join_all(checks).await {
        all &= result?;
    }
    Ok(all)
}

/// Deletes every key recorded under `tag`, a batch at a time: marks the batch as taken, unlinks
/// the entries, then removes the members still marked. A purge cut short anywhere (a dropped
/// connection, a cancelled future) leaves its batch marked in the set, and the next purge
/// finishes it; a writer that records a key again meanwhile unmarks it, and its entry stays
/// indexed. How many keys existed, and whether the index can be trusted to have held them all:
/// it held only entries of this namespace and was a set (see [`Purge`]), and `trust`, or Redis
/// cannot evict (see [`cannot_evict`]).
pub(super) async fn purge(
    conn: &mut Conn,
    prefix: &str,
    tag: &str,
    trust: bool,
    on: Purge,
) -> Result<(usize, bool), RedisError> {
    let index = index_key(prefix, tag);
    let mut removed = 0usize;
    // Only entries of this namespace were found in the set so far.
    let mut sound = true;
    let drop_other_type = if matches!(on, Purge::Clear) { "1" } else { "0" };
    // Bounded: writers adding to the tag while it is purged could otherwise keep it going.
    for _ in 0..100_000 {
        let (other_type, members): (i64, Vec<Vec<u8>>) = TAKE
            .key(&index)
            .arg(PURGE_BATCH)
            .arg(drop_other_type)
            .invoke_async(conn)
            .await?;
        if other_type != 0 {
            // Whatever the set held before it was overwritten is unknown: the walk finds it.
            return Ok((removed, false));
        }
        if members.is_empty() {
            let complete = sound && (trust || cannot_evict(conn).await);
            return Ok((removed, complete));
        }
        // Only entries of this namespace: a store writer could add anything to the set, another
        // tag's set included (unlinking it would hide that tag's entries from its purges).
        let own: Vec<&Vec<u8>> = members.iter().filter(|m| is_entry(prefix, m)).collect();
        sound &= own.len() == members.len();
        if !own.is_empty() {
            let n: usize = redis::cmd("UNLINK").arg(&own).query_async(conn).await?;
            removed += n;
        }
        let mut done = DONE.key(&index);
        for m in &members {
            done.arg(m);
        }
        let _: Value = done.invoke_async(conn).await?;
    }
    Err(client_error(
        "a purge by tag did not end (writers keep adding to the tag)",
    ))
}

/// What a purge does with a key of another type under the set's name.
#[derive(Clone, Copy)]
pub(super) enum Purge {
    /// Leave it (the next write to the tag replaces it) and answer `complete: false`.
    Tag,
    /// Delete it: the whole namespace goes.
    Clear,
}

/// Whether a member of a tag's set names an entry of this namespace (and not a tag's set, nor
/// a key of another namespace).
fn is_entry(prefix: &str, member: &[u8]) -> bool {
    member.strip_prefix(prefix.as_bytes()).is_some_and(|rest| {
        !rest.is_empty()
            && !rest.starts_with(INDEX_MARK.as_bytes())
            && std::str::from_utf8(rest).is_ok()
    })
}

/// Whether Redis cannot have evicted a tag's set: no `maxmemory`, or `noeviction` (on a
/// cluster, on every primary), from `INFO memory`. Any other setting can evict the sets (they
/// carry a TTL, so `volatile-*` policies too), and an eviction counter cannot tell: it restarts
/// with the server, on a promoted replica and after `CONFIG RESETSTAT`. A user that may not run
/// `INFO` gets `false` too (the inspector then walks).
async fn cannot_evict(conn: &mut Conn) -> bool {
    match super::conn::info_all(conn, "memory").await {
        Ok(texts) => texts.iter().all(|text| {
            let field = |name: &str| {
                text.lines()
                    .find_map(|l| l.strip_prefix(name))
                    .map(str::trim)
                    .unwrap_or_default()
                    .to_owned()
            };
            field("maxmemory:") == "0" || field("maxmemory_policy:") == "noeviction"
        }),
        Err(_) => false,
    }
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

    #[test]
    fn only_entries_of_the_namespace_are_purged() {
        assert!(is_entry("hcc:", b"hcc:hcc1k:ab"));
        assert!(!is_entry("hcc:", b"hcc:#tag:t1:ab"));
        assert!(!is_entry("hcc:", b"other:hcc1:ab"));
        assert!(!is_entry("hcc:", b"hcc:"));
        assert!(!is_entry("hcc:", b"hcc:\xff"));
    }
}
