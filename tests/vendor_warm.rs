//! Warm `kiln vendor build`: an unchanged recipe against an unchanged apt index does no
//! resolution work and reuses its image (under 1 s); an image gone from the store is rebuilt
//! from the remembered package set with the same digest; a changed recipe resolves again.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

use kiln_testkit::common::{shared_deb_cache, Sandbox};

fn build(sb: &Sandbox, recipes: &Path, name: &str) -> (serde_json::Value, Duration, String) {
    let started = Instant::now();
    let out: Output = sb
        .kiln()
        .env("KILN_DEB_CACHE", shared_deb_cache())
        .args(["vendor", "build", name, "--json", "--recipes"])
        .arg(recipes)
        .output()
        .expect("spawn kiln");
    let took = started.elapsed();
    assert!(
        out.status.success(),
        "vendor build {name}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report = serde_json::from_slice(&out.stdout).expect("JSON report");
    (
        report,
        took,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A copy of the shipped busybox recipe in a folder of its own (so the test may change it).
fn recipes(sb: &Sandbox) -> PathBuf {
    let dir = sb.dir.path().join("recipes");
    std::fs::create_dir(&dir).expect("mkdir");
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("vendor-images/busybox.toml");
    std::fs::copy(shipped, dir.join("busybox.toml")).expect("copy recipe");
    dir
}

#[test]
fn warm_vendor_build_skips_apt_and_reuses_the_image() {
    let sb = Sandbox::new();
    let dir = recipes(&sb);
    let (cold, _, said) = build(&sb, &dir, "busybox");
    assert!(said.contains("resolving busybox"), "{said}");
    let (warm, took, said) = build(&sb, &dir, "busybox");
    assert!(
        !said.contains("resolving"),
        "the warm build resolved: {said}"
    );
    assert!(said.contains("reused"), "{said}");
    assert_eq!(warm["manifest_digest"], cold["manifest_digest"]);
    assert_eq!(warm["downloaded"], 0);
    assert!(took < Duration::from_secs(1), "warm build took {took:?}");

    // The image gone (its manifest blob removed): rebuilt from the remembered set, same bytes.
    let manifest = cold["manifest_digest"].as_str().expect("digest");
    let blob = sb
        .store()
        .join("oci/blobs/sha256")
        .join(manifest.trim_start_matches("sha256:"));
    std::fs::remove_file(&blob).expect("remove manifest blob");
    let (again, _, said) = build(&sb, &dir, "busybox");
    assert!(!said.contains("resolving"), "{said}");
    assert_eq!(again["manifest_digest"], cold["manifest_digest"]);
    assert!(blob.exists(), "the manifest was not written again");

    // A changed recipe is a new key: apt resolves it.
    let path = dir.join("busybox.toml");
    let text = std::fs::read_to_string(&path).expect("read recipe");
    std::fs::write(&path, text.replace("every applet linked", "every applet")).expect("write");
    let (changed, _, said) = build(&sb, &dir, "busybox");
    assert!(said.contains("resolving busybox"), "{said}");
    assert_ne!(changed["recipe_digest"], cold["recipe_digest"]);
}
