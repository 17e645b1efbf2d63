//! `kiln image` as a user drives it: import with config flags, ls, inspect, mount/umount, rm, gc,
//! fsck; and a hostile tarball refused with nothing tagged and nothing written outside.

use std::path::Path;

use kiln_testkit::common::{busybox_rootfs, Sandbox};

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// One ustar header block for a regular file with a raw (unchecked) name.
fn raw_tar_file(name: &str, data: &[u8]) -> Vec<u8> {
    let mut h = [0u8; 512];
    h[..name.len()].copy_from_slice(name.as_bytes());
    let octal = |h: &mut [u8; 512], at: usize, len: usize, v: u64| {
        let s = format!("{v:0w$o}\0", w = len - 1);
        h[at..at + len].copy_from_slice(s.as_bytes());
    };
    octal(&mut h, 100, 8, 0o644);
    octal(&mut h, 108, 8, 0);
    octal(&mut h, 116, 8, 0);
    octal(&mut h, 124, 12, data.len() as u64);
    octal(&mut h, 136, 12, 0);
    h[156] = b'0';
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    h[148..156].copy_from_slice(b"        ");
    let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
    h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    let mut out = h.to_vec();
    out.extend_from_slice(data);
    out.resize(out.len().div_ceil(512) * 512, 0);
    out
}

#[test]
fn a_hostile_tarball_is_refused_naming_the_entry_and_nothing_is_tagged() {
    let sb = Sandbox::new();
    let mut tar = raw_tar_file("ok", b"fine");
    tar.extend(raw_tar_file("../escaped", b"evil"));
    tar.extend_from_slice(&[0u8; 1024]);
    let path = sb.dir.path().join("hostile.tar");
    std::fs::write(&path, tar).unwrap();
    let out = sb.run(&["image", "import", path.to_str().unwrap(), "--tag", "evil"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("../escaped") && err.contains("traversal"),
        "{err}"
    );
    assert_eq!(
        json(&sb.ok(&["image", "ls", "--json"])),
        serde_json::json!([])
    );
    for p in [
        sb.store().join("escaped"),
        sb.dir.path().join("escaped"),
        Path::new("/escaped").into(),
    ] {
        assert!(!p.exists(), "{} was written", p.display());
    }
    let tmp: Vec<_> = std::fs::read_dir(sb.store().join("tmp")).unwrap().collect();
    assert!(tmp.is_empty(), "leftovers in tmp/: {tmp:?}");
}

#[test]
fn import_flags_ls_inspect_mount_rm_gc_fsck() {
    let sb = Sandbox::new();
    let tree = sb.dir.path().join("rootfs");
    busybox_rootfs(&tree);
    std::fs::write(tree.join("etc/motd"), "from kiln").unwrap();
    let tarball = sb.dir.path().join("rootfs.tar.gz");
    let st = std::process::Command::new("tar")
        .arg("-czf")
        .arg(&tarball)
        .arg("-C")
        .arg(&tree)
        .arg(".")
        .status()
        .unwrap();
    assert!(st.success());
    let t = tree.to_str().unwrap();
    sb.ok(&[
        "image",
        "import",
        t,
        "--tag",
        "app:v1",
        "--cmd",
        "/bin/sh",
        "--cmd",
        "-c",
        "--cmd",
        "echo hi",
        "--env",
        "A=1",
        "--workdir",
        "/root",
        "--entrypoint",
        "/bin/env",
    ]);
    // A tarball of the same tree is the same layer (re-written deterministically).
    sb.ok(&[
        "image",
        "import",
        tarball.to_str().unwrap(),
        "--tag",
        "app:tar",
    ]);

    let ls = json(&sb.ok(&["image", "ls", "--json"]));
    let names: Vec<&str> = ls
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["app:tar", "app:v1"]);

    let v1 = json(&sb.ok(&["image", "inspect", "app:v1", "--json"]));
    let tar = json(&sb.ok(&["image", "inspect", "app:tar", "--json"]));
    let cfg = &v1["config"]["config"];
    assert_eq!(cfg["Cmd"], serde_json::json!(["/bin/sh", "-c", "echo hi"]));
    assert_eq!(cfg["Entrypoint"], serde_json::json!(["/bin/env"]));
    assert_eq!(cfg["Env"], serde_json::json!(["A=1"]));
    assert_eq!(cfg["WorkingDir"], "/root");
    assert_eq!(
        tar["config"]["config"]["Cmd"],
        serde_json::json!(["/bin/sh"])
    );
    assert_eq!(
        v1["config"]["rootfs"]["diff_ids"],
        tar["config"]["rootfs"]["diff_ids"]
    );
    assert_eq!(v1["manifest"]["layers"], tar["manifest"]["layers"]);

    let mnt = sb.dir.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    sb.ok(&["image", "mount", "app:v1", mnt.to_str().unwrap()]);
    let motd = std::fs::read_to_string(mnt.join("etc/motd"));
    let ro = std::fs::write(mnt.join("etc/new"), "x").is_err();
    sb.ok(&["image", "umount", mnt.to_str().unwrap()]);
    assert_eq!(motd.unwrap(), "from kiln");
    assert!(ro, "the mount was writable");
    assert!(!mnt.join("etc").exists());

    sb.ok(&["image", "rm", "app:v1"]);
    let gc = json(&sb.ok(&["image", "gc", "--json"]));
    // app:v1's manifest and config go; the layer is shared with app:tar and stays.
    assert_eq!(gc["removed_blobs"].as_array().unwrap().len(), 2, "{gc}");
    assert!(gc["removed_blobs"]
        .as_array()
        .unwrap()
        .contains(&v1["digest"]));
    assert!(sb.run(&["image", "inspect", "app:v1"]).status.code() == Some(1));
    assert!(sb.ok(&["image", "fsck"]).starts_with("clean"));
    let rm_missing = sb.run(&["image", "rm", "nope"]);
    assert!(String::from_utf8_lossy(&rm_missing.stderr).contains("nope"));
}
