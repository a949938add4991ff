//! The S3 transport's staging: one bundle (the same format the stream transport sends)
//! uploaded once to a per-run key, read by the instances through a presigned GET, and
//! removed again on every way out. Memory stays bounded: the bundle is cut into parts
//! as it is produced, and only `PARTS_IN_FLIGHT` parts are held at a time.

use crate::aws::error::from_sdk;
use crate::aws::journal;
use crate::copy::local_source::Plan;
use crate::copy::transport::send::send_bundle;
use crate::copy::transport::zlib::Out;
use crate::copy::transport::{Limiter, Progress};
use crate::error::{Error, Result};
use aws_sdk_s3::presigning::PresigningConfig;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{
    ChecksumAlgorithm, CompletedMultipartUpload, CompletedPart, ServerSideEncryption,
};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::task::JoinHandle;

/// S3's smallest part (but the last) is 5 MiB; bigger parts mean fewer requests.
const PART_SIZE: usize = 8 * 1024 * 1024;
/// S3 allows 10,000 parts; leave room so a file growing a little still fits.
const MAX_PARTS: u64 = 9_000;
const PARTS_IN_FLIGHT: usize = 4;
const PIPE: usize = 256 * 1024;
/// How long cleanup waits for parts in flight (4 × 8 MiB) before aborting anyway.
const PARTS_DRAIN: Duration = Duration::from_secs(60);

/// One run's object in S3. What it created is remembered, in memory and in the journal
/// when there is one, so `remove` (or `ssmcp gc` after a crash) can undo it.
pub(crate) struct StagingObject {
    s3: aws_sdk_s3::Client,
    pub bucket: String,
    pub key: String,
    state: Arc<Mutex<State>>,
    /// SSE-KMS key for what this run stores.
    kms_key: Option<String>,
}

#[derive(Default)]
struct State {
    upload_id: Option<String>,
    record: Option<journal::EntryFile>,
    /// CreateMultipartUpload in flight. It runs as a task of its own so that an
    /// interrupt cannot drop it between S3 creating the upload and the id being noted;
    /// `remove` waits for it before aborting.
    creating: Option<tokio::task::JoinHandle<()>>,
    /// Part uploads. They are not cancelled when the upload's future is dropped: a part
    /// cut off mid-request may still land after an abort, which then fails or leaves
    /// the part behind. `remove` waits for them, then aborts.
    parts: tokio_util::task::TaskTracker,
}

/// Note a multipart upload's id (or its end), in memory and in the journal.
fn note_upload(state: &Mutex<State>, id: Option<String>) -> Result<()> {
    let mut state = state.lock().unwrap_or_else(|p| p.into_inner());
    state.upload_id = id.clone();
    match &mut state.record {
        Some(r) => r.set_upload(id),
        None => Ok(()),
    }
}

/// The bundle in S3: how many bytes it has.
pub(crate) struct Uploaded {
    pub bytes: u64,
}

impl StagingObject {
    pub(crate) fn new(s3: aws_sdk_s3::Client, bucket: &str, key: &str) -> StagingObject {
        StagingObject {
            s3,
            bucket: bucket.to_string(),
            key: key.to_string(),
            state: Arc::new(Mutex::new(State::default())),
            kms_key: None,
        }
    }

    /// Store objects encrypted with this KMS key (SSE-KMS).
    pub(crate) fn encrypt_with(mut self, kms_key: Option<String>) -> StagingObject {
        self.kms_key = kms_key;
        self
    }

    fn sse(&self) -> Option<ServerSideEncryption> {
        self.kms_key.as_ref().map(|_| ServerSideEncryption::AwsKms)
    }

