//! What the kernel says is mounted: /proc/self/mountinfo, read rather than trusted from records.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use crate::error::NetError;

/// One mount: where it is and its filesystem type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    /// The mount point.
    pub point: PathBuf,
    /// The filesystem type ("nsfs" for a namespace file).
    pub fstype: String,
}

/// Every mount of this process's mount namespace.
pub fn mounts() -> Result<Vec<Mount>, NetError> {
    let path = Path::new("/proc/self/mountinfo");
    let text = std::fs::read_to_string(path).map_err(|e| NetError::io("reading", path, e))?;
    Ok(text.lines().filter_map(parse_line).collect())
}

/// Names of the namespace files mounted directly inside `dir` (an env dir's services).
pub fn mounted_in(dir: &Path) -> Result<BTreeSet<String>, NetError> {
    let Ok(dir) = dir.canonicalize() else {
        return Ok(BTreeSet::new());
    };
    Ok(mounts()?
        .into_iter()
        .filter(|m| m.fstype == "nsfs" && m.point.parent() == Some(dir.as_path()))
        .filter_map(|m| Some(m.point.file_name()?.to_str()?.to_string()))
        .collect())
}

/// Parses one mountinfo line: mount point is field 5, fstype follows the " - " separator.
fn parse_line(line: &str) -> Option<Mount> {
    let (left, right) = line.split_once(" - ")?;
    let point = left.split(' ').nth(4)?;
    let fstype = right.split(' ').next()?;
    Some(Mount {
        point: PathBuf::from(unescape(point)),
        fstype: fstype.to_string(),
    })
}

/// Undoes mountinfo's octal escapes (`\040` for a space and so on).
fn unescape(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes.get(i + 1..i + 4).and_then(|d| {
            let text = std::str::from_utf8(d).ok()?;
            u8::from_str_radix(text, 8).ok()
        });
        match (bytes[i], octal) {
            (b'\\', Some(b)) => {
                out.push(b);
                i += 4;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_mountinfo_lines() {
        let m = parse_line(
            "612 27 0:4 net:[4026532] /run/kiln/netns/my\\040env/db rw shared:1 - nsfs nsfs rw",
        )
        .unwrap();
        assert_eq!(m.point, PathBuf::from("/run/kiln/netns/my env/db"));
        assert_eq!(m.fstype, "nsfs");
    }
}
