//! The names kiln accepts for services, relationships and environments, and interface names.

use sha2::{Digest, Sha256};

use crate::error::PlanError;

/// Longest service, relationship or environment name.
const MAX_NAME: usize = 63;
/// Longest interface name the kernel takes (IFNAMSIZ - 1).
const MAX_IFNAME: usize = 15;
/// Interface names the kernel or sysctl tree already use.
const RESERVED_IFNAMES: &[&str] = &["lo", "all", "default"];

/// Checks a name used as a path component, a hosts entry and an interface name seed.
pub(crate) fn validate(what: &'static str, name: &str) -> Result<(), PlanError> {
    let bad = |why| {
        Err(PlanError::InvalidName {
            what,
            name: name.to_string(),
            why,
        })
    };
    if name.is_empty() {
        return bad("empty");
    }
    if name.len() > MAX_NAME {
        return bad("longer than 63 characters");
    }
    if !name.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        return bad("must start with a letter or digit");
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return bad("only letters, digits, '-' and '_' are allowed");
    }
    Ok(())
}

/// The interface name, inside a service's namespace, of its link to `peer`: the peer's name
/// when it fits, else a prefix of it and a short hash.
pub(crate) fn ifname_for(peer: &str) -> String {
    if peer.len() <= MAX_IFNAME && !RESERVED_IFNAMES.contains(&peer) {
        return peer.to_string();
    }
    let digest = Sha256::digest(peer.as_bytes());
    let prefix: String = peer.chars().take(10).collect();
    format!("{prefix}-{:02x}{:02x}", digest[0], digest[1])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        assert!(validate("service", "app-1_x").is_ok());
        for bad in ["", "-a", "a.b", "a/b", "a b", &"x".repeat(64)] {
            let err = validate("service", bad).unwrap_err().to_string();
            assert!(err.contains("invalid service name"), "{err}");
        }
    }

    #[test]
    fn ifnames_fit_and_avoid_reserved() {
        assert_eq!(ifname_for("db"), "db");
        let long = ifname_for("a-very-long-service-name");
        assert!(long.len() <= MAX_IFNAME, "{long}");
        assert!(long.starts_with("a-very-lon-"));
        assert_ne!(ifname_for("lo"), "lo");
        assert_ne!(
            ifname_for("a-very-long-service-name-1"),
            ifname_for("a-very-long-service-name-2")
        );
    }
}
