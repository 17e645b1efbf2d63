//! Snapshots, overlay mounts (40+ layers), whiteouts through an overlay upper dir, gc and fsck.
//! Needs root (mounts).

mod support;

use std::path::Path;

use kiln_overlay::layer::{apply_layer, ApplyOptions, LayerReader};
use kiln_overlay::{
    default_config, mount_overlay, Layer, LayerOptions, LayerSource, NewImage, Store, Upper,
};
use support::{list_all, write_tree};

fn layer_of(store: &Store, dir: &Path, files: &[(&str, &str)]) -> Layer {
    write_tree(dir, files);
    store
        .write_layer(LayerSource::Dir(dir), &LayerOptions::default())
        .unwrap()
}

fn image_of(store: &Store, layers: &[Layer], tag: &str) -> kiln_overlay::Image {
    let mut img = NewImage::new(Vec::new(), default_config());
    for l in layers {
        img.push_layer(l.clone(), "test");
    }
    store.commit_image(&img, Some(tag)).unwrap()
}

#[test]
fn a_mount_of_45_layers_sees_every_layer_in_order() {
    let t = tempfile::tempdir().unwrap();
    let store = Store::open(t.path().join("store")).unwrap();
    let layers: Vec<Layer> = (0..45)
        .map(|i| {
            let name = format!("l{i}");
            let n = i.to_string();
            layer_of(
                &store,
                &t.path().join("src").join(&name),
                &[(&format!("layers/{name}"), "x"), ("common", n.as_str())],
            )
        })
        .collect();
    let img = image_of(&store, &layers, "tall");
    let mnt = t.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let m = store.mount_image(&img, &mnt, None).unwrap();
    assert_eq!(std::fs::read_to_string(mnt.join("common")).unwrap(), "44");
    assert_eq!(std::fs::read_dir(mnt.join("layers")).unwrap().count(), 45);
    assert!(
        std::fs::write(mnt.join("new"), "x").is_err(),
        "read-only mount was writable"
    );
    m.unmount().unwrap();
    assert!(!mnt.join("common").exists());
    // Snapshots are shared: a second mount unpacks nothing new.
    let before = list_all(&store.snapshots_dir()).len();
    drop(store.mount_image(&img, &mnt, None).unwrap()); // dropping unmounts
    assert_eq!(list_all(&store.snapshots_dir()).len(), before);
    assert!(!mnt.join("common").exists(), "drop did not unmount");
}

#[test]
fn whiteouts_round_trip_through_an_overlay_upper_dir() {
    let t = tempfile::tempdir().unwrap();
    let store = Store::open(t.path().join("store")).unwrap();
    let base = layer_of(
        &store,
        &t.path().join("base"),
        &[("a/keep", "k"), ("a/gone", "g"), ("d/old", "o"), ("f", "f")],
    );
    let base_img = image_of(&store, std::slice::from_ref(&base), "base");
    let (upper, work, mnt) = (
        t.path().join("upper"),
        t.path().join("work"),
        t.path().join("mnt"),
    );
    for d in [&upper, &work, &mnt] {
        std::fs::create_dir(d).unwrap();
    }
    let up = Upper {
        upper: upper.clone(),
        work,
    };
    let m = store.mount_image(&base_img, &mnt, Some(&up)).unwrap();
    std::fs::remove_file(mnt.join("a/gone")).unwrap();
    std::fs::remove_dir_all(mnt.join("d")).unwrap();
    std::fs::create_dir(mnt.join("d")).unwrap();
    std::fs::write(mnt.join("d/new"), "n").unwrap();
    std::fs::write(mnt.join("added"), "a").unwrap();
    m.unmount().unwrap();

    let diff = store
        .write_layer(LayerSource::OverlayUpper(&upper), &LayerOptions::default())
        .unwrap();
    let mut names = Vec::new();
    let mut r = LayerReader::new(store.open_blob(&diff.digest).unwrap()).unwrap();
    for e in tar::Archive::new(&mut r).entries().unwrap() {
        names.push(e.unwrap().path().unwrap().display().to_string());
    }
    for want in ["a/.wh.gone", "d/.wh..wh..opq", "d/new", "added"] {
        assert!(
            names.iter().any(|n| n == want),
            "{want} missing from {names:?}"
        );
    }

    // Mounted as an image, and flattened with the applier: the same tree.
    let img = image_of(&store, &[base.clone(), diff.clone()], "changed");
    let m = store.mount_image(&img, &mnt, None).unwrap();
    let mounted = list_all(&mnt);
    m.unmount().unwrap();
    let flat = t.path().join("flat");
    std::fs::create_dir(&flat).unwrap();
    for l in [&base, &diff] {
        let r = LayerReader::new(store.open_blob(&l.digest).unwrap()).unwrap();
        apply_layer(r, &flat, &ApplyOptions::default()).unwrap();
    }
    let want = ["a", "a/keep", "added", "d", "d/new", "f"];
    assert_eq!(mounted, want);
    assert_eq!(list_all(&flat), want);
}

