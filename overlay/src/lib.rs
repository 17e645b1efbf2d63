//! kiln-overlay: bytes on disk — digests, the OCI image-layout store, layers, snapshots, mounts.
