//! kiln-registry: images between kiln's store and an OCI distribution registry.
//!
//! - [`push`]: an image's blobs as they are in the store (never recompressed, so the digest is
//!   kept); HEAD first so the registry's blobs are skipped, cross-repository mount with the
//!   spec's fallback to an upload, streamed monolithic or chunked upload, the manifest by digest
//!   then by tag.
//! - [`pull`]: manifest (an index resolves to this platform), config and layers through the
//!   store's verified ingest, range-resumed; the tag is written last.
//! - Auth: anonymous, basic and bearer-token challenges (oci-client), credentials from the
//!   docker/podman auth files ([`auth`]); TLS with the host's roots plus `--ca`, or plain HTTP.
//! - Every request is retried on 502/503/504 and dropped connections.
//!
//! The protocol is oci-client's (oras-project); see README.md for what is wrapped and why.

pub mod auth;
mod client;
mod error;
mod pull;
mod push;
mod runtime;

pub use auth::Credentials;
pub use client::{parse_reference, Options};
pub use error::{Error, Result};
pub use pull::{default_tag, pull, PullReport};
pub use push::{push, Action, BlobReport, PushReport};