#[test]
fn gc_removes_only_what_no_ref_reaches_and_fsck_finds_damage() {
    let t = tempfile::tempdir().unwrap();
    let store = Store::open(t.path().join("store")).unwrap();
    let shared = layer_of(&store, &t.path().join("shared"), &[("s", "s")]);
    let only_a = layer_of(&store, &t.path().join("a"), &[("a", "a")]);
    let only_b = layer_of(&store, &t.path().join("b"), &[("b", "b")]);
    let only_c = layer_of(&store, &t.path().join("c"), &[("c", "c")]);
    let a = image_of(&store, &[shared.clone(), only_a.clone()], "a");
    let b = image_of(&store, &[shared.clone(), only_b.clone()], "b");
    let c = image_of(&store, std::slice::from_ref(&only_c), "c");
    for img in [&a, &b, &c] {
        store.prepare_snapshots(img).unwrap();
    }
    // c stays alive through a build-cache entry only.
    store.untag("c").unwrap();
    std::fs::write(store.cache_dir().join("key"), c.digest.to_string()).unwrap();
    store.untag("b").unwrap();
    std::fs::write(store.tmp_dir().join("ingest-leftover"), "partial").unwrap();

    let report = store.gc().unwrap();
    let mut gone = report.removed_blobs.clone();
    gone.sort();
    let mut want = vec![b.digest, b.config_digest, only_b.digest];
    want.sort();
    assert_eq!(gone, want);
    assert_eq!(
        report.removed_snapshots,
        vec![b.chain_ids().unwrap()[1].hex()]
    );
    assert_eq!(report.removed_tmp.len(), 1);
    for img in [&a, &c] {
        for chain in img.chain_ids().unwrap() {
            assert!(store.snapshot_path(&chain).is_dir());
        }
        assert!(store.has_blob(&img.digest) && store.has_blob(&img.config_digest));
    }
    assert!(store.has_blob(&shared.digest));
    assert!(store.fsck().unwrap().is_clean());
    assert!(
        store.gc().unwrap().removed_blobs.is_empty(),
        "second gc removed more"
    );

    // Damage: one blob corrupted, one referenced blob deleted.
    std::fs::write(store.blob_path(&only_a.digest), b"garbage").unwrap();
    std::fs::remove_file(store.blob_path(&only_c.digest)).unwrap();
    let f = store.fsck().unwrap();
    assert!(!f.is_clean());
    assert_eq!(f.corrupt.len(), 1);
    assert_eq!(f.corrupt[0].digest, only_a.digest);
    assert_eq!(f.missing.len(), 1);
    assert_eq!(f.missing[0].digest, only_c.digest);
}

#[test]
fn mount_overlay_refuses_a_missing_lower_dir_with_the_kernel_reason() {
    let t = tempfile::tempdir().unwrap();
    let mnt = t.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let lowers = [t.path().join("nope1"), t.path().join("nope2")];
    let err = mount_overlay(&lowers, None, &mnt).unwrap_err();
    assert!(err.to_string().contains("nope"), "{err}");
}
