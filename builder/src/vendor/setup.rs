//! What maintainer scripts would have done, done declaratively: the root skeleton (merged /usr,
//! mount points, base users), recipe users, directories, symlinks and files.

use std::path::{Path, PathBuf};

use super::error::{Result, VendorError};
use super::recipe::{parse_mode, LoadedRecipe};
use super::unpack::{LayerDir, Meta, MERGED_USR};

const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\n\
daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin\n\
bin:x:2:2:bin:/bin:/usr/sbin/nologin\n\
sys:x:3:3:sys:/dev:/usr/sbin/nologin\n\
www-data:x:33:33:www-data:/var/www:/usr/sbin/nologin\n\
nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n";

const GROUP: &str = "root:x:0:\ndaemon:x:1:\nbin:x:2:\nsys:x:3:\nadm:x:4:\ntty:x:5:\n\
staff:x:50:\nwww-data:x:33:\nnogroup:x:65534:\n";

const NSSWITCH: &str = "passwd: files\ngroup: files\nshadow: files\nhosts: files dns\n\
networks: files\nprotocols: files\nservices: files\n";

/// Writes the root skeleton every image starts from into the first layer.
pub fn skeleton(layer: &mut LayerDir) -> Result<()> {
    let root = layer.root().to_path_buf();
    let err = |rel: &str| {
        let p = root.join(rel);
        move |e: std::io::Error| VendorError::Io {
            op: "write skeleton",
            path: p,
            source: e,
        }
    };
    for (d, mode) in [
        ("usr", 0o755),
        ("usr/bin", 0o755),
        ("usr/sbin", 0o755),
        ("usr/lib", 0o755),
        ("usr/lib64", 0o755),
        ("etc", 0o755),
        ("dev", 0o755),
        ("proc", 0o555),
        ("sys", 0o555),
        ("run", 0o755),
        ("tmp", 0o1777),
        ("root", 0o700),
        ("home", 0o755),
        ("var", 0o755),
        ("var/tmp", 0o1777),
        ("var/lib", 0o755),
        ("var/log", 0o755),
        ("var/cache", 0o755),
    ] {
        layer.dir(d, Meta::root(mode)).map_err(err(d))?;
    }
    for top in MERGED_USR {
        if matches!(top, "lib32" | "libx32") {
            continue;
        }
        layer
            .symlink(top, &format!("usr/{top}"), Meta::root(0o777))
            .map_err(err(top))?;
    }
    layer
        .symlink("var/run", "/run", Meta::root(0o777))
        .map_err(err("var/run"))?;
    for (f, text) in [
        ("etc/passwd", PASSWD),
        ("etc/group", GROUP),
        ("etc/nsswitch.conf", NSSWITCH),
    ] {
        layer
            .file(f, &mut text.as_bytes(), Meta::root(0o644))
            .map_err(err(f))?;
    }
    Ok(())
}

/// Reads `rel` from the topmost of `layers` (top first) that has it.
fn read_layered(layers: &[&Path], rel: &str) -> Option<String> {
    layers
        .iter()
        .find_map(|l| std::fs::read_to_string(l.join(rel)).ok())
}

/// Looks up users and groups by name in a layered /etc/passwd.
#[derive(Debug, Clone, Default)]
pub struct Users {
    passwd: String,
}

impl Users {
    /// Reads /etc/passwd from the layers (top first).
    pub fn read(layers: &[&Path]) -> Self {
        Self {
            passwd: read_layered(layers, "etc/passwd").unwrap_or_default(),
        }
    }

    /// uid, gid and home of `user` (a name or a number).
    pub fn lookup(&self, user: &str) -> Option<(u32, u32, String)> {
        if let Ok(n) = user.parse::<u32>() {
            return Some((n, n, "/".into()));
        }
        self.passwd.lines().find_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f.len() >= 7 && f[0] == user)
                .then(|| Some((f[2].parse().ok()?, f[3].parse().ok()?, f[5].to_string())))?
        })
    }
}

