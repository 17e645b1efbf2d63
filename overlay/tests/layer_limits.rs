//! Issue 11: hostile layers that try to exhaust the host (sparse claims, huge headers, entry
//! floods, decompression bombs) are refused while they stream, naming the limit, and leave
//! nothing behind; ordinary layers still unpack.

mod support;

use std::io::{Read, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use kiln_overlay::layer::{apply_layer, ApplyOptions, LayerReader};
use kiln_overlay::oci_spec::image::MediaType;
use kiln_overlay::{default_config, Digest, Error, Layer, Limit, Limits, NewImage, Store};
use support::{list_all, RawTar};

/// Small limits so each attack trips quickly.
const SMALL: Limits = Limits {
    max_expanded_bytes: 64 << 20,
    max_file_bytes: 32 << 20,
    max_entries: 100,
    max_path_bytes: 1024,
    max_header_bytes: 64 << 10,
};

fn opts(limits: Limits) -> ApplyOptions {
    ApplyOptions {
        limits,
        ..ApplyOptions::default()
    }
}

/// Free bytes on the filesystem holding `p`.
fn free_bytes(p: &Path) -> u64 {
    let st = nix::sys::statvfs::statvfs(p).expect("statvfs");
    st.blocks_available() as u64 * st.fragment_size() as u64
}

/// A tar field holding `n` in GNU base-256 (for values octal cannot hold in 11 digits).
fn base256(n: u64) -> [u8; 12] {
    let mut f = [0u8; 12];
    f[0] = 0x80;
    f[4..].copy_from_slice(&n.to_be_bytes());
    f
}

/// A GNU sparse file claiming `apparent` bytes with 512 real ones at its end (a 2.5 KB tar).
fn sparse_bomb(apparent: u64) -> Vec<u8> {
    let mut h = tar::Header::new_gnu();
    h.set_path("bomb").unwrap();
    h.set_entry_type(tar::EntryType::GNUSparse);
    h.set_mode(0o644);
    h.set_size(512);
    h.set_mtime(0);
    let g = h.as_gnu_mut().unwrap();
    g.realsize = base256(apparent);
    g.sparse[0].offset = base256(apparent - 512);
    g.sparse[0].numbytes = *b"00000001000\0";
    h.set_cksum();
    let mut out = h.as_bytes().to_vec();
    out.extend_from_slice(&[b'x'; 512]);
    out.extend_from_slice(&[0u8; 1024]);
    out
}

/// Asserts `err` is the limit `limit`, reached at `entry`, and that the message names both.
fn assert_limit(err: &Error, limit: Limit, entry: &str) {
    match err {
        Error::Limit(e) => {
            assert_eq!(e.limit, limit, "{err}");
            assert!(e.entry.contains(entry), "{err}");
            assert!(e.value > e.max, "{err}");
        }
        other => panic!("expected {} for {entry}, got {other}", limit.name()),
    }
    let msg = err.to_string();
    assert!(msg.contains(limit.name()), "{msg}");
    assert!(msg.contains(limit.env_var()), "{msg}");
}

#[test]
fn a_sparse_entry_claiming_10_gib_is_refused_at_once_and_writes_nothing() {
    let t = tempfile::tempdir().unwrap();
    let tar = sparse_bomb(10 << 30);
    assert!(tar.len() < 4096);
    let free = free_bytes(t.path());
    let start = Instant::now();
    let err = apply_layer(&tar[..], t.path(), &ApplyOptions::default())
        .expect_err("a 10 GiB sparse file was accepted");
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "{:?}",
        start.elapsed()
    );
    match &err {
        Error::UnsafeEntry { entry, reason } => {
            assert_eq!(entry, "bomb");
            assert!(reason.contains("sparse"), "{err}");
        }
        other => panic!("expected the sparse entry refused, got {other}"),
    }
    assert!(list_all(t.path()).is_empty(), "{:?}", list_all(t.path()));
    // Nothing like 10 GiB (nor 1 GiB) went to disk.
    assert!(free_bytes(t.path()) + (64 << 20) > free);
}

#[test]
fn a_sparse_bomb_through_import_leaves_the_store_as_it_was() {
    let t = tempfile::tempdir().unwrap();
    let store = Store::open(t.path()).unwrap();
    drop(store.lease().unwrap()); // creates the lock file an import takes
    let before = list_all(t.path());
    let free = free_bytes(t.path());
    let err = store
        .import_tar(&sparse_bomb(10 << 30)[..], &Default::default())
        .expect_err("import accepted a sparse bomb");
    assert!(err.to_string().contains("sparse"), "{err}");
    assert_eq!(list_all(t.path()), before, "import left something behind");
    assert!(free_bytes(t.path()) + (64 << 20) > free);
}

