//! The versioned postcard wire struct. It is separate from [`EntryHead`] so that the in-memory
//! types can change without silently changing the stored format.
//!
//! Decoding borrows from the verified payload: header values and the body become `Bytes` slices
//! of the blob the store returned, not copies.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Version};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::entry::{Entry, EntryHead, Expiry, VaryValue};

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

/// The stored head of format version 3 (version 1 had no `expiry`; version 2 carried the
/// trailers here, before the body, which a writer only knows once the body has ended). The body
/// follows it raw; the trailer section ([`encode_tail`]) ends the payload.
#[derive(Serialize, Deserialize)]
struct WireHeadV3<'a> {
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
}

/// Trailer fields received after the body, if any: the payload's last section, followed by its
/// own length.
type WireTail<'a> = Option<Vec<(Raw<'a>, Raw<'a>)>>;

/// The length of the big-endian `u32` that ends a payload: the trailer section's length.
const TAIL_LEN: usize = 4;

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

/// Appends the postcard encoding of `head` to `out`: the start of a payload.
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
    let wire = WireHeadV3 {
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
    };
    postcard::to_extend(&wire, out)
}

/// Appends the end of a payload to `out`: the trailer section, then its length (`u32`, big
/// endian). Written once the body has passed, so a payload is written front to back.
pub(crate) fn encode_tail(
    trailers: Option<&HeaderMap>,
    out: Vec<u8>,
) -> Result<Vec<u8>, postcard::Error> {
    let tail: WireTail<'_> = trailers.map(wire_fields);
    let start = out.len();
    let mut out = postcard::to_extend(&tail, out)?;
    let len = u32::try_from(out.len() - start).map_err(|_| postcard::Error::SerializeBufferFull)?;
    out.extend_from_slice(&len.to_be_bytes());
    Ok(out)
}

/// [`encode_tail`] into a buffer of its own.
pub(crate) fn tail(trailers: Option<&HeaderMap>) -> Result<Vec<u8>, postcard::Error> {
    encode_tail(trailers, Vec::new())
}

/// Decodes a verified payload. `None` when it does not decode: the caller treats that as a miss.
/// Header values, the URI and Vary values are slices of `payload`.
pub(crate) fn decode(payload: &Bytes) -> Option<Entry> {
    decode_in(payload, false)
}

/// [`decode`] for a payload shared with other threads (a slice of the blob a `MemoryStore`
/// holds): the header section is copied once into a buffer of this request's own, and the
/// header values are slices of that, so that their references are counted there and not on the
/// shared blob's counter, which every concurrent hit of the key would otherwise write (a
/// contended cache line between cores). The body stays a slice of the shared blob.
pub(crate) fn decode_shared(payload: &Bytes) -> Option<Entry> {
    decode_in(payload, true)
}

fn decode_in(payload: &Bytes, copy_head: bool) -> Option<Entry> {
    let (wire, rest) = postcard::take_from_bytes::<WireHeadV3<'_>>(payload).ok()?;
    let head_len = payload.len() - rest.len();
    // The tail: the trailer section, found from the end by its length.
    let tail_at = rest.len().checked_sub(TAIL_LEN)?;
    let tail_len = u32::from_be_bytes(rest.get(tail_at..)?.try_into().ok()?);
    let body_len = tail_at.checked_sub(usize::try_from(tail_len).ok()?)?;
    let (tail, unread) =
        postcard::take_from_bytes::<WireTail<'_>>(&rest[body_len..tail_at]).ok()?;
    if !unread.is_empty() {
        return None;
    }
    let body_end = head_len + body_len;
    // The head copied (see `decode_shared`), and the trailers with it: both are small.
    let own = copy_head.then(|| {
        let mut own = Vec::with_capacity(head_len + (payload.len() - body_end));
        own.extend_from_slice(&payload[..head_len]);
        own.extend_from_slice(&payload[body_end..]);
        Bytes::from(own)
    });
    // A slice of the head as `Bytes`: of the private copy when there is one (at the same
    // offset), else of the payload. `raw` always lies within the payload's head.
    // (the tail follows the head in the copy, so an offset past the body moves back by it).
    let slice = |raw: &[u8]| -> Bytes {
        match &own {
            Some(own) => {
                let mut at = (raw.as_ptr() as usize).saturating_sub(payload.as_ptr() as usize);
                if at >= body_end {
                    at -= body_len;
                }
                own.slice(at.min(own.len())..(at + raw.len()).min(own.len()))
            }
            None => payload.slice_ref(raw),
        }
    };
    if wire.vary.len() > MAX_FIELDS {
        return None;
    }
    let fields = |list: Vec<(Raw<'_>, Raw<'_>)>| -> Option<HeaderMap> {
        // Above the bound `HeaderMap::with_capacity` (and `append`) would panic.
        if list.len() > MAX_FIELDS {
            return None;
        }
        let mut map = HeaderMap::with_capacity(list.len());
        for (name, value) in list {
            let name = HeaderName::from_bytes(name.0).ok()?;
            // A slice of the verified blob: no copy.
            let value = HeaderValue::from_maybe_shared(slice(value.0)).ok()?;
            map.append(name, value);
        }
        Some(map)
    };
    let headers = fields(wire.headers)?;
    let trailers = match tail {
        Some(list) => Some(fields(list)?),
        None => None,
    };
    let mut vary = Vec::with_capacity(wire.vary.len());
    for (name, value) in wire.vary {
        let name = HeaderName::from_bytes(name.0).ok()?;
        let value = match value {
            WireVary::Absent => VaryValue::Absent,
            WireVary::Clear(raw) => VaryValue::Clear(slice(raw.0)),
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
        uri: slice(wire.uri.0),
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
    };
    Some(Entry {
        head,
        body: payload.slice(head_len..body_end),
        trailers,
    })
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