/// Applies a recipe's users, dirs, symlinks and files to `layer`, reading what lies below from
/// `lower` (top first).
pub fn apply(recipe: &LoadedRecipe, layer: &mut LayerDir, lower: &[PathBuf]) -> Result<()> {
    let r = &recipe.recipe;
    let invalid = |key: &str, reason: String| VendorError::RecipeInvalid {
        path: recipe.path.clone(),
        key: key.into(),
        reason,
    };
    let root = layer.root().to_path_buf();
    let io = |p: &str| {
        let path = root.join(p.trim_start_matches('/'));
        move |source: std::io::Error| VendorError::Io {
            op: "write",
            path,
            source,
        }
    };
    let norm = |key: &str, p: &str| -> Result<String> {
        super::unpack::normalize(p)
            .ok()
            .flatten()
            .ok_or_else(|| invalid(key, format!("bad path {p:?}")))
    };
    let stack = |layer: &LayerDir| -> Vec<PathBuf> {
        std::iter::once(layer.root().to_path_buf())
            .chain(lower.iter().cloned())
            .collect()
    };
    if !r.users.is_empty() {
        let all = stack(layer);
        let refs: Vec<&Path> = all.iter().map(|p| p.as_path()).collect();
        let mut passwd = read_layered(&refs, "etc/passwd").unwrap_or_default();
        let mut group = read_layered(&refs, "etc/group").unwrap_or_default();
        for u in &r.users {
            let gid = u.gid.unwrap_or(u.uid);
            let taken =
                |text: &str, name: &str| text.lines().any(|l| l.split(':').next() == Some(name));
            if taken(&passwd, &u.name) {
                return Err(invalid("users", format!("user {} already exists", u.name)));
            }
            passwd.push_str(&format!(
                "{}:x:{}:{gid}::{}:{}\n",
                u.name, u.uid, u.home, u.shell
            ));
            if !taken(&group, &u.name) {
                group.push_str(&format!("{}:x:{gid}:\n", u.name));
            }
        }
        layer
            .file("etc/passwd", &mut passwd.as_bytes(), Meta::root(0o644))
            .map_err(io("etc/passwd"))?;
        layer
            .file("etc/group", &mut group.as_bytes(), Meta::root(0o644))
            .map_err(io("etc/group"))?;
    }
    let all = stack(layer);
    let refs: Vec<&Path> = all.iter().map(|p| p.as_path()).collect();
    let users = Users::read(&refs);
    let owner = |key: &str, who: &str| {
        users
            .lookup(who)
            .ok_or_else(|| invalid(key, format!("unknown user {who:?}")))
    };
    for d in &r.dirs {
        let (uid, gid, _) = owner("dirs.owner", &d.owner)?;
        let mode = parse_mode(&d.mode).map_err(|e| invalid("dirs.mode", e))?;
        let rel = &norm("dirs.path", &d.path)?;
        layer
            .dir(
                rel,
                Meta {
                    mode,
                    uid,
                    gid,
                    mtime: 0,
                },
            )
            .map_err(io(rel))?;
    }
    for s in &r.symlinks {
        let rel = &norm("symlinks.path", &s.path)?;
        layer
            .symlink(rel, &s.target, Meta::root(0o777))
            .map_err(io(rel))?;
    }
    for (f, content) in r.files.iter().zip(&recipe.file_contents) {
        let (uid, gid, _) = owner("files.owner", &f.owner)?;
        let mode = parse_mode(&f.mode).map_err(|e| invalid("files.mode", e))?;
        let rel = &norm("files.path", &f.path)?;
        layer
            .file(
                rel,
                &mut content.as_slice(),
                Meta {
                    mode,
                    uid,
                    gid,
                    mtime: 0,
                },
            )
            .map_err(io(rel))?;
    }
    Ok(())
}
