//! The build half of [`deploy_commit`](crate::deploy_commit): a revision of a repository
//! loaded as a project and built into one image per app.

use std::path::Path;

use kiln_builder::exec::{BuildReport, Builder, Progress};
use kiln_builder::plan;
use kiln_builder::project::Project;
use kiln_builder::source::GitRepo;
use kiln_overlay::Store;

use super::error::DeployError;

/// Which revision of a repository to build.
#[derive(Debug, Clone, Default)]
pub struct Revision {
    /// Revision (sha, branch, tag); default: `branch` if given, else HEAD.
    pub commit: Option<String>,
    /// Branch name the build is for.
    pub branch: Option<String>,
    /// Pull-request build: (base, head) — head merged onto base.
    pub pr: Option<(String, String)>,
    /// Pull-request title.
    pub pr_title: Option<String>,
}

/// Loads the project at `rev` from the repository at `repo_path` and builds every app (cache
/// hits cost nothing), reporting to `progress`.
pub fn build_revision(
    store: &Store,
    runtime_root: &Path,
    repo_path: &Path,
    rev: &Revision,
    progress: &mut dyn Progress,
) -> Result<(Project, BuildReport), DeployError> {
    let repo = GitRepo::open(repo_path)?;
    let mut project = match &rev.pr {
        Some((base, head)) => {
            Project::load_pull_request(&repo, base, head, rev.pr_title.as_deref())?
        }
        None => {
            let r = rev
                .commit
                .as_deref()
                .or(rev.branch.as_deref())
                .unwrap_or("HEAD");
            Project::load_at(&repo, r)?
        }
    };
    if let Some(b) = &rev.branch {
        project.revision.branch = Some(b.clone());
    }
    let builder = Builder::new(store.clone(), runtime_root);
    let bases = builder.base_digests(&project)?;
    let plan = plan::plan(&project, &bases)?;
    let report = builder.build(&repo, &plan, progress)?;
    Ok((project, report))
}
