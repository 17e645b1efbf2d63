//! examples/shop built by `kiln build` over the real python vendor image (built into the test's
//! store from the shared .deb cache), then rebuilt at the same commit as a hit.

use std::path::Path;
use std::process::Command;

use kiln_testkit::common::{copy_example, git, shared_deb_cache, Sandbox};
use serde_json::Value;

fn build(sb: &Sandbox, repo: &Path) -> Value {
    let out = sb.ok(&["build", &repo.to_string_lossy(), "--json"]);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("bad JSON ({e}): {out}"))
}

#[test]
fn examples_shop_builds_on_the_python_image_and_rebuilds_as_a_hit() {
    let sb = Sandbox::new();
    let recipes = Path::new(env!("CARGO_MANIFEST_DIR")).join("vendor-images");
    let out = sb
        .kiln()
        .env("KILN_DEB_CACHE", shared_deb_cache())
        .args(["vendor", "build", "python", "--quiet", "--recipes"])
        .arg(&recipes)
        .output()
        .expect("spawn kiln");
    assert!(out.status.success(), "vendor build python: {out:?}");

    let repo = copy_example(sb.dir.path(), "shop");
    git(&repo, &["init", "-q", "-b", "main"]);
    git(&repo, &["add", "-A"]);
    git(&repo, &["commit", "-q", "-m", "shop"]);

    let first = build(&sb, &repo);
    let web = &first["services"][0];
    assert_eq!(web["service"], "web");
    assert_eq!(web["cache"], "miss");
    assert_eq!(first["containers"], 1, "the hook ran: {first}");
    let hook = web["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .find(|s| s["name"] == "hook")
        .expect("hook step");
    // The hook's layer holds what make_assets.py generated.
    let layer = hook["layer"].as_str().expect("layer");
    let blob = sb
        .store()
        .join("oci/blobs/sha256")
        .join(layer.trim_start_matches("sha256:"));
    let list = Command::new("tar")
        .arg("tzf")
        .arg(&blob)
        .output()
        .expect("tar");
    let names = String::from_utf8_lossy(&list.stdout);
    assert!(
        names.lines().any(|l| l == "app/generated/banner.txt"),
        "{names}"
    );

    let second = build(&sb, &repo);
    assert_eq!(second["containers"], 0);
    for s in second["services"].as_array().expect("services") {
        assert_eq!(s["cache"], "hit", "{s}");
    }
    assert_eq!(second["services"][0]["digest"], web["digest"]);
    let left: Vec<_> = std::fs::read_dir(sb.root())
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "containers left: {left:?}");
}
