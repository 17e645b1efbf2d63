//! A throwaway git repository holding a copy of a project, for the scenarios that build or
//! deploy one.

use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context, Result};

/// A git repository holding a copy of the project folder, one commit on `main`.
pub fn make_repo(project: &Path, repo: &Path) -> Result<()> {
    std::fs::create_dir_all(repo)?;
    let status = Command::new("cp")
        .arg("-a")
        .arg(format!("{}/.", project.display()))
        .arg(repo)
        .status()?;
    if !status.success() {
        bail!("copying {} failed", project.display());
    }
    git(repo, &["init", "-q", "-b", "main"])?;
    commit(repo, "bench")
}

/// Commits everything in the work tree.
pub fn commit(repo: &Path, msg: &str) -> Result<()> {
    git(repo, &["add", "-A"])?;
    git(repo, &["commit", "-q", "-m", msg])
}

/// Runs git in `repo` as the bench's author.
fn git(repo: &Path, args: &[&str]) -> Result<()> {
    let out = Command::new("git")
        .args(args)
        .current_dir(repo)
        .env("GIT_AUTHOR_NAME", "bench")
        .env("GIT_AUTHOR_EMAIL", "bench@example.com")
        .env("GIT_COMMITTER_NAME", "bench")
        .env("GIT_COMMITTER_EMAIL", "bench@example.com")
        .output()
        .context("running git")?;
    if !out.status.success() {
        bail!(
            "git {args:?}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}
