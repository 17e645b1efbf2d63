//! Arbitrary bytes as a layer (plain, or gzip-compressed when the first byte is odd), applied into
//! a temp dir with small limits: nothing may appear outside the target, and the limits must hold.
#![no_main]

use std::io::{Read, Write};
use std::path::Path;

use kiln_overlay::layer::{apply_layer, ApplyOptions, LayerReader, WhiteoutMode};
use kiln_overlay::{Error, Limits};
use libfuzzer_sys::fuzz_target;

const LIMITS: Limits = Limits {
    max_expanded_bytes: 1 << 20,
    max_file_bytes: 256 << 10,
    max_entries: 64,
    max_path_bytes: 256,
    max_header_bytes: 4 << 10,
};

/// (relative path, apparent size) of everything under `dir`, without following symlinks.
fn walk(dir: &Path, rel: &Path, out: &mut Vec<(String, u64)>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let Ok(meta) = std::fs::symlink_metadata(e.path()) else {
            continue;
        };
        let r = rel.join(e.file_name());
        out.push((
            r.display().to_string(),
            if meta.is_file() { meta.len() } else { 0 },
        ));
        if meta.is_dir() {
            walk(&e.path(), &r, out);
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, body)) = data.split_first() else {
        return;
    };
    let scene = tempfile::tempdir().expect("temp dir");
    let target = scene.path().join("target");
    std::fs::create_dir(&target).expect("target dir");
    std::fs::write(scene.path().join("outside"), b"precious").expect("sentinel");
    let opts = ApplyOptions {
        whiteouts: if mode & 2 == 0 {
            WhiteoutMode::Apply
        } else {
            WhiteoutMode::Overlay
        },
        limits: LIMITS,
        ..ApplyOptions::default()
    };
    let result = if mode & 1 == 1 {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(body).expect("gzip into memory");
        let blob = gz.finish().expect("gzip into memory");
        let mut reader = LayerReader::new(&blob[..])
            .expect("layer reader")
            .with_limits(&LIMITS);
        let r = apply_layer(&mut reader, &target, &opts);
        // Trailing bytes are drained under the same budget.
        let mut rest = Vec::new();
        let _ = reader.take(2 << 20).read_to_end(&mut rest);
        r
    } else {
        apply_layer(body, &target, &opts)
    };
    if let Err(Error::Limit(e)) = &result {
        assert!(e.value > e.max, "limit error below its limit: {e}");
    }
    let mut outside = Vec::new();
    walk(scene.path(), Path::new(""), &mut outside);
    outside.retain(|(p, _)| !p.starts_with("target"));
    assert_eq!(
        outside,
        vec![("outside".to_string(), 8)],
        "written outside the target"
    );
    assert_eq!(
        std::fs::read(scene.path().join("outside")).expect("sentinel"),
        b"precious"
    );
    let mut inside = Vec::new();
    walk(&target, Path::new(""), &mut inside);
    let bytes: u64 = inside.iter().map(|(_, n)| n).sum();
    assert!(bytes <= LIMITS.max_expanded_bytes, "{bytes} bytes written");
    assert!(
        inside.iter().all(|(_, n)| *n <= LIMITS.max_file_bytes),
        "a file over max_file_bytes"
    );
    for p in ["/evil", "/tmp/evil"] {
        assert!(!Path::new(p).exists(), "{p} was written");
    }
});
