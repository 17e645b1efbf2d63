//! `layer`: pack a generated tree (~200 MB in ~20k files) into a gzip layer with kiln, next to
//! `tar -cf - DIR | gzip -1 | sha256sum` on the same tree in the same run.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use kiln_overlay::{Compression, LayerOptions, LayerSource, Store};

use crate::report::{median, Params, Report};

/// The generated input tree and its size.
pub(crate) struct Tree {
    /// Root of the tree.
    pub dir: PathBuf,
    /// Total bytes of file content.
    pub bytes: u64,
    /// Number of files.
    pub files: u64,
}

/// Where scratch data goes (`--set dir=...`, default /var/tmp/kiln-bench).
pub(crate) fn work_dir(params: &Params) -> PathBuf {
    PathBuf::from(params.str("dir", "/var/tmp/kiln-bench"))
}

/// Makes (or reuses) a deterministic tree of `size_mb` MB in `files` files: text-like files of
/// varying size (compressible about 3:1, as source trees and binaries are), 100 files a directory.
pub(crate) fn ensure_tree(params: &Params) -> Result<Tree> {
    let size_mb: u64 = params.num("size_mb", 200)?;
    let files: u64 = params.num("files", 20_000)?;
    let dir = work_dir(params).join(format!("tree-{size_mb}mb-{files}f"));
    let stamp = dir.join(".complete");
    let avg = size_mb * 1_000_000 / files.max(1);
    if !stamp.exists() {
        let _ = std::fs::remove_dir_all(&dir);
        let mut rng = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = move || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        let words: Vec<String> = (0..4096)
            .map(|i| {
                let len = 2 + (i * 7 % 9);
                (0..len)
                    .map(|j| (b'a' + ((i * 31 + j * 17) % 26) as u8) as char)
                    .collect()
            })
            .collect();
        for i in 0..files {
            let sub = dir.join(format!("d{:03}", i / 100));
            if i % 100 == 0 {
                std::fs::create_dir_all(&sub)
                    .with_context(|| format!("mkdir {}", sub.display()))?;
            }
            // Sizes between avg/4 and 7*avg/4, averaging avg.
            let size = avg / 4 + next() % (avg * 3 / 2).max(1);
            let mut content = Vec::with_capacity(size as usize + 16);
            while (content.len() as u64) < size {
                let r = next();
                if r % 8 == 0 {
                    content.extend_from_slice(&r.to_le_bytes()); // some noise
                } else {
                    content.extend_from_slice(words[(r >> 20) as usize % words.len()].as_bytes());
                    content.push(if r % 11 == 0 { b'\n' } else { b' ' });
                }
            }
            content.truncate(size as usize);
            let p = sub.join(format!("f{i:05}.txt"));
            std::fs::write(&p, &content).with_context(|| format!("write {}", p.display()))?;
        }
        std::fs::write(&stamp, b"")?;
    }
    let (mut bytes, mut count) = (0u64, 0u64);
    for d in std::fs::read_dir(&dir)? {
        let d = d?;
        if d.file_type()?.is_dir() {
            for f in std::fs::read_dir(d.path())? {
                bytes += f?.metadata()?.len();
                count += 1;
            }
        }
    }
    Ok(Tree {
        dir,
        bytes,
        files: count,
    })
}

