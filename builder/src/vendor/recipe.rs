//! The recipe schema (`vendor-images/<name>.toml`): packages, declarative setup, image config.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use super::error::{io_err, Result, VendorError};

/// One recipe as written in its TOML file.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Recipe {
    /// What the image is for.
    #[serde(default)]
    pub description: String,
    /// Another recipe whose packages form this image's first, shared layer.
    #[serde(default)]
    pub base: Option<String>,
    /// Packages to install (their dependency closure comes along).
    #[serde(default)]
    pub packages: Vec<String>,
    /// Packages counted as present without being installed (cuts dependencies a container never
    /// uses, e.g. dpkg, perl, adduser).
    #[serde(default)]
    pub omit: Vec<String>,
    /// Path patterns left out of this recipe's packages (`*` matches one path component; a
    /// pattern covers everything below it), on top of [`DEFAULT_EXCLUDE`].
    #[serde(default)]
    pub exclude: Vec<String>,
    /// Path patterns kept even though an exclude covers them, on top of [`DEFAULT_KEEP`].
    #[serde(default)]
    pub keep: Vec<String>,
    /// System users (and their group of the same name) to add to /etc/passwd and /etc/group.
    #[serde(default)]
    pub users: Vec<User>,
    /// Directories to create.
    #[serde(default)]
    pub dirs: Vec<DirStep>,
    /// Symlinks to create (what update-alternatives would do).
    #[serde(default)]
    pub symlinks: Vec<SymlinkStep>,
    /// Files to add.
    #[serde(default)]
    pub files: Vec<FileStep>,
    /// Files made by concatenating files of the image (what update-ca-certificates does).
    #[serde(default)]
    pub bundles: Vec<BundleStep>,
    /// Commands run at build time inside the image (no network), after everything above.
    #[serde(default)]
    pub run: Vec<RunStep>,
    /// The image configuration.
    #[serde(default)]
    pub config: ImageConfig,
}

/// A system user and its primary group.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct User {
    /// Login name (also the group name).
    pub name: String,
    /// Numeric uid (fixed in the recipe, so images are reproducible).
    pub uid: u32,
    /// Numeric gid; defaults to the uid.
    pub gid: Option<u32>,
    /// Home directory.
    #[serde(default = "default_home")]
    pub home: String,
    /// Login shell.
    #[serde(default = "default_shell")]
    pub shell: String,
}

/// A directory to create.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DirStep {
    /// Absolute path in the image.
    pub path: String,
    /// Octal mode, e.g. "0755".
    #[serde(default = "default_dir_mode")]
    pub mode: String,
    /// Owning user (a name from /etc/passwd or a number).
    #[serde(default = "default_owner")]
    pub owner: String,
}

/// A symlink to create.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SymlinkStep {
    /// Absolute path of the link in the image.
    pub path: String,
    /// What it points to (stored as written).
    pub target: String,
}

/// A file to add, with inline content or from a file beside the recipe.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FileStep {
    /// Absolute path in the image.
    pub path: String,
    /// The content, inline.
    pub content: Option<String>,
    /// A file relative to the recipes directory holding the content.
    pub source: Option<String>,
    /// Octal mode.
    #[serde(default = "default_file_mode")]
    pub mode: String,
    /// Owning user.
    #[serde(default = "default_owner")]
    pub owner: String,
}

/// A file made of every file under `dir` whose name ends with `suffix`, in path order.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BundleStep {
    /// Absolute path of the file to write.
    pub path: String,
    /// Absolute directory whose files are concatenated (recursively).
    pub dir: String,
    /// Only files whose name ends with this.
    #[serde(default)]
    pub suffix: String,
}

/// A command run inside the image at build time.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RunStep {
    /// argv; `argv[0]` is an absolute path inside the image.
    pub args: Vec<String>,
    /// User to run as.
    #[serde(default = "default_owner")]
    pub user: String,
}

/// The OCI image configuration a recipe sets.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ImageConfig {
    /// Environment (`KEY=value`); PATH defaults to Debian's.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Default user.
    pub user: Option<String>,
    /// Working directory.
    pub workdir: Option<String>,
    /// Entrypoint.
    #[serde(default)]
    pub entrypoint: Vec<String>,
    /// Default command.
    #[serde(default)]
    pub cmd: Vec<String>,
    /// Exposed ports, e.g. "6379/tcp".
    #[serde(default)]
    pub ports: Vec<String>,
    /// Extra labels.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Signal that stops the main process, e.g. "SIGQUIT".
    pub stop_signal: Option<String>,
}

/// Paths no package brings into an image: docs, man pages, locales, lintian overrides.
pub const DEFAULT_EXCLUDE: [&str; 8] = [
    "usr/share/doc",
    "usr/share/man",
    "usr/share/info",
    "usr/share/locale",
    "usr/share/lintian",
    "usr/share/linda",
    "usr/share/bug",
    "usr/share/menu",
];

