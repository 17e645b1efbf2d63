//! Issue 11 through the binary: `kiln image import` of hostile tarballs (an entry flood, a sparse
//! bomb, a gzip bomb) is refused naming the limit, with modest memory, and leaves the store as it
//! was; the limits come from `KILN_LAYER_MAX_*`.

mod common;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use common::Sandbox;
use nix::sys::resource::{getrusage, UsageWho};

/// A ustar header for `name` (regular file of `size` bytes unless `kind` says otherwise).
fn header(name: &str, kind: u8, size: u64) -> [u8; 512] {
    let mut h = [0u8; 512];
    h[..name.len()].copy_from_slice(name.as_bytes());
    let octal = |field: &mut [u8], v: u64| {
        let s = format!("{v:0w$o}\0", w = field.len() - 1);
        field.copy_from_slice(s.as_bytes());
    };
    octal(&mut h[100..108], 0o644);
    octal(&mut h[108..116], 0);
    octal(&mut h[116..124], 0);
    octal(&mut h[124..136], size);
    octal(&mut h[136..148], 0);
    h[156] = kind;
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    h[148..156].fill(b' ');
    let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
    octal(&mut h[148..155], u64::from(sum));
    h[155] = b' ';
    h
}

/// Runs `gzip -1` from `feed` into `out`.
fn gzip_into(out: &Path, feed: impl FnOnce(&mut dyn Write)) {
    let file = std::fs::File::create(out).expect("create tarball");
    let mut gz = Command::new("gzip")
        .arg("-1")
        .stdin(Stdio::piped())
        .stdout(file)
        .spawn()
        .expect("gzip is needed (apt-get install gzip)");
    {
        let mut stdin = std::io::BufWriter::new(gz.stdin.take().expect("gzip stdin"));
        feed(&mut stdin);
        stdin.flush().expect("feed gzip");
    }
    assert!(gz.wait().expect("wait gzip").success());
}

/// Everything under `root`, as relative paths, sorted.
fn tree(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut todo = vec![root.to_path_buf()];
    while let Some(dir) = todo.pop() {
        for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let p = e.path();
            out.push(p.strip_prefix(root).unwrap().display().to_string());
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                todo.push(p);
            }
        }
    }
    // Lock files are created by the first command that takes them; they hold no data.
    out.retain(|p| !p.starts_with("locks"));
    out.sort();
    out
}

/// Imports `tarball` with `env`, expects failure, and returns stderr; the store must be unchanged.
fn import_refused(sb: &Sandbox, tarball: &Path, env: &[(&str, &str)]) -> String {
    sb.ok(&["image", "ls"]);
    let before = tree(&sb.store());
    let out = sb
        .kiln()
        .envs(env.iter().copied())
        .args([
            "image",
            "import",
            tarball.to_str().unwrap(),
            "--tag",
            "evil",
        ])
        .output()
        .expect("spawn kiln");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "hostile import succeeded: {stderr}");
    assert_eq!(
        tree(&sb.store()),
        before,
        "import left something in the store"
    );
    stderr
}

#[test]
fn an_entry_flood_is_refused_with_modest_memory() {
    let sb = Sandbox::new();
    let tarball = sb.dir.path().join("flood.tar.gz");
    // 1M empty files with distinct 90-byte paths (the old applier kept every path: 242 MB).
    let entries = 1_000_000;
    gzip_into(&tarball, |w| {
        for i in 0..entries {
            let name = format!("d{}/{i:0>80}", i % 1000);
            w.write_all(&header(&name, b'0', 0)).unwrap();
        }
        w.write_all(&[0u8; 1024]).unwrap();
    });
    let stderr = import_refused(&sb, &tarball, &[]);
    assert!(stderr.contains("max_entries = 500000"), "{stderr}");
    assert!(stderr.contains("KILN_LAYER_MAX_ENTRIES"), "{stderr}");
    // The largest child this test process has waited for (kiln; gzip is tiny).
    let max_rss_kib = getrusage(UsageWho::RUSAGE_CHILDREN)
        .expect("getrusage")
        .max_rss();
    assert!(
        max_rss_kib < 64 << 10,
        "kiln peaked at {max_rss_kib} KiB refusing an entry flood"
    );
}

#[test]
fn a_sparse_bomb_is_refused_and_the_disk_is_untouched() {
    let sb = Sandbox::new();
    let tarball = sb.dir.path().join("sparse.tar");
    // GNU sparse header: 512 real bytes at the end of a 10 GiB file.
    let mut h = header("bomb", b'S', 512);
    h[257..265].copy_from_slice(b"ustar  \0");
    let big = |field: &mut [u8], v: u64| {
        field.fill(0);
        field[0] = 0x80;
        field[4..].copy_from_slice(&v.to_be_bytes());
    };
    big(&mut h[483..495], 10 << 30); // realsize
    big(&mut h[386..398], (10 << 30) - 512); // sparse[0].offset
    h[398..410].copy_from_slice(b"00000001000\0"); // sparse[0].numbytes
    h[148..156].fill(b' ');
    let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
    h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    let mut tar = h.to_vec();
    tar.extend_from_slice(&[b'x'; 512]);
    tar.extend_from_slice(&[0u8; 1024]);
    std::fs::write(&tarball, &tar).unwrap();
    let st = |p: &Path| {
        let s = nix::sys::statvfs::statvfs(p).unwrap();
        s.blocks_available() as u64 * s.fragment_size() as u64
    };
    let free = st(sb.dir.path());
    let stderr = import_refused(&sb, &tarball, &[]);
    assert!(
        stderr.contains("\"bomb\"") && stderr.contains("sparse"),
        "{stderr}"
    );
    assert!(
        st(sb.dir.path()) + (64 << 20) > free,
        "the bomb reached the disk"
    );
}

#[test]
fn a_gzip_bomb_is_refused_at_the_configured_budget() {
    let sb = Sandbox::new();
    let tarball = sb.dir.path().join("bomb.tar.gz");
    // One file of 96 MiB of zeros: its header is over a 64 MiB budget.
    gzip_into(&tarball, |w| {
        w.write_all(&header("zeros", b'0', 96 << 20)).unwrap();
        let block = vec![0u8; 1 << 20];
        for _ in 0..96 {
            w.write_all(&block).unwrap();
        }
        w.write_all(&[0u8; 1024]).unwrap();
    });
    assert!(std::fs::metadata(&tarball).unwrap().len() < 2 << 20);
    let stderr = import_refused(&sb, &tarball, &[("KILN_LAYER_MAX_EXPANDED_BYTES", "64m")]);
    assert!(
        stderr.contains("\"zeros\"") && stderr.contains("max_expanded_bytes = 67108864"),
        "{stderr}"
    );
    // Under the default budget the same layer imports.
    sb.ok(&[
        "image",
        "import",
        tarball.to_str().unwrap(),
        "--tag",
        "zeros",
    ]);
}

#[test]
fn a_bad_limit_variable_is_a_clear_error() {
    let sb = Sandbox::new();
    let out = sb
        .kiln()
        .env("KILN_LAYER_MAX_ENTRIES", "lots")
        .args(["image", "ls"])
        .output()
        .expect("spawn kiln");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("KILN_LAYER_MAX_ENTRIES=\"lots\""),
        "{stderr}"
    );
}
