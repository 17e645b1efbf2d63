//! The commands of the steps that run: global dependencies, the flavor's install, the hook.

use std::collections::BTreeMap;

use crate::config::{Flavor, PackageManager};
use crate::project::LockFile;

/// pip, installing as root into the image's Python (Debian marks it externally managed).
const PIP: [&str; 7] = [
    "python3",
    "-m",
    "pip",
    "install",
    "--no-cache-dir",
    "--break-system-packages",
    "--root-user-action=ignore",
];

/// composer, installing what composer.lock pins (no dev packages, no scripts: the code is not
/// there yet) into `vendor/`, as root, its home and cache in the step's `/dev/shm` (a tmpfs, so
/// not in the layer). The autoloader is not optimized: it finds the app's classes when the code
/// layer is added.
const COMPOSER: [&str; 10] = [
    "env",
    "COMPOSER_ALLOW_SUPERUSER=1",
    "COMPOSER_HOME=/dev/shm/composer",
    "composer",
    "install",
    "--no-dev",
    "--no-interaction",
    "--no-progress",
    "--no-scripts",
    "--prefer-dist",
];

/// The commands installing the declared global tools, one per package manager.
pub(crate) fn dependency_commands(
    dependencies: &BTreeMap<PackageManager, Vec<String>>,
) -> Vec<Vec<String>> {
    dependencies
        .iter()
        .filter(|(_, packages)| !packages.is_empty())
        .map(|(manager, packages)| {
            let mut argv: Vec<String> = match manager {
                PackageManager::Pip => PIP.iter().map(|s| s.to_string()).collect(),
                PackageManager::Npm => ["npm", "install", "--global", "--no-audit", "--no-fund"]
                    .iter()
                    .map(|s| s.to_string())
                    .collect(),
            };
            argv.push("--".to_string());
            argv.extend(packages.iter().cloned());
            argv
        })
        .collect()
}

/// The flavor's install command, or none when there is nothing to install (no flavor, or a
/// requirements.txt that lists no requirement).
pub(crate) fn flavor_command(flavor: Flavor, lock_files: &[LockFile]) -> Option<Vec<String>> {
    match flavor {
        Flavor::None => None,
        Flavor::Pip => {
            let requirements = lock_files.iter().find(|f| f.path == "requirements.txt")?;
            if !lists_requirements(&requirements.data) {
                return None;
            }
            let mut argv: Vec<String> = PIP.iter().map(|s| s.to_string()).collect();
            argv.extend(["-r".to_string(), "requirements.txt".to_string()]);
            Some(argv)
        }
        Flavor::Npm => Some(
            // npm's cache in the step's /dev/shm (a tmpfs), not in the layer.
            [
                "npm",
                "ci",
                "--no-audit",
                "--no-fund",
                "--cache=/dev/shm/npm-cache",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect(),
        ),
        Flavor::Composer => Some(COMPOSER.iter().map(|s| s.to_string()).collect()),
    }
}

/// Whether a requirements file has a line that is not blank or a comment.
fn lists_requirements(data: &[u8]) -> bool {
    String::from_utf8_lossy(data).lines().any(|line| {
        let line = line.split_once('#').map_or(line, |(before, _)| before);
        !line.trim().is_empty()
    })
}

/// A shell command, as `/bin/sh -c`.
pub(crate) fn shell(command: &str) -> Vec<String> {
    vec!["/bin/sh".to_string(), "-c".to_string(), command.to_string()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn composer_installs_the_lock_without_dev_packages_or_scripts() {
        let argv = flavor_command(Flavor::Composer, &[]).unwrap();
        assert_eq!(argv[3..5], ["composer", "install"]);
        for flag in ["--no-dev", "--no-interaction", "--no-scripts"] {
            assert!(argv.iter().any(|a| a == flag), "{flag}");
        }
        // Its home and cache are not in the layer.
        assert!(argv.iter().any(|a| a == "COMPOSER_HOME=/dev/shm/composer"));
    }

    #[test]
    fn comments_and_blank_lines_are_not_requirements() {
        assert!(!lists_requirements(b"# nothing\n\n   # still nothing\n"));
        assert!(lists_requirements(b"# web\nredis==5.0 # pinned\n"));
    }
}
