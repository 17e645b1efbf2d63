//! `kiln push`: an image's blobs streamed from the store as they are (never recompressed, so the
//! manifest digest is kept), skipping what the registry has, mounting what a sibling repository
//! has, then the manifest by digest and by tag.

use bytes::{Bytes, BytesMut};
use futures_util::{stream, Stream, StreamExt, TryStreamExt};
use kiln_overlay::{Digest, Image, Store};
use oci_client::errors::OciDistributionError;
use oci_client::manifest::OCI_IMAGE_MEDIA_TYPE;
use oci_client::{Reference, RegistryOperation};
use serde::Serialize;
use tokio::io::AsyncReadExt;

use crate::client::{Options, Remote};
use crate::error::{Error, Result};
use crate::runtime::block_on;

/// Bytes read from a blob file per streamed piece (or per chunk with [`Options::chunk_size`]).
const READ_SIZE: usize = 1 << 20;

/// What happened to one blob.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Sent to the registry.
    Uploaded,
    /// The registry had it already (HEAD).
    Skipped,
    /// Mounted from another repository of the same registry.
    Mounted,
    /// Fetched from the registry.
    Downloaded,
    /// Already in the local store.
    Present,
}

/// One blob of a push or pull.
#[derive(Debug, Clone, Serialize)]
pub struct BlobReport {
    /// Its digest.
    pub digest: String,
    /// Its size in bytes.
    pub size: u64,
    /// What was done.
    pub action: Action,
}

/// The result of a push.
#[derive(Debug, Clone, Serialize)]
pub struct PushReport {
    /// Where the image went (`host/repo:tag`).
    pub reference: String,
    /// The manifest digest (the same as in the local store).
    pub digest: String,
    /// The config and layers, config first.
    pub blobs: Vec<BlobReport>,
    /// How many blobs were uploaded.
    pub uploaded_blobs: usize,
    /// How many bytes were uploaded (blobs and the manifest).
    pub uploaded_bytes: u64,
    /// How many blobs the registry had or mounted.
    pub reused_blobs: usize,
}

/// Pushes `image` (a tag or digest in `store`) to `target` (`host[:port]/repo[:tag]`).
/// `mount_from` names repositories of the same registry to mount missing blobs from.
pub fn push(
    store: &Store,
    image: &str,
    target: &str,
    mount_from: &[String],
    opts: &Options,
) -> Result<PushReport> {
    let reference = crate::client::parse_reference(target)?;
    if reference.digest().is_some() {
        return Err(Error::BadReference {
            input: target.to_string(),
            reason: "push to a tag (host/repo:tag), not a digest: the digest is the image's"
                .to_string(),
        });
    }
    let img = store.image(image)?;
    let manifest = store.read_blob(&img.digest)?;
    let remote = Remote::new(&reference, opts)?;
    block_on(push_async(
        store, &img, manifest, &reference, mount_from, &remote,
    ))
}

async fn push_async(
    store: &Store,
    img: &Image,
    manifest: Vec<u8>,
    reference: &Reference,
    mount_from: &[String],
    remote: &Remote,
) -> Result<PushReport> {
    let _lease = store.lease()?;
    remote.login(reference, RegistryOperation::Push).await?;
    let mut blobs: Vec<(Digest, u64)> = vec![(img.config_digest, img.manifest.config().size())];
    for l in img.layers()? {
        if !blobs.iter().any(|(d, _)| *d == l.digest) {
            blobs.push((l.digest, l.size));
        }
    }
    let sources: Vec<Reference> = mount_from
        .iter()
        .filter(|r| r.as_str() != reference.repository())
        .map(|r| Reference::with_tag(remote.registry.clone(), r.clone(), "latest".to_string()))
        .collect();
    let reports: Vec<BlobReport> = stream::iter(blobs)
        .map(|(digest, size)| push_blob(store, remote, reference, &sources, digest, size))
        .buffered(remote.jobs)
        .try_collect()
        .await?;

    let by_digest = Reference::with_digest(
        remote.registry.clone(),
        reference.repository().to_string(),
        img.digest.to_string(),
    );
    let manifest_len = manifest.len() as u64;
    let body = Bytes::from(manifest);
    let content_type = http_value(OCI_IMAGE_MEDIA_TYPE);
    for r in [&by_digest, reference] {
        remote
            .retry("push manifest", &r.whole(), r, || {
                remote
                    .client
                    .push_manifest_raw(r, body.clone(), content_type.clone())
            })
            .await?;
    }
    let uploaded: Vec<&BlobReport> = reports
        .iter()
        .filter(|b| b.action == Action::Uploaded)
        .collect();
    Ok(PushReport {
        reference: reference.whole(),
        digest: img.digest.to_string(),
        uploaded_blobs: uploaded.len(),
        uploaded_bytes: uploaded.iter().map(|b| b.size).sum::<u64>() + 2 * manifest_len,
        reused_blobs: reports.len() - uploaded.len(),
        blobs: reports,
    })
}

fn http_value(s: &'static str) -> http::HeaderValue {
    http::HeaderValue::from_static(s)
}

/// HEAD, then a mount from each sibling (falling back when the registry declines), then a
/// streamed upload.
async fn push_blob(
    store: &Store,
    remote: &Remote,
    reference: &Reference,
    sources: &[Reference],
    digest: Digest,
    size: u64,
) -> Result<BlobReport> {
    let d = digest.to_string();
    let report = |action| BlobReport {
        digest: d.clone(),
        size,
        action,
    };
    let exists = remote
        .retry("check blob", &d, reference, || {
            remote.client.blob_exists(reference, &d)
        })
        .await?;
    if exists {
        return Ok(report(Action::Skipped));
    }
    for source in sources {
        // The spec's fallback: a registry that declines the mount (202 with an upload session,
        // or an error) gets a normal upload.
        match remote.client.mount_blob(reference, source, &d).await {
            Ok(()) => return Ok(report(Action::Mounted)),
            Err(e) => tracing::debug!(%e, from = source.repository(), "mount {d} declined"),
        }
    }
    let path = store.blob_path(&digest);
    let piece = remote.chunk_size.unwrap_or(READ_SIZE);
    remote
        .retry("upload blob", &d, reference, || {
            let path = path.clone();
            let d = d.clone();
            async move {
                let file = tokio::fs::File::open(&path).await?;
                remote
                    .client
                    .push_blob_stream(reference, file_stream(file, piece), &d, Some(size))
                    .await
            }
        })
        .await?;
    Ok(report(Action::Uploaded))
}

/// The file as a stream of pieces of `piece` bytes (the last one shorter).
fn file_stream(
    file: tokio::fs::File,
    piece: usize,
) -> impl Stream<Item = std::result::Result<Bytes, OciDistributionError>> + Send + 'static {
    stream::try_unfold(file, move |mut file| async move {
        let mut buf = BytesMut::with_capacity(piece);
        while buf.len() < piece {
            if file.read_buf(&mut buf).await? == 0 {
                break;
            }
        }
        if buf.is_empty() {
            Ok(None)
        } else {
            Ok(Some((buf.freeze(), file)))
        }
    })
}
