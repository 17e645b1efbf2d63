//! The safe applier refuses every hostile entry, names it, and writes nothing outside the target.

mod support;

use kiln_overlay::layer::{apply_layer, ApplyOptions};
use kiln_overlay::Error;
use support::{list_all, RawTar};

/// A scratch dir holding `target/` (where layers go) and `outside/` (which must stay untouched).
struct Scene {
    dir: tempfile::TempDir,
}

impl Scene {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("target")).unwrap();
        std::fs::create_dir(dir.path().join("outside")).unwrap();
        std::fs::write(dir.path().join("outside/file"), "precious").unwrap();
        Self { dir }
    }

    fn target(&self) -> std::path::PathBuf {
        self.dir.path().join("target")
    }

    /// Applies `tar`; asserts it is refused naming `entry` and that only `target/` changed.
    fn refused(&self, tar: Vec<u8>, entry: &str, opts: &ApplyOptions) {
        let before: Vec<String> = list_all(self.dir.path())
            .into_iter()
            .filter(|p| !p.starts_with("target"))
            .collect();
        let err =
            apply_layer(&tar[..], &self.target(), opts).expect_err("hostile tar was accepted");
        match &err {
            Error::UnsafeEntry { entry: e, .. } => assert_eq!(e, entry, "{err}"),
            other => panic!("expected UnsafeEntry for {entry}, got {other}"),
        }
        assert!(err.to_string().contains(entry), "{err}");
        let after: Vec<String> = list_all(self.dir.path())
            .into_iter()
            .filter(|p| !p.starts_with("target"))
            .collect();
        assert_eq!(before, after, "something was written outside the target");
        assert_eq!(
            std::fs::read_to_string(self.dir.path().join("outside/file")).unwrap(),
            "precious"
        );
        for root in ["/evil", "/tmp/evil"] {
            assert!(!std::path::Path::new(root).exists(), "{root} was written");
        }
    }
}

fn opts() -> ApplyOptions {
    ApplyOptions::default()
}

#[test]
fn dotdot_is_refused() {
    let s = Scene::new();
    s.refused(
        RawTar::new().file("../outside/evil", b"x").finish(),
        "../outside/evil",
        &opts(),
    );
    s.refused(
        RawTar::new().dir("a").file("a/../../evil", b"x").finish(),
        "a/../../evil",
        &opts(),
    );
}

#[test]
fn absolute_names_are_refused() {
    let s = Scene::new();
    s.refused(RawTar::new().file("/evil", b"x").finish(), "/evil", &opts());
}

#[test]
fn writing_through_a_symlink_that_leaves_the_root_is_refused() {
    let s = Scene::new();
    let outside = s.dir.path().join("outside");
    let abs = outside.display().to_string();
    s.refused(
        RawTar::new()
            .symlink("link", &abs)
            .file("link/evil", b"x")
            .finish(),
        "link/evil",
        &opts(),
    );
    let s = Scene::new();
    s.refused(
        RawTar::new()
            .symlink("up", "../outside")
            .file("up/evil", b"x")
            .finish(),
        "up/evil",
        &opts(),
    );
    let s = Scene::new();
    s.refused(
        RawTar::new()
            .symlink("a", "b")
            .symlink("b", "../../..")
            .file("a/tmp/evil", b"x")
            .finish(),
        "a/tmp/evil",
        &opts(),
    );
}

#[test]
fn hardlinks_to_outside_are_refused() {
    let s = Scene::new();
    s.refused(
        RawTar::new().hardlink("hl", "../outside/file").finish(),
        "hl",
        &opts(),
    );
    s.refused(
        RawTar::new().hardlink("hl", "/etc/passwd").finish(),
        "hl",
        &opts(),
    );
    let s = Scene::new();
    s.refused(
        RawTar::new()
            .symlink("esc", "../outside")
            .hardlink("hl", "esc/file")
            .finish(),
        "hl",
        &opts(),
    );
}

#[test]
fn device_nodes_are_refused_unless_allowed() {
    let s = Scene::new();
    let tar = RawTar::new()
        .raw(tar::EntryType::Char, "null", "", b"")
        .finish();
    s.refused(tar.clone(), "null", &opts());
    let allow = ApplyOptions {
        allow_devices: true,
        ..opts()
    };
    apply_layer(&tar[..], &s.target(), &allow).unwrap();
    use std::os::unix::fs::FileTypeExt;
    assert!(std::fs::symlink_metadata(s.target().join("null"))
        .unwrap()
        .file_type()
        .is_char_device());
}

#[test]
fn a_file_replacing_a_symlink_does_not_write_through_it() {
    let s = Scene::new();
    let victim = s.dir.path().join("outside/file").display().to_string();
    let tar = RawTar::new()
        .symlink("f", &victim)
        .file("f", b"new")
        .finish();
    apply_layer(&tar[..], &s.target(), &opts()).unwrap();
    assert_eq!(
        std::fs::read_to_string(s.target().join("f")).unwrap(),
        "new"
    );
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
}

#[test]
fn benign_links_inside_the_root_work() {
    let s = Scene::new();
    let tar = RawTar::new()
        .dir("usr/")
        .dir("usr/lib/")
        .symlink("lib", "usr/lib")
        .file("lib/libc.so", b"elf")
        .hardlink("usr/libc-again.so", "usr/lib/libc.so")
        .finish();
    apply_layer(&tar[..], &s.target(), &opts()).unwrap();
    assert_eq!(
        std::fs::read(s.target().join("usr/lib/libc.so")).unwrap(),
        b"elf"
    );
    assert_eq!(
        std::fs::read(s.target().join("usr/libc-again.so")).unwrap(),
        b"elf"
    );
}
