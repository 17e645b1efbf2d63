//! A scenario's results: rows of named measurements, printed as a table and saved as JSON.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde::Serialize;

/// Scenario knobs given on the command line as `--set key=value`.
#[derive(Debug, Default)]
pub struct Params(BTreeMap<String, String>);

impl Params {
    /// Parses `key=value` pairs.
    pub fn parse(pairs: &[String]) -> Result<Self> {
        let mut map = BTreeMap::new();
        for p in pairs {
            let Some((k, v)) = p.split_once('=') else {
                bail!("--set {p:?}: expected KEY=VALUE");
            };
            map.insert(k.to_string(), v.to_string());
        }
        Ok(Self(map))
    }

    /// A numeric knob, or its default.
    pub fn num<T: std::str::FromStr>(&self, key: &str, default: T) -> Result<T> {
        match self.0.get(key) {
            None => Ok(default),
            Some(v) => v
                .parse()
                .map_err(|_| anyhow::anyhow!("--set {key}={v}: not a number")),
        }
    }

    /// A string knob, or its default.
    pub fn str<'a>(&'a self, key: &str, default: &'a str) -> &'a str {
        self.0.get(key).map(String::as_str).unwrap_or(default)
    }
}

/// One measured line of a report: who was measured doing what, and the figures.
#[derive(Debug, Serialize)]
pub struct Row {
    /// What was measured, e.g. "kiln layer (gzip)".
    pub name: String,
    /// Named figures, e.g. "median_ms" → 12.3, "mb_per_s" → 250.0.
    pub figures: BTreeMap<String, f64>,
}

/// The result of one scenario run.
#[derive(Debug, Serialize)]
pub struct Report {
    /// Scenario name.
    pub scenario: String,
    /// Free-form facts about the run (sizes, versions, host).
    pub context: BTreeMap<String, String>,
    /// The measurements.
    pub rows: Vec<Row>,
    /// Derived comparisons, e.g. "kiln/runc median ratio" → 0.4.
    pub summary: BTreeMap<String, f64>,
}

impl Report {
    /// An empty report for a scenario.
    pub fn new(scenario: &str) -> Self {
        Self {
            scenario: scenario.to_string(),
            context: BTreeMap::new(),
            rows: Vec::new(),
            summary: BTreeMap::new(),
        }
    }

    /// Adds a row of figures.
    pub fn row(&mut self, name: impl Into<String>, figures: &[(&str, f64)]) {
        self.rows.push(Row {
            name: name.into(),
            figures: figures.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
        });
    }

    /// Prints the report as a plain-text table.
    pub fn print_table(&self) {
        println!("scenario: {}", self.scenario);
        for (k, v) in &self.context {
            println!("  {k}: {v}");
        }
        let width = self.rows.iter().map(|r| r.name.len()).max().unwrap_or(0);
        for r in &self.rows {
            let figs: Vec<String> = r
                .figures
                .iter()
                .map(|(k, v)| format!("{k}={v:.2}"))
                .collect();
            println!("  {:width$}  {}", r.name, figs.join("  "));
        }
        for (k, v) in &self.summary {
            println!("  => {k}: {v:.3}");
        }
    }

    /// Writes the report as JSON, creating the parent directory.
    pub fn write_json(&self, path: &Path) -> Result<()> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let text = serde_json::to_string_pretty(self)?;
        std::fs::write(path, text)?;
        Ok(())
    }
}

/// Median of a sample (sorts it).
pub fn median(samples: &mut [f64]) -> f64 {
    if samples.is_empty() {
        return f64::NAN;
    }
    samples.sort_by(|a, b| a.total_cmp(b));
    let n = samples.len();
    if n % 2 == 1 {
        samples[n / 2]
    } else {
        (samples[n / 2 - 1] + samples[n / 2]) / 2.0
    }
}

/// A duration in milliseconds.
pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