/// Paths kept although excluded: each package's copyright file.
pub const DEFAULT_KEEP: [&str; 1] = ["usr/share/doc/*/copyright"];

impl Recipe {
    /// Exclude patterns: the defaults plus the recipe's.
    pub fn all_excludes(&self) -> Vec<String> {
        DEFAULT_EXCLUDE
            .iter()
            .map(|s| s.to_string())
            .chain(self.exclude.iter().cloned())
            .collect()
    }

    /// Whether the recipe has any setup step (users, dirs, symlinks, files, bundles, run).
    pub fn has_setup(&self) -> bool {
        !(self.users.is_empty()
            && self.dirs.is_empty()
            && self.symlinks.is_empty()
            && self.files.is_empty()
            && self.bundles.is_empty()
            && self.run.is_empty())
    }

    /// Keep patterns: the defaults plus the recipe's.
    pub fn all_keeps(&self) -> Vec<String> {
        DEFAULT_KEEP
            .iter()
            .map(|s| s.to_string())
            .chain(self.keep.iter().cloned())
            .collect()
    }
}

fn default_home() -> String {
    "/nonexistent".into()
}
fn default_shell() -> String {
    "/usr/sbin/nologin".into()
}
fn default_dir_mode() -> String {
    "0755".into()
}
fn default_file_mode() -> String {
    "0644".into()
}
fn default_owner() -> String {
    "root".into()
}

/// A recipe loaded from disk with its base and inline file contents, ready to build.
#[derive(Debug, Clone)]
pub struct LoadedRecipe {
    /// The recipe name (its file stem).
    pub name: String,
    /// The file it came from.
    pub path: PathBuf,
    /// The parsed recipe.
    pub recipe: Recipe,
    /// The base recipe, loaded the same way.
    pub base: Option<Box<LoadedRecipe>>,
    /// Contents of `files` entries, in order.
    pub file_contents: Vec<Vec<u8>>,
    /// sha256 over the recipe, its base and every file it adds.
    pub digest: String,
}

impl LoadedRecipe {
    /// Loads `<dir>/<name>.toml` (and its base, recursively).
    pub fn load(dir: &Path, name: &str) -> Result<Self> {
        Self::load_inner(dir, name, 0)
    }

    fn load_inner(dir: &Path, name: &str, depth: usize) -> Result<Self> {
        let path = dir.join(format!("{name}.toml"));
        if name.is_empty() || name.contains('/') || !path.is_file() {
            return Err(VendorError::RecipeNotFound {
                name: name.to_string(),
                path,
            });
        }
        let text = std::fs::read_to_string(&path).map_err(io_err("read", &path))?;
        let recipe: Recipe = toml::from_str(&text).map_err(|e| VendorError::RecipeParse {
            path: path.clone(),
            message: e.to_string(),
        })?;
        let invalid = |key: &str, reason: String| VendorError::RecipeInvalid {
            path: path.clone(),
            key: key.to_string(),
            reason,
        };
        validate(&recipe).map_err(|(k, r)| invalid(&k, r))?;
        let base = match &recipe.base {
            Some(_) if depth > 0 => {
                return Err(invalid(
                    "base",
                    "a base recipe cannot itself have a base".into(),
                ))
            }
            Some(b) => Some(Box::new(Self::load_inner(dir, b, depth + 1)?)),
            None => None,
        };
        if base.as_ref().is_some_and(|b| !b.recipe.run.is_empty()) {
            return Err(invalid(
                "base",
                "a base recipe cannot have run steps".into(),
            ));
        }
        let mut file_contents = Vec::new();
        for f in &recipe.files {
            file_contents.push(match (&f.content, &f.source) {
                (Some(c), None) => c.clone().into_bytes(),
                (None, Some(s)) => {
                    let p = dir.join(s);
                    std::fs::read(&p).map_err(io_err("read", p))?
                }
                _ => {
                    return Err(invalid(
                        "files",
                        format!("{}: give exactly one of content or source", f.path),
                    ))
                }
            });
        }
        let mut h = Sha256::new();
        h.update(b"kiln-vendor-recipe-v1\0");
        h.update(name.as_bytes());
        h.update([0]);
        h.update(text.as_bytes());
        for c in &file_contents {
            h.update((c.len() as u64).to_le_bytes());
            h.update(c);
        }
        if let Some(b) = &base {
            h.update(b.digest.as_bytes());
        }
        let digest = hex::encode(h.finalize());
        Ok(Self {
            name: name.to_string(),
            path,
            recipe,
            base,
            file_contents,
            digest,
        })
    }
}

