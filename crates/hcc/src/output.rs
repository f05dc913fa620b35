//! How `hcc` prints entries: text lines and JSON objects, escaped (whoever writes to the store
//! chooses the bytes of a URL or a key).

use std::time::{SystemTime, UNIX_EPOCH};

use hyper_client_cache::{EntryInfo, InvalidEntry};
use serde_json::json;

use crate::escape;

/// `1 entry`, `2 entries`.
pub(crate) fn count(n: u64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

fn secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

pub(crate) fn entry_json(e: &EntryInfo) -> serde_json::Value {
    json!({
        "key": e.key.as_str(),
        "url": e.url,
        "method": e.method.as_str(),
        "status": e.status.as_u16(),
        "size": e.size,
        "created_at": secs(e.created_at),
        "expires": e.expires.map(secs),
        "expired": e.is_expired,
        "variant": e.is_variant,
        "tags": e.tags,
    })
}

pub(crate) fn invalid_json(e: &InvalidEntry, deleted: bool) -> serde_json::Value {
    json!({
        "key": e.key.as_str(),
        "invalid": true,
        "bad_signature": e.bad_signature,
        "foreign": e.foreign,
        "deleted": deleted,
        "reason": e.reason,
    })
}

pub(crate) fn entry_line(e: &EntryInfo) -> String {
    let expires = match e.expires {
        Some(t) if e.is_expired => format!("expired {}", httpdate::fmt_http_date(t)),
        Some(t) => format!("fresh until {}", httpdate::fmt_http_date(t)),
        None => "no expiry".to_owned(),
    };
    format!(
        "{} {} {} {} bytes, {}{}",
        e.status.as_u16(),
        escape::text(e.method.as_str()),
        escape::text(&e.url),
        e.size,
        expires,
        if e.is_variant { " (variant copy)" } else { "" }
    )
}