#[test]
fn a_file_header_over_the_limits_is_refused_before_the_file_is_created() {
    let t = tempfile::tempdir().unwrap();
    // The header claims 40 MiB (over max_file_bytes); the data is not even there.
    let mut tar = RawTar::new().file("ok", b"fine").finish();
    tar.truncate(1024);
    let mut h = tar::Header::new_ustar();
    h.set_path("huge").unwrap();
    h.set_size(40 << 20);
    h.set_mode(0o644);
    h.set_cksum();
    tar.extend_from_slice(h.as_bytes());
    let err = apply_layer(&tar[..], t.path(), &opts(SMALL)).unwrap_err();
    assert_limit(&err, Limit::FileBytes, "huge");
    assert!(!t.path().join("huge").exists());

    // Files each under the file limit but over the layer's expanded budget together.
    let many = SMALL.max_expanded_bytes / (20 << 20) + 1;
    let mut b = tar::Builder::new(Vec::new());
    for i in 0..many {
        let mut h = tar::Header::new_ustar();
        h.set_size(20 << 20);
        h.set_mode(0o644);
        b.append_data(&mut h, format!("f{i}"), std::io::repeat(0).take(20 << 20))
            .unwrap();
    }
    let tar = b.into_inner().unwrap();
    let t = tempfile::tempdir().unwrap();
    let err = apply_layer(&tar[..], t.path(), &opts(SMALL)).unwrap_err();
    let last = format!("f{}", many - 1);
    assert_limit(&err, Limit::ExpandedBytes, &last);
    assert!(
        !t.path().join(&last).exists(),
        "the file over budget was created"
    );
}

#[test]
fn too_many_entries_are_refused_naming_the_first_one_over() {
    let t = tempfile::tempdir().unwrap();
    let mut b = tar::Builder::new(Vec::new());
    for i in 0..=SMALL.max_entries {
        let mut h = tar::Header::new_ustar();
        h.set_size(0);
        h.set_mode(0o644);
        b.append_data(&mut h, format!("e{i}"), &[][..]).unwrap();
    }
    let tar = b.into_inner().unwrap();
    let err = apply_layer(&tar[..], t.path(), &opts(SMALL)).unwrap_err();
    assert_limit(&err, Limit::Entries, &format!("e{}", SMALL.max_entries));
    // Root entries ("./") count too: they cannot spin the applier for free.
    let mut raw = RawTar::new();
    for _ in 0..=SMALL.max_entries {
        raw = raw.dir("./");
    }
    let err = apply_layer(&raw.finish()[..], t.path(), &opts(SMALL)).unwrap_err();
    assert_limit(&err, Limit::Entries, "./");
}

#[test]
fn huge_pax_records_and_long_names_are_refused_before_they_are_buffered() {
    let t = tempfile::tempdir().unwrap();
    // A PAX header of 8 MiB in front of one file: refused after max_header_bytes are read.
    let mut b = tar::Builder::new(Vec::new());
    let value = "v".repeat(8 << 20);
    b.append_pax_extensions([("SCHILY.xattr.user.big", value.as_bytes())])
        .unwrap();
    let mut h = tar::Header::new_ustar();
    h.set_size(0);
    h.set_mode(0o644);
    b.append_data(&mut h, "after-pax", &[][..]).unwrap();
    let tar = b.into_inner().unwrap();
    let err = apply_layer(&tar[..], t.path(), &opts(SMALL)).unwrap_err();
    assert_limit(&err, Limit::HeaderBytes, "headers after");
    assert!(list_all(t.path()).is_empty());

    // A GNU long name of 4000 bytes: under the header budget, over max_path_bytes.
    let long = "d/".repeat(2000);
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(0);
    h.set_mode(0o644);
    b.append_data(&mut h, format!("{long}f"), &[][..]).unwrap();
    let tar = b.into_inner().unwrap();
    let err = apply_layer(&tar[..], t.path(), &opts(SMALL)).unwrap_err();
    assert_limit(&err, Limit::PathBytes, "d/d/d/");
    assert!(list_all(t.path()).is_empty());

    // A symlink whose target is longer than max_path_bytes.
    let tar = RawTar::new().symlink("l", "x").finish();
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Symlink);
    h.set_size(0);
    b.append_link(&mut h, "l", "t/".repeat(600)).unwrap();
    let long_link = b.into_inner().unwrap();
    assert!(apply_layer(&tar[..], t.path(), &opts(SMALL)).is_ok());
    let err = apply_layer(&long_link[..], t.path(), &opts(SMALL)).unwrap_err();
    assert_limit(&err, Limit::PathBytes, "l");
}

/// gzip of `n` zero bytes, as repeated members (a 1 GiB bomb is a few hundred KB).
fn gzip_zeros(n: u64) -> Vec<u8> {
    let chunk = 16 << 20;
    let mut member = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    member.write_all(&vec![0u8; chunk]).unwrap();
    let member = member.finish().unwrap();
    let mut out = Vec::new();
    for _ in 0..n.div_ceil(chunk as u64) {
        out.extend_from_slice(&member);
    }
    out
}

