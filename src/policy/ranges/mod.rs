//! Range requests and partial content (RFC 9110 §14, RFC 9111 §3.3–§3.4).
//!
//! What the cache does with them:
//!
//! - A `GET` with one byte range (`bytes=a-b`, `bytes=a-`, `bytes=-n`) is answered from a
//!   complete stored `200` with a `206` of that range, or a `416` with `Content-Range: bytes */N`
//!   when the range is not satisfiable (RFC 9110 §14.1.2, §15.5.17).
//! - `If-Range` is evaluated against the stored response (§13.1.5): when it does not hold, the
//!   whole stored response is served (`200`), as an origin would.
//! - A request with several ranges goes to the origin (whose `multipart/byteranges` answer is
//!   not stored): an origin decides better how to split its content, and a cache gains little.
//! - A `206` with one `Content-Range: bytes a-b/N` and a matching `Content-Length` is stored as
//!   an incomplete entry (RFC 9111 §3.3), used only for requests whose range it holds whole, and
//!   combined with a later `206` of the same representation when both carry the same strong
//!   `ETag` and their ranges meet or overlap (§3.4). Combined into the whole representation, it
//!   becomes a complete `200`.
//!
//! A `Range` field the cache cannot read (another unit, bad syntax, `last < first`) is ignored,
//! as RFC 9110 §14.2 lets a server do: the request is a plain `GET`.

use http::header::{self, HeaderMap, HeaderValue};

use super::dates;

/// One byte range of a `Range` request (RFC 9110 §14.1.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ByteRange {
    /// `first-` or `first-last`.
    From { first: u64, last: Option<u64> },
    /// `-length`: the last `length` bytes.
    Suffix(u64),
}

/// What a `Range` field asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RangeRequest {
    Single(ByteRange),
    /// Two or more ranges: forwarded.
    Multiple,
}

/// `Content-Range: bytes first-last/complete` of a stored or received `206` (§14.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ContentRange {
    pub(crate) first: u64,
    pub(crate) last: u64,
    /// The length of the whole representation.
    pub(crate) complete: u64,
}

impl ContentRange {
    /// How many bytes it covers.
    pub(crate) fn len(&self) -> u64 {
        self.last - self.first + 1
    }

    /// The field value.
    pub(crate) fn header_value(&self) -> HeaderValue {
        let text = format!("bytes {}-{}/{}", self.first, self.last, self.complete);
        HeaderValue::from_str(&text).unwrap_or(HeaderValue::from_static("bytes */0"))
    }
}

/// What to serve of a stored response for a ranged request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Selected {
    /// The whole stored response, as it is.
    Whole,
    /// A `206` of these bytes; positions in the whole representation.
    Part(ContentRange),
    /// A `416`: no byte of the range exists in a representation of this length.
    Unsatisfiable { complete: u64 },
}

/// What to serve of a stored response (`status`, `headers`, a body of `body_len` bytes) for a
/// request of `range` with `if_range`. `None`: the stored response cannot answer (an incomplete
/// one that does not hold the range, or whose `If-Range` does not hold).
pub(crate) fn select(
    range: ByteRange,
    if_range: Option<&HeaderValue>,
    status: http::StatusCode,
    headers: &HeaderMap,
    body_len: u64,
) -> Option<Selected> {
    let holds = if_range.is_none_or(|v| if_range_holds(v, headers));
    match status.as_u16() {
        // RFC 9111 §3.3: an incomplete response answers only a range it holds, and only as
        // itself (If-Range not holding would ask for the whole representation).
        206 => {
            let have = stored_range(headers).filter(|have| have.len() == body_len)?;
            if !holds {
                return None;
            }
            within(range, have).map(Selected::Part)
        }
        // §13.1.5: "if the condition is false, the server SHOULD ignore the Range header
        // field and respond with the entire representation".
        200 if holds => Some(resolve(range, body_len)),
        // Ranges are of representations: any other status is served as it is.
        _ => Some(Selected::Whole),
    }
}

