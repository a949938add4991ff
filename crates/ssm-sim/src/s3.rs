//! A real S3-compatible server for the S3 transport: s3s-fs (objects as files under a
//! directory) behind s3s's SigV4 check with the simulator's keys, on 127.0.0.1, so that
//! the SDK on this machine and presigned URLs fetched by commands on the simulated
//! instances both reach it. Nothing here is hand-written S3: only the listener.

use crate::config::SECRET_ACCESS_KEY;
use crate::iam::Resource;
use crate::state::SimState;
use http::Request;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use s3s::auth::SimpleAuth;
use s3s::service::S3ServiceBuilder;
use std::path::Path;
use tokio::net::TcpListener;

/// Serve S3 for `root` (one directory per bucket; `buckets` are created) until dropped.
/// Which region each bucket lives in; buckets not named are in the simulator's region.
#[derive(Clone)]
pub struct Regions {
    pub home: String,
    pub elsewhere: Vec<(String, String)>,
}

impl Regions {
    fn of(&self, bucket: &str) -> &str {
        self.elsewhere
            .iter()
            .find(|(b, _)| b == bucket)
            .map_or(self.home.as_str(), |(_, r)| r.as_str())
    }
}

pub async fn serve(
    listener: TcpListener,
    root: &Path,
    buckets: &[String],
    regions: Regions,
    encryption: EncryptionLog,
    max_put: u64,
    iam: std::sync::Arc<SimState>,
) -> std::io::Result<impl std::future::Future<Output = ()>> {
    for b in buckets
        .iter()
        .chain(regions.elsewhere.iter().map(|(b, _)| b))
    {
        std::fs::create_dir_all(root.join(b))?;
    }
    let fs = s3s_fs::FileSystem::new(root).map_err(|e| std::io::Error::other(format!("{e:?}")))?;
    let mut builder = S3ServiceBuilder::new(fs);
    let mut auth = SimpleAuth::new();
    let config = &iam.config;
    let latency = config.latency;
    for caller in std::iter::once(&config.identity).chain(&config.other_callers) {
        auth.register(caller.access_key_id.clone(), SECRET_ACCESS_KEY.into());
    }
    builder.set_auth(auth);
    builder.set_access(Policies { state: iam });
    let service = builder.build();
    let root = root.to_path_buf();
    Ok(async move {
        loop {
            let Ok((socket, _)) = listener.accept().await else {
                continue;
            };
            let (service, root, encryption) = (service.clone(), root.clone(), encryption.clone());
            let regions = regions.clone();
            tokio::spawn(async move {
                let checked = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let missing = missing_bucket(&root, &req);
                    let unknown_upload = unknown_upload(&root, &req);
                    let bucket = bucket_of(&req).to_string();
                    let region = regions.of(&bucket).to_string();
                    let misdirected = signing_region(&req).is_some_and(|r| r != region);
                    let head_bucket = req.method() == http::Method::HEAD
                        && !bucket.is_empty()
                        && req.uri().path().trim_matches('/') == bucket;
                    note_encryption(&encryption, &req);
                    let oversized = too_large(&req, max_put);
                    let service = service.clone();
                    // A round trip for requests from this machine; presigned ones come
                    // from the instances, inside the region.
                    let presigned = req
                        .uri()
                        .query()
                        .is_some_and(|q| q.contains("X-Amz-Signature="));
                    let latency = if presigned {
                        std::time::Duration::ZERO
                    } else {
                        latency
                    };
                    async move {
                        tokio::time::sleep(latency * 2).await;
                        if let Some(bucket) = missing {
                            return Ok::<_, s3s::HttpError>(no_such_bucket(&bucket));
                        }
                        if let Some(id) = unknown_upload {
                            return Ok(no_such_upload(&id));
                        }
                        if oversized {
                            return Ok(entity_too_large(max_put));
                        }
                        if misdirected {
                            return Ok(elsewhere(&bucket, &region));
                        }
                        let mut resp: http::Response<s3s::Body> =
                            hyper::service::Service::call(&service, req).await?;
                        if head_bucket {
                            if let Ok(v) = http::HeaderValue::from_str(&region) {
                                resp.headers_mut().insert("x-amz-bucket-region", v);
                            }
                        }
                        Ok(resp)
                    }
                });
                let conn = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(socket), checked);
                let _ = conn.await;
            });
        }
    })
}

