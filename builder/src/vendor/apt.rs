//! Dependency resolution through the host's apt, with a private, empty dpkg status.
//!
//! apt is the interface here: `apt-get -s install` computes the closure as if nothing were
//! installed (except the packages a recipe omits, which are written into the private status
//! as installed), and `apt-cache show` gives each package's file name and sha256.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use super::error::{io_err, Result, VendorError};

/// One package of a resolved closure, as apt's index describes it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub struct Package {
    /// Package name.
    pub name: String,
    /// Exact version.
    pub version: String,
    /// Architecture (amd64, all, ...).
    pub arch: String,
    /// sha256 of the .deb from apt's index.
    pub sha256: String,
    /// Size of the .deb in bytes.
    pub size: u64,
}

/// Resolves the closure of `install` with `omit` counted as installed, using scratch space in
/// `scratch` (a private dpkg status and apt cache; the status-independent part of apt's cache is
/// kept in `scratch`'s parent, so resolutions of one build share it). Returns packages sorted by
/// name.
pub fn resolve(
    recipe: &str,
    install: &[String],
    omit: &[String],
    scratch: &Path,
) -> Result<Vec<Package>> {
    std::fs::create_dir_all(scratch.join("cache")).map_err(io_err("mkdir", scratch))?;
    let status = scratch.join("status");
    std::fs::write(&status, "").map_err(io_err("write", &status))?;
    let omitted = if omit.is_empty() {
        Vec::new()
    } else {
        show(recipe, omit, scratch)?
    };
    let mut text = String::new();
    for st in &omitted {
        for (k, v) in st {
            if matches!(
                k.as_str(),
                "Package" | "Version" | "Architecture" | "Multi-Arch" | "Provides"
            ) {
                text.push_str(&format!("{k}: {v}\n"));
            }
        }
        text.push_str("Status: install ok installed\n\n");
    }
    std::fs::write(&status, text).map_err(io_err("write", &status))?;

    let mut cmd = apt(&["apt-get", "-s", "install"], scratch);
    cmd.args(install);
    let out = run(cmd, recipe)?;
    let mut wanted = Vec::new();
    for line in out.lines() {
        // "Inst libc6 (2.36-9+deb12u14 Debian:12.15/oldstable [amd64])"
        let Some(rest) = line.strip_prefix("Inst ") else {
            continue;
        };
        let mut it = rest.split_whitespace();
        let (Some(name), Some(ver)) = (it.next(), it.next()) else {
            continue;
        };
        let arch = rest
            .rsplit('[')
            .next()
            .unwrap_or("")
            .trim_end_matches([']', ')']);
        wanted.push(format!("{name}:{arch}={}", ver.trim_start_matches('(')));
    }
    let mut pkgs = BTreeMap::new();
    for st in show(recipe, &wanted, scratch)? {
        let get = |k: &str| st.get(k).cloned().unwrap_or_default();
        let (name, version) = (get("Package"), get("Version"));
        let sha256 = get("SHA256");
        if sha256.len() != 64 || !sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(VendorError::AptIndex {
                package: name,
                version,
                reason: "no SHA256 field".into(),
            });
        }
        let size = get("Size").parse().unwrap_or(0);
        pkgs.entry(name.clone()).or_insert(Package {
            name,
            version,
            arch: get("Architecture"),
            sha256,
            size,
        });
    }
    Ok(pkgs.into_values().collect())
}

/// `apt-cache show` of exact package specs, one stanza each (the first when a version is in
/// several archives).
fn show(recipe: &str, specs: &[String], scratch: &Path) -> Result<Vec<BTreeMap<String, String>>> {
    if specs.is_empty() {
        return Ok(Vec::new());
    }
    let cmd = |specs: &[String]| {
        let mut c = apt(&["apt-cache", "show", "--no-all-versions"], scratch);
        c.args(specs);
        c
    };
    let out = match run(cmd(specs), recipe) {
        Ok(out) => out,
        Err(e) => {
            // Name the package apt does not know: ask for each one alone.
            for s in specs {
                if run(cmd(std::slice::from_ref(s)), recipe).is_err() {
                    let name = s.split([':', '=']).next().unwrap_or(s).to_string();
                    return Err(VendorError::UnknownPackage {
                        name,
                        recipe: recipe.to_string(),
                    });
                }
            }
            return Err(e);
        }
    };
    let mut seen = std::collections::BTreeSet::new();
    let mut stanzas = Vec::new();
    for st in parse_stanzas(&out) {
        let key = (st.get("Package").cloned(), st.get("Version").cloned());
        if seen.insert(key) {
            stanzas.push(st);
        }
    }
    Ok(stanzas)
}