/// Parses a request's `Range` field (RFC 9110 §14.2). `None` when there is none or it is to be
/// ignored (not `bytes`, not valid).
pub(crate) fn parse_range(headers: &HeaderMap) -> Option<RangeRequest> {
    let mut lines = headers.get_all(header::RANGE).iter();
    let first = lines.next()?;
    // A field of several lines is one list (RFC 9110 §5.3): more than one range.
    if lines.next().is_some() {
        return Some(RangeRequest::Multiple);
    }
    let text = first.to_str().ok()?.trim();
    let (unit, set) = text.split_once('=')?;
    // §14.1: "Range unit names are case-insensitive".
    if !unit.eq_ignore_ascii_case("bytes") {
        return None;
    }
    let mut specs = set
        .split(',')
        .map(|s| s.trim_matches([' ', '\t']))
        .filter(|s| !s.is_empty());
    let one = parse_spec(specs.next()?)?;
    let mut more = false;
    for spec in specs {
        parse_spec(spec)?;
        more = true;
    }
    Some(if more {
        RangeRequest::Multiple
    } else {
        RangeRequest::Single(one)
    })
}

fn parse_spec(spec: &str) -> Option<ByteRange> {
    let (first, last) = spec.split_once('-')?;
    let digits = |s: &str| -> Option<u64> {
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        // Past u64: as large as can be (the range then starts beyond any body, or covers all).
        Some(s.parse().unwrap_or(u64::MAX))
    };
    if first.is_empty() {
        return Some(ByteRange::Suffix(digits(last)?));
    }
    let first = digits(first)?;
    let last = if last.is_empty() {
        None
    } else {
        Some(digits(last)?)
    };
    // §14.1.1: "A client MUST NOT generate a range-spec with last-pos < first-pos"; invalid.
    if last.is_some_and(|l| l < first) {
        return None;
    }
    Some(ByteRange::From { first, last })
}

/// The bytes of a representation of `complete` bytes that `range` selects (§14.1.2).
pub(crate) fn resolve(range: ByteRange, complete: u64) -> Selected {
    let unsatisfiable = Selected::Unsatisfiable { complete };
    // "If the selected representation has zero length, the only satisfiable form of range
    // request is a suffix-range with a non-zero suffix-length": it selects nothing, so the
    // whole (empty) response is the answer.
    if complete == 0 {
        return match range {
            ByteRange::Suffix(n) if n > 0 => Selected::Whole,
            _ => unsatisfiable,
        };
    }
    let (first, last) = match range {
        ByteRange::From { first, .. } if first >= complete => return unsatisfiable,
        ByteRange::From { first, last } => {
            (first, last.map_or(complete - 1, |l| l.min(complete - 1)))
        }
        ByteRange::Suffix(0) => return unsatisfiable,
        ByteRange::Suffix(n) => (complete.saturating_sub(n), complete - 1),
    };
    Selected::Part(ContentRange {
        first,
        last,
        complete,
    })
}

/// The bytes `range` selects when only `have` is stored: `Some` when they lie wholly within it
/// (RFC 9111 §3.3: an incomplete response answers only "a range wholly within" it).
pub(crate) fn within(range: ByteRange, have: ContentRange) -> Option<ContentRange> {
    match resolve(range, have.complete) {
        Selected::Part(want) if want.first >= have.first && want.last <= have.last => Some(want),
        _ => None,
    }
}

/// The `Content-Range` of a `206` the cache may store: exactly `bytes first-last/complete`, a
/// known complete length, `last < complete`, and a `Content-Length` equal to its length (the
/// body is then checked against it while it is stored). `None` for anything else, including
/// `multipart/byteranges` (no `Content-Range` of its own).
pub(crate) fn storable_partial(headers: &HeaderMap) -> Option<ContentRange> {
    let mut values = headers.get_all(header::CONTENT_RANGE).iter();
    let value = values.next()?;
    if values.next().is_some() {
        return None;
    }
    let range = parse_content_range(value.to_str().ok()?)?;
    let length = super::fields::content_length(headers)?;
    (length == range.len()).then_some(range)
}

fn parse_content_range(text: &str) -> Option<ContentRange> {
    let rest = text.trim().strip_prefix("bytes ")?;
    let (span, complete) = rest.split_once('/')?;
    let (first, last) = span.split_once('-')?;
    let num = |s: &str| -> Option<u64> {
        if s.is_empty() || s.len() > 19 || !s.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        s.parse().ok()
    };
    let range = ContentRange {
        first: num(first)?,
        last: num(last)?,
        complete: num(complete)?,
    };
    (range.first <= range.last && range.last < range.complete).then_some(range)
}

/// The stored `Content-Range` of an incomplete entry (as stored, so already checked once).
pub(crate) fn stored_range(headers: &HeaderMap) -> Option<ContentRange> {
    parse_content_range(headers.get(header::CONTENT_RANGE)?.to_str().ok()?)
}