    /// `new`, noted in the journal first so a killed run can be cleaned up by `ssmcp gc`.
    pub(crate) fn journaled(
        s3: aws_sdk_s3::Client,
        bucket: &str,
        key: &str,
        region: Option<String>,
    ) -> Result<StagingObject> {
        let record = journal::EntryFile::create(journal::Entry {
            bucket: bucket.to_string(),
            key: key.to_string(),
            region,
            upload_id: None,
            created: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            pid: std::process::id(),
        })?;
        let staging = StagingObject::new(s3, bucket, key);
        staging.lock().record = Some(record);
        Ok(staging)
    }

    /// The staging a journal entry describes, for `ssmcp gc`.
    pub(crate) fn adopt(s3: aws_sdk_s3::Client, record: journal::EntryFile) -> StagingObject {
        let e = record.entry();
        let staging = StagingObject::new(s3, &e.bucket, &e.key);
        {
            let mut state = staging.lock();
            state.upload_id = e.upload_id.clone();
            state.record = Some(record);
        }
        staging
    }

    /// Start a multipart upload and note its id, in a task an interrupt cannot cut short.
    async fn create_upload(&self, checksum: Option<ChecksumAlgorithm>) -> Result<String> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let request = self
            .s3
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(&self.key)
            .set_server_side_encryption(self.sse())
            .set_ssekms_key_id(self.kms_key.clone())
            .set_checksum_algorithm(checksum);
        let state = self.state.clone();
        let task = tokio::spawn(async move {
            let created = request
                .send()
                .await
                .map_err(|e| from_sdk("CreateMultipartUpload", e))
                .and_then(|out| {
                    out.upload_id().map(str::to_string).ok_or_else(|| {
                        Error::protocol("S3 started a multipart upload without an id")
                    })
                })
                .and_then(|id| note_upload(&state, Some(id.clone())).map(|()| id));
            let _ = tx.send(created);
        });
        self.lock().creating = Some(task);
        rx.await
            .map_err(|_| Error::protocol("the multipart upload could not be started"))?
    }

    /// Write `plan` as one bundle to the object.
    pub(crate) async fn upload(
        &self,
        plan: &Plan,
        compress: bool,
        limit: Option<u64>,
        progress: &dyn Progress,
    ) -> Result<Uploaded> {
        let (mut pipe_in, pipe_out) = tokio::io::duplex(PIPE);
        let produce = async {
            let mut limiter = Limiter::new(limit);
            {
                let mut out = Out::new(&mut pipe_in, compress);
                send_bundle(&mut out, plan, progress, &mut limiter, upload_gone).await?;
            }
            pipe_in.shutdown().await.map_err(upload_gone)
        };
        let part_size = part_size(plan.bytes);
        let consume = self.store(pipe_out, part_size);
        let ((), staged) = tokio::try_join!(produce, consume)?;
        Ok(staged)
    }

    /// Read the bundle from `pipe` and store it: one PUT when it fits one part,
    /// otherwise a multipart upload with parts sent in parallel.
    async fn store<R: AsyncRead + Unpin>(&self, mut pipe: R, part_size: usize) -> Result<Uploaded> {
        let first = fill(&mut pipe, part_size).await?;
        if first.len() < part_size {
            let bytes = first.len() as u64;
            self.put_small(first).await?;
            return Ok(Uploaded { bytes });
        }
        let upload_id = self.create_upload(Some(ChecksumAlgorithm::Crc32)).await?;
        let parts = self.lock().parts.clone();
        let mut running: VecDeque<JoinHandle<Result<CompletedPart>>> = VecDeque::new();
        let mut done = Vec::new();
        let mut bytes = 0u64;
        let mut next = Some(first);
        let mut number = 1;
        while let Some(part) = next.take() {
            if part.is_empty() {
                break;
            }
            let last = part.len() < part_size;
            bytes += part.len() as u64;
            while running.len() >= PARTS_IN_FLIGHT {
                done.push(joined(running.pop_front()).await?);
            }
            running.push_back(parts.spawn(upload_part(
                self.s3.clone(),
                self.bucket.clone(),
                self.key.clone(),
                upload_id.clone(),
                number,
                part,
            )));
            number += 1;
            if !last {
                next = Some(fill(&mut pipe, part_size).await?);
            }
        }
        while !running.is_empty() {
            done.push(joined(running.pop_front()).await?);
        }
        done.sort_by_key(|p| p.part_number());
        self.s3
            .complete_multipart_upload()
            .bucket(&self.bucket)
            .key(&self.key)
            .upload_id(&upload_id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(done))
                    .build(),
            )
            .send()
            .await
            .map_err(|e| from_sdk("CompleteMultipartUpload", e))?;
        note_upload(&self.state, None)?;
        Ok(Uploaded { bytes })
    }

    /// Start a multipart upload whose parts another party sends through presigned URLs
    /// (an instance, for a download too big for one PUT). It has no checksum algorithm:
    /// that party cannot add per-part checksums, and the payload carries SHA-256s.
    pub(crate) async fn start_presigned_parts(&self) -> Result<String> {
        self.create_upload(None).await
    }

    /// A URL that lets its holder upload part `number` of `upload_id` for `expires`, and
    /// the headers that PUT must carry.
    pub(crate) async fn presign_part(
        &self,
        upload_id: &str,
        number: i32,
        expires: Duration,
    ) -> Result<(String, Vec<(String, String)>)> {
        let request = self
            .s3
            .upload_part()
            .bucket(&self.bucket)
            .key(&self.key)
            .upload_id(upload_id)
            .part_number(number)
            .presigned(presigning(expires)?)
            .await
            .map_err(|e| from_sdk("UploadPart (presign)", e))?;
        Ok(url_and_headers(&request))
    }

    /// Finish a multipart upload from the ETags its parts were answered with, in order.
    pub(crate) async fn complete_presigned_parts(
        &self,
        upload_id: &str,
        etags: &[String],
    ) -> Result<()> {
        let parts = etags
            .iter()
            .zip(1..)
            .map(|(etag, number)| {
                CompletedPart::builder()
                    .e_tag(etag)
                    .part_number(number)
                    .build()
            })
            .collect();
        self.s3
            .complete_multipart_upload()
            .bucket(&self.bucket)
            .key(&self.key)
            .upload_id(upload_id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(parts))
                    .build(),
            )
            .send()
            .await
            .map_err(|e| from_sdk("CompleteMultipartUpload", e))?;
        note_upload(&self.state, None)
    }

    /// A URL that lets its holder write the object (one PUT) for `expires`, and the
    /// headers the PUT must carry (signed into the URL: the SSE-KMS ones).
    pub(crate) async fn presign_put(
        &self,
        expires: Duration,
    ) -> Result<(String, Vec<(String, String)>)> {
        let request = self
            .s3
            .put_object()
            .bucket(&self.bucket)
            .key(&self.key)
            .set_server_side_encryption(self.sse())
            .set_ssekms_key_id(self.kms_key.clone())
            .presigned(presigning(expires)?)
            .await
            .map_err(|e| from_sdk("PutObject (presign)", e))?;
        Ok(url_and_headers(&request))
    }

    /// The object's bytes as a stream (downloads: what the instance uploaded).
    pub(crate) async fn read(&self) -> Result<impl tokio::io::AsyncBufRead + Unpin> {
        let out = self
            .s3
            .get_object()
            .bucket(&self.bucket)
            .key(&self.key)
            .send()
            .await
            .map_err(|e| from_sdk("GetObject", e))?;
        Ok(out.body.into_async_read())
    }

    /// Store an object of at most one part in one request.
    pub(crate) async fn put_small(&self, data: Vec<u8>) -> Result<()> {
        self.s3
            .put_object()
            .bucket(&self.bucket)
            .key(&self.key)
            .set_server_side_encryption(self.sse())
            .set_ssekms_key_id(self.kms_key.clone())
            .checksum_algorithm(ChecksumAlgorithm::Crc32)
            .body(ByteStream::from(data))
            .send()
            .await
            .map_err(|e| from_sdk("PutObject", e))?;
        Ok(())
    }

    /// A URL that lets its holder read the object for `expires`, and nothing else.
    pub(crate) async fn presign_get(&self, expires: Duration) -> Result<String> {
        let request = self
            .s3
            .get_object()
            .bucket(&self.bucket)
            .key(&self.key)
            .presigned(presigning(expires)?)
            .await
            .map_err(|e| from_sdk("GetObject (presign)", e))?;
        Ok(request.uri().to_string())
    }

    /// Abort the multipart uploads S3 lists for this key: a run killed between starting
    /// one and noting its id leaves one nobody knows the id of. Servers without
    /// ListMultipartUploads are skipped quietly; gc then relies on the journal alone.
    pub(crate) async fn abort_listed_uploads(&self) {
        let Ok(list) = self
            .s3
            .list_multipart_uploads()
            .bucket(&self.bucket)
            .prefix(&self.key)
            .send()
            .await
        else {
            return;
        };
        for u in list.uploads() {
            if let (Some(key), Some(id)) = (u.key(), u.upload_id()) {
                if key == self.key {
                    let _ = self
                        .s3
                        .abort_multipart_upload()
                        .bucket(&self.bucket)
                        .key(key)
                        .upload_id(id)
                        .send()
                        .await;
                }
            }
        }
    }

    /// Remove what this run created: an unfinished multipart upload and the object.
    /// Returns what could not be removed, as warnings (never the presigned URL).
    pub(crate) async fn remove(&self) -> Vec<String> {
        let mut warnings = Vec::new();
        let creating = self.lock().creating.take();
        if let Some(task) = creating {
            let _ = tokio::time::timeout(Duration::from_secs(60), task).await;
        }
        // Parts still in flight land first; an abort before they end could not remove them.
        let parts = self.lock().parts.clone();
        parts.close();
        if tokio::time::timeout(PARTS_DRAIN, parts.wait())
            .await
            .is_err()
        {
            tracing::debug!("part uploads still running after {PARTS_DRAIN:?}; aborting anyway");
        }
        let unfinished = self.lock().upload_id.take();
        if let Some(id) = unfinished {
            let aborted = self
                .s3
                .abort_multipart_upload()
                .bucket(&self.bucket)
                .key(&self.key)
                .upload_id(&id)
                .send()
                .await;
            // An upload that no longer exists has nothing left to abort.
            let gone = matches!(&aborted, Err(e) if e.as_service_error().is_some_and(|s| s.is_no_such_upload()));
            if let (Err(e), false) = (aborted, gone) {
                warnings.push(format!(
                    "could not abort the multipart upload {id} of s3://{}/{} ({}); remove it with `ssmcp gc` or a lifecycle rule",
                    self.bucket,
                    self.key,
                    from_sdk("AbortMultipartUpload", e).message
                ));
            }
        }
        let deleted = self
            .s3
            .delete_object()
            .bucket(&self.bucket)
            .key(&self.key)
            .send()
            .await;
        if let Err(e) = deleted {
            warnings.push(format!(
                "could not delete s3://{}/{} ({}); remove it with `ssmcp gc`",
                self.bucket,
                self.key,
                from_sdk("DeleteObject", e).message
            ));
        }
        let record = self.lock().record.take();
        if let Some(r) = record {
            if warnings.is_empty() {
                r.forget();
            }
        }
        warnings
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A poisoned lock still holds valid state.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn presigning(expires: Duration) -> Result<PresigningConfig> {
    PresigningConfig::expires_in(expires)
        .map_err(|e| Error::usage(format!("bad presigned URL lifetime: {e}")))
}

fn url_and_headers(
    request: &aws_sdk_s3::presigning::PresignedRequest,
) -> (String, Vec<(String, String)>) {
    let headers = request
        .headers()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    (request.uri().to_string(), headers)
}

/// Where a bucket lives and whether it answered this caller.
pub(crate) struct Located {
    /// From `--bucket-region`, or as S3 says in `x-amz-bucket-region`; `None` when S3
    /// does not say (the configured region is then used).
    pub region: Option<String>,
    /// HeadBucket's outcome in that region (needs s3:ListBucket, which copies do not).
    pub answered: Result<()>,
}

/// Ask S3 where `bucket` is. S3 names the region on success and on the redirect or
/// denial a HEAD from the wrong region gets; a redirect is followed once.
pub(crate) async fn locate(
    conf: &aws_config::SdkConfig,
    bucket: &str,
    given: Option<&str>,
) -> Located {
    let head = |region: Option<String>| async move {
        let s3 = crate::aws::s3_client(conf, region.as_deref());
        match s3.head_bucket().bucket(bucket).send().await {
            Ok(out) => (out.bucket_region().map(str::to_string).or(region), Ok(())),
            Err(e) => {
                let said = e
                    .raw_response()
                    .and_then(|r| r.headers().get("x-amz-bucket-region"))
                    .map(str::to_string);
                (said.or(region), Err(from_sdk("HeadBucket", e)))
            }
        }
    };
    let asked = given.map(str::to_string);
    let (region, answered) = head(asked.clone()).await;
    if answered.is_err() && region.is_some() && region != asked && given.is_none() {
        let (again, answered) = head(region.clone()).await;
        return Located {
            region: again,
            answered,
        };
    }
    Located { region, answered }
}

/// Parts big enough that the whole plan fits S3's part limit.
fn part_size(plan_bytes: u64) -> usize {
    let needed = plan_bytes.div_ceil(MAX_PARTS);
    PART_SIZE.max(needed.min(5 * 1024 * 1024 * 1024) as usize)
}

/// Read until `size` bytes or the end of the bundle.
async fn fill<R: AsyncRead + Unpin>(pipe: &mut R, size: usize) -> Result<Vec<u8>> {
    let mut buf = Vec::with_capacity(size);
    let mut limited = pipe.take(size as u64);
    limited
        .read_to_end(&mut buf)
        .await
        .map_err(|e| Error::protocol(format!("the bundle could not be read: {e}")))?;
    Ok(buf)
}

async fn upload_part(
    s3: aws_sdk_s3::Client,
    bucket: String,
    key: String,
    upload_id: String,
    number: i32,
    data: Vec<u8>,
) -> Result<CompletedPart> {
    let out = s3
        .upload_part()
        .bucket(bucket)
        .key(key)
        .upload_id(upload_id)
        .part_number(number)
        .checksum_algorithm(ChecksumAlgorithm::Crc32)
        .body(ByteStream::from(data))
        .send()
        .await
        .map_err(|e| from_sdk("UploadPart", e))?;
    Ok(CompletedPart::builder()
        .part_number(number)
        .set_e_tag(out.e_tag().map(str::to_string))
        .set_checksum_crc32(out.checksum_crc32().map(str::to_string))
        .build())
}

async fn joined(handle: Option<JoinHandle<Result<CompletedPart>>>) -> Result<CompletedPart> {
    match handle {
        Some(h) => h
            .await
            .map_err(|e| Error::protocol(format!("a part upload stopped: {e}")))?,
        None => Err(Error::protocol("no part upload was running")),
    }
}

/// The producer only fails to write when the upload side has already given up, with
/// its own error; this one is only seen if that error was lost.
fn upload_gone(e: std::io::Error) -> Error {
    Error::transfer(format!("the upload to S3 stopped ({e})"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_grow_for_huge_plans_only() {
        assert_eq!(part_size(0), PART_SIZE);
        assert_eq!(part_size(1 << 30), PART_SIZE);
        let huge = 200u64 << 30;
        assert!(part_size(huge) as u64 * MAX_PARTS >= huge);
    }
}