#[test]
fn a_gzip_bomb_is_stopped_at_the_expanded_budget() {
    // A directory entry claiming 1 GiB of (zero) data: no file is written for it, but the
    // applier must not read it all either.
    let mut h = tar::Header::new_ustar();
    h.set_path("d/").unwrap();
    h.set_entry_type(tar::EntryType::Directory);
    h.set_size(1 << 30);
    h.set_mode(0o755);
    h.set_cksum();
    let mut blob = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    blob.write_all(h.as_bytes()).unwrap();
    let mut blob = blob.finish().unwrap();
    blob.extend(gzip_zeros(1 << 30));
    assert!(blob.len() < 4 << 20, "{}", blob.len());
    let t = tempfile::tempdir().unwrap();
    let start = Instant::now();
    // The applier's own meter stops it (the reader here is not bounded itself).
    let reader = LayerReader::new(&blob[..]).unwrap();
    let err = apply_layer(reader, t.path(), &opts(SMALL)).unwrap_err();
    assert_limit(&err, Limit::ExpandedBytes, "d/");
    assert!(
        start.elapsed() < Duration::from_secs(20),
        "{:?}",
        start.elapsed()
    );
}

#[test]
fn a_bomb_after_the_end_of_the_tar_fails_the_snapshot_and_leaves_nothing() {
    let t = tempfile::tempdir().unwrap();
    let store = Store::open(t.path()).unwrap().with_limits(SMALL);
    // A valid tiny tar, then 1 GiB of zeros the digest check would have to read.
    let tar = RawTar::new().file("hello", b"hi").finish();
    let mut blob = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    blob.write_all(&tar).unwrap();
    let mut blob = blob.finish().unwrap();
    blob.extend(gzip_zeros(1 << 30));
    let digest = store.ingest_bytes(&blob).unwrap().digest;
    let layer = Layer {
        digest,
        size: blob.len() as u64,
        diff_id: Digest::of(&tar),
        media_type: MediaType::ImageLayerGzip,
    };
    let mut img = NewImage::new(vec![], default_config());
    img.push_layer(layer, "bomb");
    let image = store.commit_image(&img, Some("bomb:1")).unwrap();
    let err = store.prepare_snapshots(&image).unwrap_err();
    assert_limit(&err, Limit::ExpandedBytes, "uncompressed layer stream");
    let snaps: Vec<_> = std::fs::read_dir(store.snapshots_dir())
        .unwrap()
        .flatten()
        .filter(|e| e.file_name() != ".empty")
        .collect();
    assert!(snaps.is_empty(), "a snapshot was committed: {snaps:?}");
    let tmp: Vec<_> = std::fs::read_dir(store.tmp_dir()).unwrap().collect();
    assert!(tmp.is_empty(), "tmp/ left behind: {tmp:?}");
}

#[test]
fn ordinary_layers_still_unpack_with_directory_times_and_opaque_markers() {
    let t = tempfile::tempdir().unwrap();
    let base = RawTar::new()
        .dir("etc/")
        .file("etc/old", b"lower")
        .file("etc/keep-not", b"lower")
        .finish();
    apply_layer(&base[..], t.path(), &opts(SMALL)).unwrap();
    // The opaque marker comes after a file of the same layer: that file stays.
    let mut b = tar::Builder::new(Vec::new());
    for (name, kind, mtime) in [
        ("etc/", tar::EntryType::Directory, 1000),
        ("etc/new", tar::EntryType::Regular, 5),
        ("etc/sub/", tar::EntryType::Directory, 2000),
        ("etc/sub/f", tar::EntryType::Regular, 5),
        ("etc/.wh..wh..opq", tar::EntryType::Regular, 5),
        ("var/", tar::EntryType::Directory, 3000),
    ] {
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(kind);
        h.set_size(0);
        h.set_mode(0o755);
        h.set_mtime(mtime);
        b.append_data(&mut h, name, &[][..]).unwrap();
    }
    let layer = b.into_inner().unwrap();
    let stats = apply_layer(&layer[..], t.path(), &opts(SMALL)).unwrap();
    assert_eq!(stats.entries, 6);
    let mut names = list_all(t.path());
    names.sort();
    assert_eq!(
        names,
        ["etc", "etc/new", "etc/sub", "etc/sub/f", "var"],
        "opaque marker kept a lower file or hid one of its own layer"
    );
    use std::os::unix::fs::MetadataExt;
    for (dir, mtime) in [("etc", 1000), ("etc/sub", 2000), ("var", 3000)] {
        assert_eq!(
            std::fs::metadata(t.path().join(dir)).unwrap().mtime(),
            mtime,
            "{dir}"
        );
    }
}
