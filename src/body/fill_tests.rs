//! A fill read by several readers, without sockets.

use std::future::poll_fn;

use http_body_util::BodyExt;

use super::*;

fn head() -> EntryHead {
    EntryHead::for_tests()
}

/// A fill whose source is fed through a channel, not being stored.
fn fill(max_kept: usize) -> (http_body_util::channel::Sender<Bytes, BoxError>, Arc<Fill>) {
    let (tx, body) = http_body_util::channel::Channel::<Bytes, BoxError>::new(16);
    let fill = Fill::new(
        body.boxed_unsync(),
        None,
        max_kept,
        head(),
        CacheKey::from_stored("k"),
    );
    (tx, fill)
}

async fn next(reader: &mut FillReader) -> Option<Result<Frame<Bytes>, BoxError>> {
    poll_fn(|cx| reader.poll_frame(cx)).await
}

async fn read_all(reader: &mut FillReader) -> Result<Vec<u8>, BoxError> {
    let mut out = Vec::new();
    while let Some(frame) = next(reader).await {
        if let Ok(data) = frame?.into_data() {
            out.extend_from_slice(&data);
        }
    }
    Ok(out)
}

/// One reader moves the body on for everybody; another that has not polled yet reads every
/// chunk afterwards, from the first.
#[tokio::test]
async fn every_reader_reads_every_chunk_whoever_polls() {
    let (mut tx, fill) = fill(1 << 20);
    let mut a = fill.reader().unwrap();
    let mut b = fill.reader().unwrap();
    tx.send_data(Bytes::from_static(b"one ")).await.unwrap();
    tx.send_data(Bytes::from_static(b"two")).await.unwrap();
    drop(tx);
    assert_eq!(read_all(&mut a).await.unwrap(), b"one two");
    assert_eq!(read_all(&mut b).await.unwrap(), b"one two");
}

/// A failure of the source reaches every reader as an error, after the chunks before it.
#[tokio::test]
async fn a_failed_source_fails_every_reader() {
    let (mut tx, fill) = fill(1 << 20);
    let mut a = fill.reader().unwrap();
    let mut b = fill.reader().unwrap();
    tx.send_data(Bytes::from_static(b"part")).await.unwrap();
    tx.abort("connection reset".into());
    for reader in [&mut a, &mut b] {
        let first = next(reader).await.unwrap().unwrap();
        assert_eq!(first.into_data().unwrap(), "part");
        let error = next(reader).await.unwrap().unwrap_err();
        assert!(error.downcast_ref::<FillFailed>().is_some(), "{error}");
        assert!(next(reader).await.is_none());
    }
}

/// Not being stored, chunks everybody read are let go: a late reader cannot join, and a
/// reader that falls more than `max_kept` behind is cut off with `FillLagged`.
#[tokio::test]
async fn chunks_are_let_go_and_a_slow_reader_is_cut_off() {
    let (mut tx, fill) = fill(8);
    let mut fast = fill.reader().unwrap();
    let mut slow = fill.reader().unwrap();
    for _ in 0..4 {
        tx.send_data(Bytes::from_static(b"abcd")).await.unwrap();
    }
    drop(tx);
    assert_eq!(read_all(&mut fast).await.unwrap().len(), 16);
    let error = next(&mut slow).await.unwrap().unwrap_err();
    assert!(error.downcast_ref::<FillLagged>().is_some(), "{error}");
    assert!(
        fill.reader().is_none(),
        "no reader joins a fill that let chunks go"
    );
}

/// When every reader has dropped, the source goes with them.
#[tokio::test]
async fn the_last_reader_dropping_closes_the_source() {
    let (mut tx, fill) = fill(1 << 20);
    let a = fill.reader().unwrap();
    let b = fill.reader().unwrap();
    drop(a);
    assert!(tx.send_data(Bytes::from_static(b"x")).await.is_ok());
    drop(b);
    assert!(
        tx.send_data(Bytes::from_static(b"y")).await.is_err(),
        "the body was dropped"
    );
}
