//! A `kiln image import` killed with SIGKILL in the middle of an ingest leaves a store that fsck
//! reports clean and that ingests the same content afterwards.

use std::io::Write;
use std::time::{Duration, Instant};

use kiln_testkit::common::Sandbox;

/// Writes `mb` MB of incompressible pseudo-random bytes (fast xorshift) to `path`.
fn noise(path: &std::path::Path, mb: usize) {
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let mut x = 0x2545_F491_4F6C_DD1Du64;
    let mut block = vec![0u8; 1 << 20];
    for _ in 0..mb {
        for chunk in block.chunks_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            chunk.copy_from_slice(&x.to_le_bytes());
        }
        f.write_all(&block).unwrap();
    }
    f.flush().unwrap();
}

/// Size of the biggest partial ingest in the store's tmp/.
fn partial_ingest(sb: &Sandbox) -> u64 {
    std::fs::read_dir(sb.store().join("tmp"))
        .map(|rd| {
            rd.flatten()
                .filter(|e| e.file_name().to_string_lossy().starts_with("ingest-"))
                .filter_map(|e| e.metadata().ok().map(|m| m.len()))
                .max()
                .unwrap_or(0)
        })
        .unwrap_or(0)
}

#[test]
fn sigkill_mid_ingest_leaves_a_clean_store_that_ingests_again() {
    let sb = Sandbox::new();
    let src = sb.dir.path().join("big");
    std::fs::create_dir(&src).unwrap();
    noise(&src.join("blob.bin"), 256);
    sb.ok(&["image", "ls"]); // creates the store

    let mut child = sb
        .kiln()
        .args(["image", "import", src.to_str().unwrap(), "--tag", "big:1"])
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    while partial_ingest(&sb) < (4 << 20) {
        assert!(
            child.try_wait().unwrap().is_none(),
            "import finished before it could be killed"
        );
        assert!(Instant::now() < deadline, "no ingest started");
        std::thread::sleep(Duration::from_millis(2));
    }
    child.kill().unwrap(); // SIGKILL
    let status = child.wait().unwrap();
    assert!(!status.success(), "import was not killed");
    assert!(
        partial_ingest(&sb) > 0,
        "the kill left no partial ingest to survive"
    );

    let fsck = sb.ok(&["image", "fsck"]);
    assert!(fsck.starts_with("clean"), "{fsck}");
    let ls: serde_json::Value = serde_json::from_str(&sb.ok(&["image", "ls", "--json"])).unwrap();
    assert_eq!(ls, serde_json::json!([]), "a killed import left a tag");

    sb.ok(&["image", "import", src.to_str().unwrap(), "--tag", "big:1"]);
    let fsck = sb.ok(&["image", "fsck", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&fsck).unwrap();
    assert_eq!(v["clean"], true, "{fsck}");
    assert_eq!(v["report"]["checked"], 3, "{fsck}");
    let gc: serde_json::Value = serde_json::from_str(&sb.ok(&["image", "gc", "--json"])).unwrap();
    assert_eq!(gc["removed_tmp"].as_array().map(Vec::len), Some(1), "{gc}");
    assert_eq!(gc["removed_blobs"], serde_json::json!([]), "{gc}");
}