/// Parses deb822 stanzas (continuation lines appended to the field).
fn parse_stanzas(text: &str) -> Vec<BTreeMap<String, String>> {
    let mut out = Vec::new();
    let mut cur: BTreeMap<String, String> = BTreeMap::new();
    let mut last: Option<String> = None;
    for line in text.lines() {
        if line.trim().is_empty() {
            if !cur.is_empty() {
                out.push(std::mem::take(&mut cur));
            }
            last = None;
        } else if line.starts_with([' ', '\t']) {
            if let Some(k) = &last {
                if let Some(v) = cur.get_mut(k) {
                    v.push('\n');
                    v.push_str(line.trim());
                }
            }
        } else if let Some((k, v)) = line.split_once(':') {
            cur.insert(k.to_string(), v.trim().to_string());
            last = Some(k.to_string());
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// An apt command with the private status/cache of `scratch`, no recommends, no locking.
pub(crate) fn apt(argv: &[&str], scratch: &Path) -> Command {
    let mut c = Command::new(argv[0]);
    c.env("LC_ALL", "C")
        .env("DEBIAN_FRONTEND", "noninteractive");
    let opt = |c: &mut Command, kv: String| {
        c.arg("-o").arg(kv);
    };
    opt(
        &mut c,
        format!("Dir::State::status={}", scratch.join("status").display()),
    );
    opt(
        &mut c,
        format!("Dir::Cache={}", scratch.join("cache").display()),
    );
    opt(
        &mut c,
        format!(
            "Dir::Cache::pkgcache={}",
            scratch.join("cache/pkgcache.bin").display()
        ),
    );
    let src_cache = scratch.parent().unwrap_or(scratch).join("srcpkgcache.bin");
    opt(
        &mut c,
        format!("Dir::Cache::srcpkgcache={}", src_cache.display()),
    );
    opt(&mut c, "APT::Install-Recommends=false".into());
    opt(&mut c, "APT::Install-Suggests=false".into());
    opt(&mut c, "APT::Sandbox::User=root".into());
    opt(&mut c, "Debug::NoLocking=true".into());
    c.args(&argv[1..]);
    c
}

/// Runs an apt command; maps "Unable to locate package X" to `UnknownPackage`.
pub(crate) fn run(mut cmd: Command, recipe: &str) -> Result<String> {
    let program = cmd.get_program().to_string_lossy().into_owned();
    let command = std::iter::once(program.clone())
        .chain(cmd.get_args().map(|a| a.to_string_lossy().into_owned()))
        .collect::<Vec<_>>()
        .join(" ");
    let out = cmd
        .output()
        .map_err(|source| VendorError::AptSpawn { program, source })?;
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    for line in stderr.lines() {
        let pat = "Unable to locate package ";
        if let Some(i) = line.find(pat) {
            let name = line[i + pat.len()..].trim().to_string();
            return Err(VendorError::UnknownPackage {
                name,
                recipe: recipe.to_string(),
            });
        }
        if line.contains("has no installation candidate") {
            let name = line.split('\'').nth(1).unwrap_or(line).to_string();
            return Err(VendorError::UnknownPackage {
                name,
                recipe: recipe.to_string(),
            });
        }
    }
    if !out.status.success() {
        return Err(VendorError::AptFailed {
            command,
            status: out.status.to_string(),
            stderr: stderr.trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stanzas_parse_with_continuations() {
        let s = parse_stanzas("Package: a\nDescription: x\n y\n\nPackage: b\nSHA256: 00\n");
        assert_eq!(s.len(), 2);
        assert_eq!(s[0]["Description"], "x\ny");
        assert_eq!(s[1]["SHA256"], "00");
    }
}
