//! The python vendor image keeps containerd's limits (no config label over 4096 bytes): its
//! package list is the manifest annotation `dev.kiln.vendor.packages`, the config label
//! `dev.kiln.vendor.packages-digest` is that list's sha256, and two fresh stores still give
//! the same manifest digest.

use std::path::{Path, PathBuf};

use kiln_overlay::Digest;
use kiln_testkit::common::{shared_deb_cache, Sandbox};

/// containerd's limit on one label (key + value), `labels.Validate`.
const CONTAINERD_LABEL_MAX: usize = 4096;

/// Builds the shipped `python` recipe in `sb` and returns its JSON report.
fn build_python(sb: &Sandbox) -> serde_json::Value {
    let recipes = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("vendor-images");
    let out = sb
        .kiln()
        .env("KILN_DEB_CACHE", shared_deb_cache())
        .args([
            "vendor",
            "build",
            "python",
            "--json",
            "--quiet",
            "--recipes",
        ])
        .arg(&recipes)
        .output()
        .expect("spawn kiln");
    assert!(
        out.status.success(),
        "kiln vendor build python: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("build report is JSON")
}

/// A blob of the store as JSON.
fn blob(store: &Path, digest: &str) -> serde_json::Value {
    let hex = digest.strip_prefix("sha256:").expect("sha256 digest");
    let data = std::fs::read(store.join("oci/blobs/sha256").join(hex)).expect("read blob");
    serde_json::from_slice(&data).expect("blob is JSON")
}

#[test]
fn python_package_list_is_an_annotation_and_its_digest_a_short_label() {
    let (a, b) = (Sandbox::new(), Sandbox::new());
    let (ra, rb) = (build_python(&a), build_python(&b));
    let digest = ra["manifest_digest"].as_str().expect("manifest_digest");
    assert_eq!(rb["manifest_digest"], digest, "python is not reproducible");

    let manifest = blob(&a.store(), digest);
    let list = manifest["annotations"]["dev.kiln.vendor.packages"]
        .as_str()
        .expect("package list annotation");
    let lines: Vec<&str> = list.lines().collect();
    assert!(
        lines.iter().any(|l| l.starts_with("python3 ")),
        "no python3 in {list}"
    );
    for l in &lines {
        let fields: Vec<&str> = l.split(' ').collect();
        assert_eq!(fields.len(), 4, "not `name version arch sha256:…`: {l}");
        assert!(fields[3].starts_with("sha256:"), "{l}");
    }
    // The list is what made the label too long for containerd.
    assert!(list.len() > CONTAINERD_LABEL_MAX, "{} bytes", list.len());

    let config = blob(
        &a.store(),
        manifest["config"]["digest"]
            .as_str()
            .expect("config digest"),
    );
    let labels = config["config"]["Labels"].as_object().expect("labels");
    assert!(!labels.contains_key("dev.kiln.vendor.packages"));
    assert_eq!(
        labels["dev.kiln.vendor.packages-digest"],
        Digest::of(list.as_bytes()).to_string()
    );
    for (k, v) in labels {
        let len = k.len() + v.as_str().map_or(0, str::len);
        assert!(len <= CONTAINERD_LABEL_MAX, "label {k} is {len} bytes");
    }
}
