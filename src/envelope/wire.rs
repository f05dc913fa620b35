//! The versioned postcard wire struct. It is separate from [`EntryHead`] so that the in-memory
//! types can change without silently changing the stored format.
//!
//! Decoding borrows from the verified head record: header values become `Bytes` slices of it,
//! not copies.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Version};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::entry::{EntryHead, Expiry, Fresh, StaleRules, VaryValue};

/// Bytes that postcard writes as one length-prefixed run (not a sequence of `u8`s). Postcard
/// writes a `&str` the same way, so names, method and URI are read as `Raw` too: the format is
/// unchanged, and reading skips a UTF-8 check that `HeaderName`/`Method` parsing makes redundant.
#[derive(Debug, Clone, Copy)]
struct Raw<'a>(&'a [u8]);

impl Serialize for Raw<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(self.0)
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Raw<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        <&'a [u8]>::deserialize(d).map(Raw)
    }
}

/// The most header fields (and, separately, trailer fields and Vary selecting fields) an entry
/// holds. Far above what an HTTP parser accepts (hyper's client: 100 by default) and below what a
/// `HeaderMap` can be built with (24,576): a response with more is not stored, and a stored blob
/// with more (only a foreign writer can make one) is a miss. Nothing in decoding may panic.
pub(crate) const MAX_FIELDS: usize = 4096;

/// Whether an entry with this head and these trailers can be stored.
pub(crate) fn fits(head: &EntryHead, trailers: Option<&HeaderMap>) -> bool {
    head.headers.len() <= MAX_FIELDS
        && head.vary.len() <= MAX_FIELDS
        && trailers.is_none_or(|t| t.len() <= MAX_FIELDS)
}

#[derive(Serialize, Deserialize)]
enum WireVary<'a> {
    Absent,
    #[serde(borrow)]
    Clear(Raw<'a>),
    Digest([u8; 32]),
}

/// The first fields of a format 4 head: those known when the response starts. The rest
/// ([`WireHeadEnd`]) is known once the body has ended; postcard writes a struct as its fields one
/// after the other, so the two written in turn read back as one [`WireHeadV4`].
#[derive(Serialize)]
struct WireHeadStart<'a> {
    status: u16,
    version: u8,
    headers: Vec<(Raw<'a>, Raw<'a>)>,
    request_time: (u64, u32),
    response_time: (u64, u32),
    method: Raw<'a>,
    uri: Raw<'a>,
    vary: Vec<(Raw<'a>, WireVary<'a>)>,
    generation: u64,
    expiry: (u8, u64, u32),
    fresh: Option<WireFresh>,
}

/// `policy::Fresh`: rules id, response time, age value (s), date value, lifetime, the stale
/// rules' flags (bit 0 no-cache, 1 must-revalidate, 2 proxy-revalidate, 3 s-maxage),
/// stale-if-error, stale-while-revalidate.
type WireFresh = (
    u64,
    (u64, u32),
    u64,
    (u64, u32),
    (u64, u32),
    u8,
    Option<u64>,
    Option<u64>,
);

fn fresh_to_wire(f: &Fresh) -> WireFresh {
    let s = &f.stale;
    let flags = u8::from(s.no_cache)
        | u8::from(s.must_revalidate) << 1
        | u8::from(s.proxy_revalidate) << 2
        | u8::from(s.s_maxage) << 3;
    (
        f.rules,
        time_to_wire(f.response_time),
        f.age_value.as_secs(),
        time_to_wire(f.date_value),
        (f.lifetime.as_secs(), f.lifetime.subsec_nanos()),
        flags,
        s.stale_if_error,
        s.stale_while_revalidate,
    )
}

fn fresh_from_wire(w: WireFresh) -> Option<Fresh> {
    let (rules, response_time, age, date, (secs, nanos), flags, sie, swr) = w;
    if flags > 0b1111 || nanos >= 1_000_000_000 {
        return None;
    }
    Some(Fresh {
        rules,
        response_time: time_from_wire(response_time)?,
        age_value: Duration::from_secs(age),
        date_value: time_from_wire(date)?,
        lifetime: Duration::new(secs, nanos),
        stale: StaleRules {
            no_cache: flags & 1 != 0,
            must_revalidate: flags & 2 != 0,
            proxy_revalidate: flags & 4 != 0,
            s_maxage: flags & 8 != 0,
            stale_if_error: sie,
            stale_while_revalidate: swr,
        },
    })
}