/// The identity policies of the caller who signed (header or presigned URL), as S3
/// evaluates them: the action each operation needs, on the bucket or the object.
struct Policies {
    state: std::sync::Arc<SimState>,
}

/// The IAM action an S3 operation is authorized as (Service Authorization Reference).
fn s3_action(op: &str) -> String {
    match op {
        "PutObject" | "CreateMultipartUpload" | "UploadPart" | "CompleteMultipartUpload" => {
            "s3:PutObject".into()
        }
        "GetObject" | "HeadObject" => "s3:GetObject".into(),
        "DeleteObject" | "DeleteObjects" => "s3:DeleteObject".into(),
        "ListParts" => "s3:ListMultipartUploadParts".into(),
        "ListMultipartUploads" => "s3:ListBucketMultipartUploads".into(),
        "ListObjects" | "ListObjectsV2" | "HeadBucket" => "s3:ListBucket".into(),
        "ListBuckets" => "s3:ListAllMyBuckets".into(),
        other => format!("s3:{other}"),
    }
}

#[async_trait::async_trait]
impl s3s::access::S3Access for Policies {
    async fn check(&self, cx: &mut s3s::access::S3AccessContext<'_>) -> s3s::S3Result<()> {
        let Some(caller) = cx
            .credentials()
            .and_then(|c| crate::iam::caller(&self.state.config, &c.access_key))
        else {
            return Err(s3s::s3_error!(AccessDenied, "Access Denied"));
        };
        let arn = match cx.s3_path() {
            s3s::path::S3Path::Root => "*".to_string(),
            s3s::path::S3Path::Bucket { bucket } => format!("arn:aws:s3:::{bucket}"),
            s3s::path::S3Path::Object { bucket, key } => format!("arn:aws:s3:::{bucket}/{key}"),
        };
        let action = s3_action(cx.s3_op().name());
        crate::iam::authorize(
            &self.state.config,
            caller,
            &action,
            &[Resource::new(arn, "")],
            &[],
        )
        .map_err(|d| s3s::s3_error!(AccessDenied, "{}", d.message))
    }
}

fn bucket_of(req: &Request<Incoming>) -> &str {
    let path = req.uri().path().trim_start_matches('/');
    path.split('/').next().unwrap_or_default()
}

/// The region a SigV4 request (header or presigned) was signed for.
fn signing_region(req: &Request<Incoming>) -> Option<String> {
    let scope = match req.headers().get(http::header::AUTHORIZATION) {
        Some(v) => v.to_str().ok()?.split("Credential=").nth(1)?.to_string(),
        None => req
            .uri()
            .query()?
            .split('&')
            .find_map(|kv| kv.strip_prefix("X-Amz-Credential="))?
            .replace("%2F", "/"),
    };
    // ACCESS_KEY/DATE/REGION/s3/aws4_request
    scope.split('/').nth(2).map(str::to_string)
}

/// S3's answer to a request signed for the wrong region: 301 PermanentRedirect, with
/// the bucket's region in `x-amz-bucket-region` (HEAD answers carry no body).
fn elsewhere(bucket: &str, region: &str) -> http::Response<s3s::Body> {
    let mut resp = s3_error(
        http::StatusCode::MOVED_PERMANENTLY,
        "PermanentRedirect",
        "The bucket you are attempting to access must be addressed using the specified endpoint. Please send all future requests to this endpoint.",
        &format!("<Bucket>{bucket}</Bucket><Endpoint>s3.{region}.amazonaws.com</Endpoint>"),
    );
    if let Ok(v) = http::HeaderValue::from_str(region) {
        resp.headers_mut().insert("x-amz-bucket-region", v);
    }
    resp
}

/// An error in S3's XML shape; `detail` is the error's own elements.
fn s3_error(
    status: http::StatusCode,
    code: &str,
    message: &str,
    detail: &str,
) -> http::Response<s3s::Body> {
    let xml = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code><Message>{message}</Message>{detail}</Error>"
    );
    let mut resp = http::Response::new(s3s::Body::from(xml));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/xml"),
    );
    resp
}

