//! `kiln pull`: a manifest (by tag or digest; an index resolves to this platform's manifest),
//! then its config and layers, each written through the store's verified ingest and resumed with
//! a range request when the connection drops. The tag is written last: a blob that does not
//! hash to its digest leaves no tag and no partial blob.

use std::io::Write;

use futures_util::{stream, StreamExt, TryStreamExt};
use kiln_overlay::oci_spec::image::{Arch, ImageIndex, ImageManifest, MediaType, Os};
use kiln_overlay::{validate_ref, BlobWriter, Digest, Store};
use oci_client::client::BlobResponse;
use oci_client::manifest::{
    IMAGE_MANIFEST_LIST_MEDIA_TYPE, IMAGE_MANIFEST_MEDIA_TYPE, OCI_IMAGE_INDEX_MEDIA_TYPE,
    OCI_IMAGE_MEDIA_TYPE,
};
use oci_client::{Reference, RegistryOperation};
use serde::Serialize;

use crate::client::{Options, Remote, ATTEMPTS};
use crate::error::{Error, Result};
use crate::push::{Action, BlobReport};
use crate::runtime::block_on;

/// Manifest types asked for (docker's are refused with a clear error after the fetch).
const ACCEPTED: &[&str] = &[
    OCI_IMAGE_MEDIA_TYPE,
    OCI_IMAGE_INDEX_MEDIA_TYPE,
    IMAGE_MANIFEST_LIST_MEDIA_TYPE,
    IMAGE_MANIFEST_MEDIA_TYPE,
];

/// The result of a pull.
#[derive(Debug, Clone, Serialize)]
pub struct PullReport {
    /// What was pulled.
    pub reference: String,
    /// The image manifest's digest.
    pub digest: String,
    /// The tag written in the store.
    pub tag: String,
    /// The config and layers, config first.
    pub blobs: Vec<BlobReport>,
    /// How many blobs were downloaded.
    pub downloaded_blobs: usize,
    /// How many bytes were downloaded (blobs and manifest).
    pub downloaded_bytes: u64,
}

/// The store tag a pull writes by default: `repository:tag` or `repository@sha256:…`.
pub fn default_tag(reference: &Reference) -> String {
    match (reference.tag(), reference.digest()) {
        (_, Some(d)) => format!("{}@{d}", reference.repository()),
        (Some(t), None) => format!("{}:{t}", reference.repository()),
        (None, None) => format!("{}:latest", reference.repository()),
    }
}

/// Pulls `source` (`host[:port]/repo[:tag][@sha256:…]`) into `store`, tagged `tag` (default:
/// [`default_tag`]).
pub fn pull(store: &Store, source: &str, tag: Option<&str>, opts: &Options) -> Result<PullReport> {
    let reference = crate::client::parse_reference(source)?;
    let tag = tag.map_or_else(|| default_tag(&reference), str::to_string);
    validate_ref(&tag)?;
    let remote = Remote::new(&reference, opts)?;
    block_on(pull_async(store, &reference, &tag, &remote))
}

async fn pull_async(
    store: &Store,
    reference: &Reference,
    tag: &str,
    remote: &Remote,
) -> Result<PullReport> {
    let _lease = store.lease()?;
    remote.login(reference, RegistryOperation::Pull).await?;
    let (mut bytes, mut digest) = fetch_manifest(remote, reference).await?;
    if let Some(want) = reference.digest() {
        if digest.to_string() != want {
            return Err(bad(
                reference,
                "manifest",
                format!("is {digest}, not {want}"),
            ));
        }
    }
    let mut downloaded = bytes.len() as u64;
    if is_index(&bytes) {
        let child = pick_platform(reference, &bytes)?;
        let by_digest = Reference::with_digest(
            remote.registry.clone(),
            reference.repository().to_string(),
            child.to_string(),
        );
        (bytes, digest) = fetch_manifest(remote, &by_digest).await?;
        if digest != child {
            return Err(bad(
                reference,
                "manifest",
                format!("is {digest}, not {child}"),
            ));
        }
        downloaded += bytes.len() as u64;
    }
    let manifest: ImageManifest =
        serde_json::from_slice(&bytes).map_err(|e| bad(reference, "manifest", e.to_string()))?;
    match manifest.media_type() {
        Some(MediaType::ImageManifest) | None
            if *manifest.config().media_type() == MediaType::ImageConfig => {}
        other => {
            return Err(Error::Unsupported {
                reference: reference.whole(),
                reason: format!(
                    "a {} manifest (config {}): kiln stores OCI image manifests only \
                     (copy it as OCI first: skopeo copy --format oci)",
                    other
                        .as_ref()
                        .map_or("untyped".to_string(), ToString::to_string),
                    manifest.config().media_type()
                ),
            })
        }
    }
    let mut blobs: Vec<(Digest, u64)> = Vec::new();
    for d in std::iter::once(manifest.config()).chain(manifest.layers()) {
        let digest = Digest::from_oci(d.digest())?;
        if !blobs.iter().any(|(x, _)| *x == digest) {
            blobs.push((digest, d.size()));
        }
    }
    let reports: Vec<BlobReport> = stream::iter(blobs)
        .map(|(d, size)| fetch_blob(store, remote, reference, d, size))
        .buffered(remote.jobs)
        .try_collect()
        .await?;
    store.ingest(&bytes[..], Some(&digest))?;
    let image = store.image(&digest.to_string())?;
    store.tag(tag, &image.descriptor())?;
    let got: Vec<&BlobReport> = reports
        .iter()
        .filter(|b| b.action == Action::Downloaded)
        .collect();
    Ok(PullReport {
        reference: reference.whole(),
        digest: digest.to_string(),
        tag: tag.to_string(),
        downloaded_blobs: got.len(),
        downloaded_bytes: downloaded + got.iter().map(|b| b.size).sum::<u64>(),
        blobs: reports,
    })
}