/// Checks what serde cannot: absolute paths, octal modes, non-empty argv.
fn validate(r: &Recipe) -> Result<(), (String, String)> {
    let abs = |key: &str, p: &str| {
        if p.starts_with('/') && !p.split('/').any(|c| c == "..") {
            Ok(())
        } else {
            Err((
                key.to_string(),
                format!("{p:?} must be an absolute path without .."),
            ))
        }
    };
    for d in &r.dirs {
        abs("dirs.path", &d.path)?;
        parse_mode(&d.mode).map_err(|e| ("dirs.mode".to_string(), e))?;
    }
    for f in &r.files {
        abs("files.path", &f.path)?;
        parse_mode(&f.mode).map_err(|e| ("files.mode".to_string(), e))?;
    }
    for s in &r.symlinks {
        abs("symlinks.path", &s.path)?;
    }
    for b in &r.bundles {
        abs("bundles.path", &b.path)?;
        abs("bundles.dir", &b.dir)?;
    }
    for s in &r.run {
        match s.args.first() {
            Some(a) if a.starts_with('/') => {}
            _ => {
                return Err((
                    "run.args".into(),
                    "argv[0] must be an absolute path in the image".into(),
                ))
            }
        }
    }
    if r.packages.is_empty() && r.base.is_none() {
        return Err((
            "packages".into(),
            "a recipe needs packages or a base".into(),
        ));
    }
    Ok(())
}

/// Parses an octal mode string like "0755".
pub fn parse_mode(s: &str) -> Result<u32, String> {
    u32::from_str_radix(s.trim_start_matches("0o"), 8)
        .ok()
        .filter(|m| *m <= 0o7777)
        .ok_or_else(|| format!("{s:?} is not an octal mode"))
}

/// Names of every recipe (`*.toml`) in `dir`, sorted.
pub fn list(dir: &Path) -> Result<Vec<String>> {
    let mut names = Vec::new();
    for e in std::fs::read_dir(dir).map_err(io_err("read dir", dir))? {
        let e = e.map_err(io_err("read dir", dir))?;
        let p = e.path();
        if p.extension().is_some_and(|x| x == "toml") {
            if let Some(s) = p.file_stem().and_then(|s| s.to_str()) {
                names.push(s.to_string());
            }
        }
    }
    names.sort();
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir_with(files: &[(&str, &str)]) -> tempfile::TempDir {
        let d = tempfile::tempdir().expect("tempdir");
        for (n, t) in files {
            std::fs::write(d.path().join(n), t).expect("write");
        }
        d
    }

    #[test]
    fn unknown_keys_are_named_with_the_file() {
        let d = dir_with(&[("x.toml", "packages = [\"a\"]\npakages = [\"b\"]\n")]);
        let e = LoadedRecipe::load(d.path(), "x").unwrap_err().to_string();
        assert!(e.contains("x.toml") && e.contains("pakages"), "{e}");
    }

    #[test]
    fn digest_covers_the_base_and_added_files() {
        let d = dir_with(&[
            ("b.toml", "packages = [\"libc6\"]\n"),
            (
                "x.toml",
                "base = \"b\"\n[[files]]\npath = \"/etc/x\"\nsource = \"x.conf\"\n",
            ),
            ("x.conf", "one"),
        ]);
        let first = LoadedRecipe::load(d.path(), "x").unwrap().digest;
        assert_eq!(first, LoadedRecipe::load(d.path(), "x").unwrap().digest);
        std::fs::write(d.path().join("x.conf"), "two").unwrap();
        let second = LoadedRecipe::load(d.path(), "x").unwrap().digest;
        assert_ne!(first, second);
        std::fs::write(
            d.path().join("b.toml"),
            "packages = [\"libc6\", \"dash\"]\n",
        )
        .unwrap();
        assert_ne!(second, LoadedRecipe::load(d.path(), "x").unwrap().digest);
    }

    #[test]
    fn relative_paths_and_bad_modes_are_refused() {
        let d = dir_with(&[
            ("r.toml", "packages = [\"a\"]\n[[dirs]]\npath = \"var/x\"\n"),
            (
                "m.toml",
                "packages = [\"a\"]\n[[dirs]]\npath = \"/var/x\"\nmode = \"0999\"\n",
            ),
            (
                "base.toml",
                "packages = [\"a\"]\n[[run]]\nargs = [\"/bin/true\"]\n",
            ),
            ("on.toml", "base = \"base\"\n"),
        ]);
        for (name, key) in [("r", "dirs.path"), ("m", "dirs.mode"), ("on", "base")] {
            let e = LoadedRecipe::load(d.path(), name).unwrap_err().to_string();
            assert!(e.contains(key), "{name}: {e}");
        }
        let e = LoadedRecipe::load(d.path(), "nope")
            .unwrap_err()
            .to_string();
        assert!(e.contains("no recipe \"nope\""), "{e}");
    }
}