/// RFC 9110 §13.1.5: whether `If-Range` holds for the stored response: an entity tag that
/// matches its `ETag` by the strong comparison, or an HTTP-date equal to its `Last-Modified`
/// when that date is strong (§8.8.2.2: at least a second before its `Date`). Anything else does
/// not hold: the whole representation is sent.
pub(crate) fn if_range_holds(if_range: &HeaderValue, stored: &HeaderMap) -> bool {
    let Ok(text) = if_range.to_str() else {
        return false;
    };
    let text = text.trim();
    if text.starts_with('"') || text.starts_with("W/") {
        return strong_etag(stored).is_some_and(|ours| ours == text);
    }
    let (Some(since), Some(modified), Some(date)) = (
        dates::parse(text),
        date_field(stored, header::LAST_MODIFIED),
        date_field(stored, header::DATE),
    ) else {
        return false;
    };
    since == modified
        && date
            .duration_since(modified)
            .is_ok_and(|d| d.as_secs() >= 1)
}

fn date_field(headers: &HeaderMap, name: header::HeaderName) -> Option<std::time::SystemTime> {
    dates::parse(headers.get(name)?.to_str().ok()?.trim())
}

/// The response's `ETag` when it is one strong entity tag (§8.8.3: not `W/`).
pub(crate) fn strong_etag(headers: &HeaderMap) -> Option<&str> {
    let mut values = headers.get_all(header::ETAG).iter();
    let tag = values.next()?.to_str().ok()?.trim();
    if values.next().is_some() || !tag.starts_with('"') || tag.len() < 2 || !tag.ends_with('"') {
        return None;
    }
    Some(tag)
}

/// RFC 9111 §3.4: two partial responses may be combined when both have the same strong
/// validator (here: the same strong `ETag`), describe a representation of the same length, and
/// their ranges meet or overlap. The union of the ranges.
pub(crate) fn combine(
    stored: (&HeaderMap, ContentRange),
    new: (&HeaderMap, ContentRange),
) -> Option<ContentRange> {
    let (old_headers, old) = stored;
    let (new_headers, new) = new;
    let same = strong_etag(old_headers).is_some_and(|a| strong_etag(new_headers) == Some(a));
    if !same || old.complete != new.complete {
        return None;
    }
    let meet = old.first <= new.last.saturating_add(1) && new.first <= old.last.saturating_add(1);
    meet.then(|| ContentRange {
        first: old.first.min(new.first),
        last: old.last.max(new.last),
        complete: new.complete,
    })
}

/// Where the stored part's bytes go around the new part's in `union` (see [`combine`]): the
/// ranges of the stored body before and after the new bytes, which win where the two overlap
/// (they are the same representation, and the newer copy). The new bytes can then stream into
/// the combined entry between the two. `None` when the parts do not make `union`.
pub(crate) fn splice_parts(
    old_range: ContentRange,
    new_range: ContentRange,
    union: ContentRange,
) -> Option<(std::ops::Range<usize>, std::ops::Range<usize>)> {
    let old_len = usize::try_from(old_range.len()).ok()?;
    let first = old_range.first.min(new_range.first);
    let last = old_range.last.max(new_range.last);
    // They meet (or overlap), and their union is `union`.
    if first != union.first
        || last != union.last
        || new_range.first > old_range.last.saturating_add(1)
        || old_range.first > new_range.last.saturating_add(1)
    {
        return None;
    }
    let before = usize::try_from(new_range.first.saturating_sub(old_range.first)).ok()?;
    let after = usize::try_from(
        (new_range.last.saturating_add(1))
            .saturating_sub(old_range.first)
            .min(old_range.len()),
    )
    .ok()?;
    Some((
        0..before.min(old_len),
        after.max(before.min(old_len))..old_len,
    ))
}

/// The bytes of `union` from a stored part and a new one (see [`splice_parts`]), in one buffer.
#[cfg(test)]
pub(crate) fn splice(
    old: &[u8],
    old_range: ContentRange,
    new: &[u8],
    new_range: ContentRange,
    union: ContentRange,
) -> Option<Vec<u8>> {
    if old.len() as u64 != old_range.len() || new.len() as u64 != new_range.len() {
        return None;
    }
    let (prefix, suffix) = splice_parts(old_range, new_range, union)?;
    let mut out = Vec::new();
    out.extend_from_slice(&old[prefix]);
    out.extend_from_slice(new);
    out.extend_from_slice(&old[suffix]);
    (out.len() as u64 == union.len()).then_some(out)
}

#[cfg(test)]
mod tests;
