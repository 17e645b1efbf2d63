//! `unpack`: apply the gzip layer of the generated tree with kiln's safe applier (digests
//! verified), next to `tar -xzf` and `umoci unpack` of the same layer in the same run.

use anyhow::Result;
use kiln_overlay::layer::{apply_layer, ApplyOptions, LayerReader};
use kiln_overlay::{default_config, LayerOptions, LayerSource, NewImage};

use super::layer::{ensure_tree, fresh_store, shell, shell_quote, work_dir};

/// Name of kiln's row.
const KILN: &str = "kiln apply (gzip, digest + diff_id verified)";
use crate::report::{median, Params, Report};

/// The scenario.
pub fn run(params: &Params) -> Result<Report> {
    let runs: usize = params.num("runs", 5)?;
    let tree = ensure_tree(params)?;
    let store = fresh_store(params, "unpack-store")?;
    let layer = store.write_layer(LayerSource::Dir(&tree.dir), &LayerOptions::default())?;
    let mut img = NewImage::new(Vec::new(), default_config());
    img.push_layer(layer.clone(), "bench");
    store.commit_image(&img, Some("bench"))?;
    let blob = store.blob_path(&layer.digest);
    let out = work_dir(params).join("unpack-out");
    let reset = || -> Result<()> {
        let _ = std::fs::remove_dir_all(&out);
        std::fs::create_dir_all(&out)?;
        Ok(())
    };

    let mut report = Report::new("unpack");
    report
        .context
        .insert("tree_mb".into(), format!("{:.1}", tree.bytes as f64 / 1e6));
    report
        .context
        .insert("files".into(), tree.files.to_string());
    report
        .context
        .insert("layer_mb".into(), format!("{:.1}", layer.size as f64 / 1e6));
    report.context.insert(
        "runs".into(),
        format!("{runs} (median, after 1 warm-up; output dir removed between runs, untimed)"),
    );

    let mut rows: Vec<(String, Vec<f64>)> = Vec::new();
    let mut timed = |name: &str, f: &mut dyn FnMut() -> Result<()>| -> Result<()> {
        let mut samples = Vec::new();
        for i in 0..=runs {
            reset()?;
            let t = std::time::Instant::now();
            f()?;
            if i > 0 {
                samples.push(t.elapsed().as_secs_f64());
            }
        }
        rows.push((name.to_string(), samples));
        Ok(())
    };
    timed(KILN, &mut || {
        let mut r = LayerReader::new(std::fs::File::open(&blob)?)?;
        apply_layer(&mut r, &out, &ApplyOptions::default())?;
        let d = r.finish()?;
        anyhow::ensure!(
            d.digest == layer.digest && d.diff_id == layer.diff_id,
            "digest mismatch"
        );
        Ok(())
    })?;
    let tar_cmd = format!("tar -xzf {} -C {}", shell_quote(&blob), shell_quote(&out));
    timed("tar -xzf", &mut || shell(&tar_cmd).map(drop))?;
    if shell("command -v umoci").is_ok() {
        let bundle = out.join("bundle");
        let umoci_cmd = format!(
            "umoci unpack --image {}:bench {}",
            shell_quote(&store.oci_dir()),
            shell_quote(&bundle)
        );
        timed("umoci unpack (whole image)", &mut || {
            shell(&umoci_cmd).map(drop)
        })?;
    }

    let mut mbs = std::collections::BTreeMap::new();
    for (name, mut samples) in rows {
        let med = median(&mut samples);
        let rate = tree.bytes as f64 / 1e6 / med;
        mbs.insert(name.clone(), rate);
        report.row(name, &[("median_s", med), ("mb_per_s", rate)]);
    }
    let kiln = mbs.get(KILN).copied().unwrap_or(f64::NAN);
    if let Some(t) = mbs.get("tar -xzf") {
        report
            .summary
            .insert("kiln MB/s / tar -xzf MB/s".into(), kiln / t);
    }
    if let Some(u) = mbs.get("umoci unpack (whole image)") {
        report
            .summary
            .insert("kiln MB/s / umoci unpack MB/s".into(), kiln / u);
    }
    let _ = std::fs::remove_dir_all(&out);
    Ok(report)
}