/// The last fields of a format 4 head.
#[derive(Serialize)]
struct WireHeadEnd<'a> {
    body_len: u64,
    trailers: Option<Vec<(Raw<'a>, Raw<'a>)>>,
}

/// The stored head of format version 4: the response's head, the body's length and its
/// trailers (version 3 wrote the trailers after the body; version 4 seals the head once the body
/// has ended, so a reader knows them, and the body's length, before reading any of the body).
#[derive(Deserialize)]
struct WireHeadV4<'a> {
    status: u16,
    version: u8,
    #[serde(borrow)]
    headers: Vec<(Raw<'a>, Raw<'a>)>,
    request_time: (u64, u32),
    response_time: (u64, u32),
    method: Raw<'a>,
    uri: Raw<'a>,
    #[serde(borrow)]
    vary: Vec<(Raw<'a>, WireVary<'a>)>,
    /// The variant generation of the URL (see `EntryHead::generation`).
    generation: u64,
    /// `(kind, secs, nanos)`: kind 0 = from the headers, 1 = filled in, 2 = override.
    expiry: (u8, u64, u32),
    /// The freshness inputs its writer computed (`policy::fresh`).
    fresh: Option<WireFresh>,
    body_len: u64,
    #[serde(borrow)]
    trailers: Option<Vec<(Raw<'a>, Raw<'a>)>>,
}

fn version_to_wire(v: Version) -> u8 {
    match v {
        Version::HTTP_09 => 0,
        Version::HTTP_10 => 1,
        Version::HTTP_2 => 3,
        Version::HTTP_3 => 4,
        _ => 2,
    }
}

fn version_from_wire(v: u8) -> Option<Version> {
    Some(match v {
        0 => Version::HTTP_09,
        1 => Version::HTTP_10,
        2 => Version::HTTP_11,
        3 => Version::HTTP_2,
        4 => Version::HTTP_3,
        _ => return None,
    })
}

fn time_to_wire(t: SystemTime) -> (u64, u32) {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
    (d.as_secs(), d.subsec_nanos())
}

fn time_from_wire((secs, nanos): (u64, u32)) -> Option<SystemTime> {
    if nanos >= 1_000_000_000 {
        return None;
    }
    UNIX_EPOCH.checked_add(Duration::new(secs, nanos))
}

fn wire_fields(map: &HeaderMap) -> Vec<(Raw<'_>, Raw<'_>)> {
    map.iter()
        .map(|(n, v)| (Raw(n.as_str().as_bytes()), Raw(v.as_bytes())))
        .collect()
}

/// Appends the postcard encoding of the fields of `head` known when the response starts.
pub(crate) fn encode_head(head: &EntryHead, out: Vec<u8>) -> Result<Vec<u8>, postcard::Error> {
    let headers = wire_fields(&head.headers);
    let vary = head
        .vary
        .iter()
        .map(|(n, v)| {
            let v = match v {
                VaryValue::Absent => WireVary::Absent,
                VaryValue::Clear(b) => WireVary::Clear(Raw(b)),
                VaryValue::Digest(d) => WireVary::Digest(*d),
            };
            (Raw(n.as_str().as_bytes()), v)
        })
        .collect();
    let wire = WireHeadStart {
        status: head.status.as_u16(),
        version: version_to_wire(head.version),
        headers,
        request_time: time_to_wire(head.request_time),
        response_time: time_to_wire(head.response_time),
        method: Raw(head.method.as_str().as_bytes()),
        uri: Raw(&head.uri),
        vary,
        generation: head.generation,
        expiry: match head.expiry {
            Expiry::Headers => (0, 0, 0),
            Expiry::Fill(d) => (1, d.as_secs(), d.subsec_nanos()),
            Expiry::Override(d) => (2, d.as_secs(), d.subsec_nanos()),
        },
        fresh: head.fresh.as_ref().map(fresh_to_wire),
    };
    postcard::to_extend(&wire, out)
}

