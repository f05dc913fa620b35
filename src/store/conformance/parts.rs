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

/// A `PutStream` (a write handed over as the body passes) is answered `Unsupported` (the cache
/// then sends a `PutParts` at the end), or with a [`BlobWriter`](crate::store::BlobWriter):
/// nothing is visible under the key before the commit (the previous entry stays), the blob
/// read back is the prefix followed by the appended buffers, and a writer dropped without a
/// commit leaves the previous entry (or nothing) under its key.
pub async fn put_stream<S: Store>(store: &S) {
    let k = key("stream");
    let open = |k: &crate::CacheKey| {
        call(
            store,
            StoreRequest::PutStream {
                key: k.clone(),
                ttl: None,
                tags: Vec::new(),
            },
        )
    };
    let mut writer = match open(&k).await {
        StoreResponse::Unsupported => return,
        StoreResponse::Writer(writer) => writer,
        other => panic!("PutStream must answer Writer or Unsupported, got {other:?}"),
    };
    super::put(store, &k, Bytes::from_static(b"the previous entry"), None).await;
    let prefix: Bytes = (0..5000u32).map(|i| (i % 251) as u8).collect();
    let mut all = prefix.to_vec();
    for (i, len) in [70_000usize, 1, 1 << 20, 2 << 20, 9]
        .into_iter()
        .enumerate()
    {
        let part: Bytes = (0..len).map(|j| (i * 13 + j * 3) as u8).collect();
        all.extend_from_slice(&part);
        writer.append(part).expect("the store takes the write");
        assert_eq!(
            get(store, &k).await.as_deref(),
            Some(&b"the previous entry"[..]),
            "nothing of a streamed write is visible before its commit"
        );
    }
    match writer.commit(prefix).await {
        Ok(StoreResponse::Done) => {}
        other => panic!("a streamed write's commit must answer Done, got {other:?}"),
    }
    let got = get(store, &k).await;
    assert!(
        got.as_deref() == Some(&all[..]),
        "a streamed write must read back as its prefix then its buffers (got {:?} bytes)",
        got.map(|g| g.len())
    );
    // Aborted over an existing entry, and on a fresh key.
    let fresh = key("stream-aborted");
    for k in [&k, &fresh] {
        let StoreResponse::Writer(mut writer) = open(k).await else {
            panic!("a store that streamed once streams again");
        };
        writer
            .append(Bytes::from(vec![7u8; 100_000]))
            .expect("the store takes the write");
        drop(writer);
    }
    assert!(
        get(store, &k).await.as_deref() == Some(&all[..]),
        "an aborted streamed write leaves the previous entry"
    );
    assert!(
        get(store, &fresh).await.is_none(),
        "an aborted streamed write leaves nothing"
    );
    call(store, StoreRequest::Delete { key: k.clone() }).await;
}
