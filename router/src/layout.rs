//! Where the ingress and each environment's router files live, and the names that may become
//! path components.
//!
//! ```text
//! $KILN_RUNTIME/ingress/ingress.sock    the ingress's control socket
//! $KILN_RUNTIME/ingress/ingress.json    the ingress's record (pid, listen addresses, domain)
//! $KILN_RUNTIME/ingress/ingress.lock    flock held by the running ingress
//! $KILN_RUNTIME/ingress/ingress.log     the ingress's stdout/stderr
//! $KILN_RUNTIME/ingress/handoff.json    what a restarting ingress hands the new one
//! $KILN_RUNTIME/envs/<env>/router.json  the environment's registration (pid, its own port)
//! $KILN_RUNTIME/envs/<env>/routes.json  the routes the last deploy declared
//! $KILN_RUNTIME/envs/<env>/access.log   one JSON line per request
//! ```
//!
//! The environment directory and its name rules are defined here, the lowest crate that
//! writes into it; kiln-deploy re-exports them with the rest of the layout.

use std::path::{Path, PathBuf};

use crate::error::RouterError;

/// Longest environment or volume name.
const MAX_NAME: usize = 63;

/// The directory of everything an environment has under the runtime root.
pub fn env_dir(runtime_root: &Path, env: &str) -> PathBuf {
    runtime_root.join("envs").join(env)
}

/// The ingress's directory.
pub fn ingress_dir(runtime_root: &Path) -> PathBuf {
    runtime_root.join("ingress")
}

/// The ingress's control socket.
pub fn ingress_socket(runtime_root: &Path) -> PathBuf {
    ingress_dir(runtime_root).join("ingress.sock")
}

/// The state a restarting ingress hands to the new one.
pub fn handoff_file(runtime_root: &Path) -> PathBuf {
    ingress_dir(runtime_root).join("handoff.json")
}

/// The ingress's record.
pub fn ingress_record(runtime_root: &Path) -> PathBuf {
    ingress_dir(runtime_root).join("ingress.json")
}

/// The lock the running ingress holds for its whole life.
pub fn ingress_lock(runtime_root: &Path) -> PathBuf {
    ingress_dir(runtime_root).join("ingress.lock")
}

/// The ingress's log (its stdout and stderr).
pub fn ingress_log(runtime_root: &Path) -> PathBuf {
    ingress_dir(runtime_root).join("ingress.log")
}

/// An environment's registration with the ingress ([`crate::RouterInfo`]).
pub fn router_record(runtime_root: &Path, env: &str) -> PathBuf {
    env_dir(runtime_root, env).join("router.json")
}

/// The routes an environment's last deploy declared.
pub fn routes_file(runtime_root: &Path, env: &str) -> PathBuf {
    env_dir(runtime_root, env).join("routes.json")
}

/// An environment's access log (JSON lines).
pub fn access_log(runtime_root: &Path, env: &str) -> PathBuf {
    env_dir(runtime_root, env).join("access.log")
}

/// Checks an environment name: letters, digits, '-' and '_', starting with a letter or digit.
pub fn validate_env(env: &str) -> Result<(), RouterError> {
    validate("environment", env)
}

/// Checks a volume name (same rules as an environment name, plus '%' and '.' inside).
pub fn validate_volume(name: &str) -> Result<(), RouterError> {
    validate("volume", name)
}

/// Checks `name` as a single, harmless path component.
fn validate(what: &'static str, name: &str) -> Result<(), RouterError> {
    let bad = |why| {
        Err(RouterError::InvalidName {
            what,
            name: name.to_string(),
            why,
        })
    };
    let extra: &[char] = if what == "volume" {
        &['-', '_', '%', '.']
    } else {
        &['-', '_']
    };
    if name.is_empty() {
        return bad("empty");
    }
    if name.len() > MAX_NAME * 4 {
        return bad("too long");
    }
    if what != "volume" && name.len() > MAX_NAME {
        return bad("longer than 63 characters");
    }
    if !name.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        return bad("must start with a letter or digit");
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || extra.contains(&c))
    {
        return bad("only letters, digits, '-' and '_' are allowed");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_are_not_one_harmless_component_are_refused() {
        for bad in ["", "..", "a/b", "-x", ".hidden", "a b", &"x".repeat(64)] {
            assert!(validate_env(bad).is_err(), "{bad:?} accepted");
        }
        for good in ["main", "pr-42", "staging_2"] {
            validate_env(good).expect("valid env");
        }
        validate_volume("web.app%2Fdata").expect("valid volume");
        assert!(validate_volume("..").is_err());
    }
}