/// Appends the rest of a head to what [`encode_head`] wrote: the body's length and the
/// trailers, known once the body has ended.
pub(crate) fn encode_head_end(
    body_len: u64,
    trailers: Option<&HeaderMap>,
    out: Vec<u8>,
) -> Result<Vec<u8>, postcard::Error> {
    let end = WireHeadEnd {
        body_len,
        trailers: trailers.map(wire_fields),
    };
    postcard::to_extend(&end, out)
}

/// A verified head record, decoded: the head, the body's length, the trailers and where the
/// encoded head ends in `bytes` (what follows is the body, for an entry whose body is in its head
/// record). `None` when it does not decode: the caller treats that as a miss. Header values, the
/// URI and Vary values are slices of `bytes` (which should be the reader's own buffer, not one
/// shared between threads: their reference counts are updated on every hit).
pub(crate) fn decode_head(bytes: &Bytes) -> Option<(EntryHead, u64, Option<HeaderMap>, usize)> {
    let (wire, rest) = postcard::take_from_bytes::<WireHeadV4<'_>>(bytes).ok()?;
    if wire.vary.len() > MAX_FIELDS {
        return None;
    }
    let end = bytes.len() - rest.len();
    let fields = |list: Vec<(Raw<'_>, Raw<'_>)>| -> Option<HeaderMap> {
        // Above the bound `HeaderMap::with_capacity` (and `append`) would panic.
        if list.len() > MAX_FIELDS {
            return None;
        }
        let mut map = HeaderMap::with_capacity(list.len());
        for (name, value) in list {
            let name = HeaderName::from_bytes(name.0).ok()?;
            // A slice of the verified record: no copy.
            let value = HeaderValue::from_maybe_shared(bytes.slice_ref(value.0)).ok()?;
            map.append(name, value);
        }
        Some(map)
    };
    let headers = fields(wire.headers)?;
    let trailers = match wire.trailers {
        Some(list) => Some(fields(list)?),
        None => None,
    };
    let mut vary = Vec::with_capacity(wire.vary.len());
    for (name, value) in wire.vary {
        let name = HeaderName::from_bytes(name.0).ok()?;
        let value = match value {
            WireVary::Absent => VaryValue::Absent,
            WireVary::Clear(raw) => VaryValue::Clear(bytes.slice_ref(raw.0)),
            WireVary::Digest(d) => VaryValue::Digest(d),
        };
        vary.push((name, value));
    }
    let head = EntryHead {
        status: StatusCode::from_u16(wire.status).ok()?,
        version: version_from_wire(wire.version)?,
        headers,
        request_time: time_from_wire(wire.request_time)?,
        response_time: time_from_wire(wire.response_time)?,
        method: Method::from_bytes(wire.method.0).ok()?,
        uri: bytes.slice_ref(wire.uri.0),
        vary,
        generation: wire.generation,
        expiry: match wire.expiry {
            (0, _, _) => Expiry::Headers,
            (kind @ (1 | 2), secs, nanos) if nanos < 1_000_000_000 => {
                let d = Duration::new(secs, nanos);
                if kind == 1 {
                    Expiry::Fill(d)
                } else {
                    Expiry::Override(d)
                }
            }
            _ => return None,
        },
        fresh: match wire.fresh {
            Some(f) => Some(fresh_from_wire(f)?),
            None => None,
        },
    };
    Some((head, wire.body_len, trailers, end))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Names, method and URI are read as `Raw` but were written as `&str` by earlier builds of
    /// format version 2: postcard must encode both the same way.
    #[test]
    fn raw_and_str_are_the_same_on_the_wire() {
        for text in ["", "content-type", "http://example.com/a?b=c", "é"] {
            assert_eq!(
                postcard::to_allocvec(&text).unwrap(),
                postcard::to_allocvec(&Raw(text.as_bytes())).unwrap()
            );
        }
        let long = "x".repeat(300); // a two-byte length prefix
        assert_eq!(
            postcard::to_allocvec(&long.as_str()).unwrap(),
            postcard::to_allocvec(&Raw(long.as_bytes())).unwrap()
        );
    }
}