/// What asked for server-side encryption: `METHOD /bucket/key sse key-id` per request.
/// s3s-fs stores objects unencrypted whatever the headers say, so tests read this to
/// know that the client (and the instance, for presigned PUTs) asked for SSE-KMS.
pub type EncryptionLog = std::sync::Arc<std::sync::Mutex<Vec<String>>>;

fn note_encryption(log: &EncryptionLog, req: &Request<Incoming>) {
    let h = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    if let Some(sse) = h("x-amz-server-side-encryption") {
        let key = h("x-amz-server-side-encryption-aws-kms-key-id").unwrap_or_default();
        let line = format!("{} {} {sse} {key}", req.method(), req.uri().path());
        log.lock().unwrap_or_else(|p| p.into_inner()).push(line);
    }
}

/// S3 takes at most 5 GiB in one PUT, of an object or of a multipart part; s3s-fs takes
/// anything. The limit is configurable so tests can reach it with small files.
fn too_large(req: &Request<Incoming>, max_put: u64) -> bool {
    req.method() == http::Method::PUT
        && req
            .headers()
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
            .is_some_and(|n| n > max_put)
}

fn entity_too_large(max_put: u64) -> http::Response<s3s::Body> {
    s3_error(
        http::StatusCode::BAD_REQUEST,
        "EntityTooLarge",
        "Your proposed upload exceeds the maximum allowed size",
        &format!("<MaxSizeAllowed>{max_put}</MaxSizeAllowed>"),
    )
}

/// s3s-fs writes an object into a bucket that does not exist (it makes the directory);
/// real S3 answers NoSuchBucket, and so must we. Path-style requests only, as the
/// simulator's endpoint is an IP address. Creating a bucket (PUT /bucket) is let through.
fn missing_bucket(root: &Path, req: &Request<Incoming>) -> Option<String> {
    let path = req.uri().path().trim_start_matches('/');
    let (bucket, key) = path.split_once('/').unwrap_or((path, ""));
    let creating = req.method() == http::Method::PUT && key.is_empty();
    let exists = root.join(bucket).is_dir();
    (!bucket.is_empty() && !creating && !exists && !bucket.starts_with('.'))
        .then(|| bucket.to_string())
}

/// A request naming a multipart upload that does not exist (never created, completed or
/// aborted): real S3 answers NoSuchUpload (404); s3s-fs answers AccessDenied, which
/// would make a client believe it lacks a permission.
fn unknown_upload(root: &Path, req: &Request<Incoming>) -> Option<String> {
    let id = req
        .uri()
        .query()?
        .split('&')
        .find_map(|kv| kv.strip_prefix("uploadId="))?;
    let safe = !id.is_empty() && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
    (!safe || !root.join(format!(".upload-{id}.json")).exists()).then(|| id.to_string())
}

fn no_such_upload(id: &str) -> http::Response<s3s::Body> {
    s3_error(
        http::StatusCode::NOT_FOUND,
        "NoSuchUpload",
        "The specified upload does not exist. The upload ID may be invalid, or the upload may have been aborted or completed.",
        &format!("<UploadId>{id}</UploadId>"),
    )
}

fn no_such_bucket(bucket: &str) -> http::Response<s3s::Body> {
    s3_error(
        http::StatusCode::NOT_FOUND,
        "NoSuchBucket",
        "The specified bucket does not exist",
        &format!("<BucketName>{bucket}</BucketName>"),
    )
}

/// Objects and unfinished multipart uploads left under `root`, as `bucket/key` and
/// `upload:ID` (s3s-fs keeps an upload's state as `.upload-ID.json` beside the buckets).
pub fn leftovers(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let Ok(top) = std::fs::read_dir(root) else {
        return out;
    };
    for e in top.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if let Some(id) = name
            .strip_prefix(".upload-")
            .and_then(|n| n.strip_suffix(".json"))
        {
            out.push(format!("upload:{id}"));
        } else if e.path().is_dir() {
            for f in walk(&e.path()) {
                if let Ok(rel) = f.strip_prefix(root) {
                    out.push(rel.display().to_string());
                }
            }
        }
    }
    out.sort();
    out
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}
