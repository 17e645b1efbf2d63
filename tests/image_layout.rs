//! Images written by `kiln image import` are standard: the layout judges (oci-image-tool, skopeo,
//! umoci, runc) accept them, the same tree gives the same digest, and exports are oci-archives.

use std::path::Path;
use std::process::Command;

use kiln_testkit::common::{busybox_rootfs, layout_judges, Sandbox};

/// Imports `dir` into the sandbox's store as `tag`; returns the manifest digest.
fn import(sb: &Sandbox, dir: &Path, tag: &str) -> String {
    let out = sb.ok(&[
        "image",
        "import",
        dir.to_str().unwrap(),
        "--tag",
        tag,
        "--json",
    ]);
    let v: serde_json::Value = serde_json::from_str(&out).expect("import --json");
    v["digest"].as_str().expect("digest").to_string()
}

#[test]
fn a_layout_written_by_kiln_passes_the_layout_judges() {
    let Some(judges) = layout_judges() else {
        return;
    };
    let sb = Sandbox::new();
    let rootfs = sb.dir.path().join("rootfs");
    busybox_rootfs(&rootfs);
    import(&sb, &rootfs, "busybox:latest");
    let layout = sb.store().join("oci");
    let out = Command::new("bash")
        .arg(&judges)
        .args([
            "validate-layout",
            layout.to_str().unwrap(),
            "busybox:latest",
        ])
        .output()
        .expect("run judges.sh");
    let text = String::from_utf8_lossy(&out.stdout);
    eprintln!("{text}{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "validate-layout failed:\n{text}");
    assert!(!text.contains("FAIL"), "{text}");
    for judge in [
        "oci-image-tool validate",
        "skopeo copy",
        "umoci unpack",
        "runc run",
    ] {
        assert!(
            text.lines()
                .any(|l| l.starts_with("PASS") && l.contains(judge)),
            "no PASS from {judge}:\n{text}"
        );
    }
}

#[test]
fn the_same_tree_in_two_fresh_stores_gives_the_same_manifest_digest() {
    let (a, b) = (Sandbox::new(), Sandbox::new());
    let tree = a.dir.path().join("rootfs");
    busybox_rootfs(&tree);
    let first = import(&a, &tree, "bb:1");
    let second = import(&b, &tree, "bb:1");
    assert_eq!(first, second);
    // A copy elsewhere, made later (other mtimes, other inode numbers), is the same image too.
    let copy = b.dir.path().join("copy");
    let status = Command::new("cp")
        .arg("-a")
        .arg(&tree)
        .arg(&copy)
        .status()
        .unwrap();
    assert!(status.success());
    std::fs::write(
        copy.join("etc/passwd"),
        std::fs::read(tree.join("etc/passwd")).unwrap(),
    )
    .unwrap();
    assert_eq!(import(&b, &copy, "bb:copy"), first);
}

#[test]
fn export_writes_an_oci_archive_that_skopeo_reads() {
    let sb = Sandbox::new();
    let tree = sb.dir.path().join("rootfs");
    busybox_rootfs(&tree);
    let digest = import(&sb, &tree, "bb:latest");
    let archive = sb.dir.path().join("bb.tar");
    sb.ok(&["image", "export", "bb:latest", archive.to_str().unwrap()]);
    let out = Command::new("skopeo")
        .args(["inspect", &format!("oci-archive:{}", archive.display())])
        .output()
        .expect("run skopeo");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["Digest"].as_str(), Some(digest.as_str()));
}