/// Runs a shell pipeline, failing if it fails; returns its stdout.
pub(crate) fn shell(script: &str) -> Result<String> {
    let out = Command::new("sh")
        .arg("-c")
        .arg(script)
        .output()
        .context("spawn sh")?;
    if !out.status.success() {
        bail!(
            "`{script}` failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Times `f` `runs` times after one warm-up run; returns the samples in seconds.
pub(crate) fn time_runs(runs: usize, mut f: impl FnMut() -> Result<()>) -> Result<Vec<f64>> {
    f()?;
    let mut samples = Vec::with_capacity(runs);
    for _ in 0..runs {
        let t = Instant::now();
        f()?;
        samples.push(t.elapsed().as_secs_f64());
    }
    Ok(samples)
}

/// A fresh store under the work dir (same filesystem as the tree).
pub(crate) fn fresh_store(params: &Params, name: &str) -> Result<Store> {
    let p = work_dir(params).join(name);
    let _ = std::fs::remove_dir_all(&p);
    Ok(Store::open(&p)?)
}

fn layer_row(
    report: &mut Report,
    name: &str,
    tree: &Tree,
    samples: &mut [f64],
    out_bytes: u64,
) -> f64 {
    let med = median(samples);
    let mbs = tree.bytes as f64 / 1e6 / med;
    report.row(
        name,
        &[
            ("median_s", med),
            ("mb_per_s", mbs),
            ("output_mb", out_bytes as f64 / 1e6),
        ],
    );
    mbs
}

/// The scenario.
pub fn run(params: &Params) -> Result<Report> {
    let runs: usize = params.num("runs", 5)?;
    let level: i32 = params.num("level", Compression::Gzip.default_level())?;
    let tree = ensure_tree(params)?;
    let store = fresh_store(params, "layer-store")?;
    let mut report = Report::new("layer");
    report
        .context
        .insert("tree".into(), tree.dir.display().to_string());
    report
        .context
        .insert("tree_mb".into(), format!("{:.1}", tree.bytes as f64 / 1e6));
    report
        .context
        .insert("files".into(), tree.files.to_string());
    report
        .context
        .insert("runs".into(), format!("{runs} (median, after 1 warm-up)"));
    report.context.insert(
        "cpus".into(),
        std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .to_string(),
    );

    let mut kiln_out = 0;
    let mut pack = |compression: Compression| -> Result<(Vec<f64>, u64)> {
        let opts = LayerOptions {
            compression,
            level: (compression == Compression::Gzip).then_some(level),
            ..LayerOptions::default()
        };
        let samples = time_runs(runs, || {
            let l = store.write_layer(LayerSource::Dir(&tree.dir), &opts)?;
            kiln_out = l.size;
            std::fs::remove_file(store.blob_path(&l.digest))?;
            Ok(())
        })?;
        Ok((samples, kiln_out))
    };
    let (mut gz, gz_size) = pack(Compression::Gzip)?;
    let (mut zs, zs_size) = pack(Compression::Zstd)?;
    let (mut plain, plain_size) = pack(Compression::None)?;

    let q = shell_quote(&tree.dir);
    let peer_cmd = format!("tar -cf - -C {q} . | gzip -1 | sha256sum");
    let mut peer = time_runs(runs, || shell(&peer_cmd).map(drop))?;
    let peer_size: u64 = shell(&format!("tar -cf - -C {q} . | gzip -1 | wc -c"))?
        .trim()
        .parse()?;

    let kiln_mbs = layer_row(
        &mut report,
        &format!("kiln layer (gzip -{level}, digest + diff_id)"),
        &tree,
        &mut gz,
        gz_size,
    );
    layer_row(
        &mut report,
        "kiln layer (zstd -3, digest + diff_id)",
        &tree,
        &mut zs,
        zs_size,
    );
    layer_row(
        &mut report,
        "kiln layer (plain tar: walk + tar + sha256)",
        &tree,
        &mut plain,
        plain_size,
    );
    let peer_mbs = layer_row(
        &mut report,
        "tar -cf - | gzip -1 | sha256sum",
        &tree,
        &mut peer,
        peer_size,
    );
    report.summary.insert(
        "kiln gzip MB/s / tar|gzip -1|sha256sum MB/s".into(),
        kiln_mbs / peer_mbs,
    );
    Ok(report)
}

/// Single-quotes a path for `sh -c`.
pub(crate) fn shell_quote(p: &Path) -> String {
    format!("'{}'", p.display().to_string().replace('\'', r"'\''"))
}
