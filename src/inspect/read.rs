//! Reading one entry for the inspector: verified whole (every segment), without holding it whole.
//! A blob a store answers as a stream (`DiskStore` for large files) is verified a read at a time
//! and dropped as it goes, and one kept in parts (`MemoryStore`) is not joined first: listing a
//! store of 1 GiB entries costs about what one of its reads holds, not 1 GiB per entry.

use futures_util::StreamExt;

use super::Inspector;
use crate::entry::EntryHead;
use crate::envelope::{OpenError, Pending, Step, DOWNGRADED};
use crate::error::StoreError;
use crate::key::CacheKey;
use crate::store::{BlobStream, Found, Store};

/// An entry read for the inspector: its size, and its head once every byte of it verified.
pub(super) struct Read {
    pub(super) size: usize,
    pub(super) head: Result<EntryHead, OpenError>,
}

impl<St: Store> Inspector<St> {
    /// The entry under `key`, verified; `None` when nothing is stored there.
    pub(super) async fn read_entry(&self, key: &CacheKey) -> Result<Option<Read>, StoreError> {
        let answer = self.call(self.config.get(key.clone())).await?;
        let envelope = &self.config.envelope;
        Ok(Some(match answer.into_found()? {
            None => return Ok(None),
            Some(Found::Whole(blob)) => Read {
                size: blob.len(),
                head: envelope.open(key, blob).map(|entry| entry.head),
            },
            Some(Found::Parts(parts)) => Read {
                size: parts.len(),
                head: envelope
                    .open_parts(key, parts.parts().iter().cloned())
                    .map(|entry| entry.head),
            },
            Some(Found::Stream(stream)) => Read {
                size: usize::try_from(stream.len()).unwrap_or(usize::MAX),
                head: if stream.len() > envelope.max_blob() as u64 {
                    Err(OpenError::Unusable(crate::envelope::TOO_LARGE))
                } else {
                    self.verify_stream(key, stream).await?
                },
            },
        }))
    }

    /// Verifies a streamed entry a read at a time: the head, then each segment, dropped once
    /// verified.
    async fn verify_stream(
        &self,
        key: &CacheKey,
        mut stream: BlobStream,
    ) -> Result<Result<EntryHead, OpenError>, StoreError> {
        let envelope = &self.config.envelope;
        let mut p = Pending::default();
        let opened = loop {
            match envelope.open_head(key, &mut p) {
                Ok(Some(opened)) => break opened,
                Ok(None) => match self.next_read(&mut stream).await? {
                    Some(Ok(bytes)) => p.push(bytes),
                    Some(Err(e)) => return Err(StoreError::failed(e)),
                    None => return Ok(Err(envelope.truncated(key))),
                },
                Err(e) => return Ok(Err(e)),
            }
        };
        let mut body = opened.body;
        loop {
            match body.next(&mut p) {
                Ok(Step::Segment(_)) => {}
                Ok(Step::End) => break,
                Ok(Step::More) => match self.next_read(&mut stream).await? {
                    Some(Ok(bytes)) => p.push(bytes),
                    Some(Err(e)) => return Err(StoreError::failed(e)),
                    None => return Ok(Err(body.malformed())),
                },
                Err(e) => return Ok(Err(e)),
            }
        }
        // Bytes after the last segment the head announced.
        if p.len() != 0 || self.next_read(&mut stream).await?.is_some() {
            return Ok(Err(body.malformed()));
        }
        if opened.downgraded {
            return Ok(Err(OpenError::Unusable(DOWNGRADED)));
        }
        Ok(Ok(opened.head))
    }

    /// The stream's next read, within the store timeout (each read, not the whole entry: a
    /// large file takes longer than that to read): a store that stalls fails the inspection.
    async fn next_read(
        &self,
        stream: &mut BlobStream,
    ) -> Result<Option<Result<bytes::Bytes, crate::BoxError>>, StoreError> {
        let timeout = self.config.store_timeout;
        crate::timer::timeout(&self.config.timer, timeout, stream.next())
            .await
            .map_err(|crate::timer::Elapsed| StoreError::timed_out())
    }
}
