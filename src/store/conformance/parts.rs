//! The second shape of a write: an entry given as a list of buffers (`PutParts`), and the second
//! and third shapes of a read (`Parts`, `Stream`).

use bytes::Bytes;

use super::{call, get, get_bounded, key};
use crate::store::{BlobParts, Store, StoreRequest, StoreResponse};

/// A `PutParts` is stored as the bytes of its parts in order (however the store keeps them and
/// whatever shape it answers a `Get` with), or refused as `Unsupported` (a store that deals in
/// whole blobs; the cache then joins the parts and sends a `Put`). A blob of 3 MiB in uneven parts
/// checks that a store that streams large blobs (`DiskStore`) yields every byte, in order, and the
/// length it says; a bounded `Get` below it answers `None` or the whole blob, never a prefix.
pub async fn put_parts<S: Store>(store: &S) {
    let k = key("parts");
    let mut parts = Vec::new();
    let mut all = Vec::new();
    for (i, len) in [1usize, 70_000, 0, 3, 1 << 20, 2 << 20, 17]
        .into_iter()
        .enumerate()
    {
        let part: Vec<u8> = (0..len).map(|j| (i * 31 + j * 7) as u8).collect();
        all.extend_from_slice(&part);
        parts.push(Bytes::from(part));
    }
    let parts = BlobParts::from(parts);
    assert_eq!(parts.len(), all.len());
    let answer = call(
        store,
        StoreRequest::PutParts {
            key: k.clone(),
            parts,
            ttl: None,
            tags: Vec::new(),
        },
    )
    .await;
    match answer {
        StoreResponse::Unsupported => return,
        StoreResponse::Done => {}
        other => panic!("PutParts must answer Done or Unsupported, got {other:?}"),
    }
    let got = get(store, &k).await;
    assert!(
        got.as_deref() == Some(&all[..]),
        "a PutParts must read back as its parts' bytes in order (got {:?} bytes)",
        got.map(|g| g.len())
    );
    let got = get_bounded(store, &k, all.len() - 1).await;
    assert!(
        got.is_none() || got.as_deref() == Some(&all[..]),
        "over the bound, a store answers None or the whole blob"
    );
    call(store, StoreRequest::Delete { key: k.clone() }).await;
    assert!(get(store, &k).await.is_none(), "a deleted PutParts is gone");
}
