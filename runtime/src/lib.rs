//! kiln-runtime: an OCI runtime — a bundle and its config.json become a process in namespaces.