fn bad(reference: &Reference, what: &str, reason: String) -> Error {
    Error::BadContent {
        what: what.to_string(),
        reference: reference.whole(),
        reason,
    }
}

/// The manifest's bytes and their digest (computed here, never taken from a header).
async fn fetch_manifest(remote: &Remote, reference: &Reference) -> Result<(Vec<u8>, Digest)> {
    let (bytes, _) = remote
        .retry("fetch manifest", &reference.whole(), reference, || {
            remote
                .client
                .pull_manifest_raw(reference, &remote.creds.auth, ACCEPTED)
        })
        .await?;
    let digest = Digest::of(&bytes);
    Ok((bytes.to_vec(), digest))
}

fn is_index(bytes: &[u8]) -> bool {
    #[derive(serde::Deserialize)]
    struct Probe {
        #[serde(rename = "mediaType")]
        media_type: Option<String>,
        manifests: Option<serde_json::Value>,
    }
    serde_json::from_slice::<Probe>(bytes).is_ok_and(|p| {
        p.manifests.is_some()
            || p.media_type.as_deref().is_some_and(|m| {
                m == OCI_IMAGE_INDEX_MEDIA_TYPE || m == IMAGE_MANIFEST_LIST_MEDIA_TYPE
            })
    })
}

/// The digest of the index entry for linux on this machine's architecture.
fn pick_platform(reference: &Reference, bytes: &[u8]) -> Result<Digest> {
    let index: ImageIndex =
        serde_json::from_slice(bytes).map_err(|e| bad(reference, "index", e.to_string()))?;
    let arch = Arch::default();
    let entry = index
        .manifests()
        .iter()
        .find(|m| {
            m.platform()
                .as_ref()
                .is_some_and(|p| *p.os() == Os::Linux && *p.architecture() == arch)
        })
        .ok_or_else(|| Error::Unsupported {
            reference: reference.whole(),
            reason: format!("the index has no manifest for linux/{arch}"),
        })?;
    Ok(Digest::from_oci(entry.digest())?)
}

/// One blob into the store: skipped if present, else streamed through a verified writer,
/// resumed from where it stopped (Range) after a dropped connection.
async fn fetch_blob(
    store: &Store,
    remote: &Remote,
    reference: &Reference,
    digest: Digest,
    size: u64,
) -> Result<BlobReport> {
    let d = digest.to_string();
    let report = |action| BlobReport {
        digest: d.clone(),
        size,
        action,
    };
    if store.has_blob(&digest) {
        return Ok(report(Action::Present));
    }
    let mut w = store.blob_writer()?;
    let mut attempt = 1;
    loop {
        let offset = w.len();
        let resp = remote
            .retry("fetch blob", &d, reference, || {
                remote.client.pull_blob_stream_partial(
                    reference,
                    d.as_str(),
                    offset,
                    Some(size - offset),
                )
            })
            .await?;
        let mut body = match resp {
            BlobResponse::Partial(s) => s,
            BlobResponse::Full(s) => {
                if offset > 0 {
                    // The registry ignored the range: start over.
                    w = store.blob_writer()?;
                }
                s
            }
        };
        let failure = loop {
            match body.next().await {
                None => break None,
                Some(Ok(piece)) => {
                    if w.len() + piece.len() as u64 > size {
                        return Err(bad(reference, &d, format!("is longer than {size} bytes")));
                    }
                    write(&mut w, &piece, store)?;
                }
                Some(Err(e)) => break Some(e),
            }
        };
        match failure {
            None => break,
            Some(e) if w.len() >= size => return Err(bad(reference, &d, e.to_string())),
            // The body broke off before its end: a dropped connection, resumed from here.
            Some(e) if attempt < ATTEMPTS => {
                tracing::warn!(digest = %d, at = w.len(), attempt, %e, "blob download broke: resuming");
                attempt += 1;
            }
            Some(e) => return Err(bad(reference, &d, e.to_string())),
        }
    }
    if w.len() != size {
        return Err(bad(
            reference,
            &d,
            format!("is {} bytes, the manifest says {size}", w.len()),
        ));
    }
    w.commit(Some(&digest))
        .map_err(|e| bad(reference, &d, e.to_string()))?;
    Ok(report(Action::Downloaded))
}

fn write(w: &mut BlobWriter, piece: &[u8], store: &Store) -> Result<()> {
    w.write_all(piece).map_err(|e| {
        Error::Store(kiln_overlay::Error::Io {
            op: "write blob into",
            path: store.tmp_dir(),
            error: e,
        })
    })
}
