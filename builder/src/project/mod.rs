//! A project at a commit: its validated kiln.toml and, for each app, the git tree of its source.

mod error;

use std::collections::BTreeMap;

pub use error::LoadError;

use crate::config::{self, Flavor, ProjectConfig, CONFIG_FILE};
use crate::source::{GitRepo, ObjectId};

/// Why a build runs: what `KILN_BUILD_TYPE` says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BuildType {
    /// A push to a branch.
    Branch,
    /// A pull request: head merged onto base.
    PullRequest,
    /// Promoting an already built commit to another environment.
    Promote,
}

impl BuildType {
    /// The value of `KILN_BUILD_TYPE`.
    pub fn as_str(self) -> &'static str {
        match self {
            BuildType::Branch => "branch",
            BuildType::PullRequest => "pullrequest",
            BuildType::Promote => "promote",
        }
    }
}

/// The two commits of a pull-request build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PullRequest {
    /// The commit merged onto.
    pub base: ObjectId,
    /// The commit of the pull request.
    pub head: ObjectId,
    /// Its title, for `KILN_PR_TITLE`, when the caller knows it.
    pub title: Option<String>,
}

/// What is built: a commit (or a pull-request merge) and how it is named.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revision {
    /// The commit built (for a pull request, its head), for `KILN_GIT_SHA` and the image tag.
    pub commit: ObjectId,
    /// The root tree built (for a pull request, the merge result).
    pub tree: ObjectId,
    /// The branch, for `KILN_GIT_BRANCH`, when known.
    pub branch: Option<String>,
    /// Why the build runs.
    pub build_type: BuildType,
    /// The pull request, for a pull-request build.
    pub pull_request: Option<PullRequest>,
}

/// A file of an app's source that its flavor reads (its key depends on the file, not the code).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockFile {
    /// Path relative to the app's source folder.
    pub path: String,
    /// Its blob id.
    pub blob: ObjectId,
    /// Its content.
    pub data: Vec<u8>,
}

/// An app's code at the revision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppSource {
    /// The `source` folder.
    pub folder: String,
    /// The folder's git tree id: the code layer is a function of it alone.
    pub tree: ObjectId,
    /// The files its flavor reads, in path order.
    pub lock_files: Vec<LockFile>,
}

/// A project at a revision: configuration and app sources, ready to plan a build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Project {
    /// The validated kiln.toml of the revision.
    pub config: ProjectConfig,
    /// What is built.
    pub revision: Revision,
    /// Each app's source, by service name.
    pub sources: BTreeMap<String, AppSource>,
}

impl Project {
    /// Loads the project at `rev` (sha, branch, `HEAD`…): kiln.toml and app sources from git
    /// objects; the branch is `rev` when it names one (or HEAD's branch for `HEAD`).
    pub fn load_at(repo: &GitRepo, rev: &str) -> Result<Project, LoadError> {
        let commit = repo.resolve(rev)?;
        let revision = Revision {
            commit,
            tree: repo.commit_tree(commit)?,
            branch: repo.branch_of(rev),
            build_type: BuildType::Branch,
            pull_request: None,
        };
        Self::load_revision(repo, revision)
    }

    /// Loads a pull request: `head` merged onto `base` (a conflict is an error naming the paths).
    pub fn load_pull_request(
        repo: &GitRepo,
        base: &str,
        head: &str,
        title: Option<&str>,
    ) -> Result<Project, LoadError> {
        let base_id = repo.resolve(base)?;
        let head_id = repo.resolve(head)?;
        let revision = Revision {
            commit: head_id,
            tree: repo.merge(base_id, head_id)?,
            branch: repo.branch_of(head),
            build_type: BuildType::PullRequest,
            pull_request: Some(PullRequest {
                base: base_id,
                head: head_id,
                title: title.map(str::to_string),
            }),
        };
        Self::load_revision(repo, revision)
    }

    /// Loads kiln.toml and app sources from the root tree of `revision`.
    pub fn load_revision(repo: &GitRepo, revision: Revision) -> Result<Project, LoadError> {
        let commit = revision.commit.to_string();
        let text =
            repo.read_file(revision.tree, CONFIG_FILE)?
                .ok_or_else(|| LoadError::NoConfig {
                    commit: commit.clone(),
                })?;
        let text = String::from_utf8(text).map_err(|_| LoadError::ConfigNotText {
            commit: commit.clone(),
        })?;
        let config = config::parse(CONFIG_FILE, &text).map_err(|errors| LoadError::Config {
            commit: commit.clone(),
            errors,
        })?;
        let mut sources = BTreeMap::new();
        for (service, app) in config.apps() {
            let source = load_app_source(
                repo,
                revision.tree,
                &service.name,
                &app.source,
                app.build.flavor,
            )
            .map_err(|e| e.at_commit(&commit))?;
            sources.insert(service.name.clone(), source);
        }
        Ok(Project {
            config,
            revision,
            sources,
        })
    }
}

impl LoadError {
    /// Fills in the commit of a [`LoadError::MissingSource`] found below the commit level.
    fn at_commit(self, commit: &str) -> LoadError {
        match self {
            LoadError::MissingSource {
                service, folder, ..
            } => LoadError::MissingSource {
                service,
                folder,
                commit: commit.to_string(),
            },
            other => other,
        }
    }
}

/// The files each flavor reads: (path, required).
fn flavor_files(flavor: Flavor) -> &'static [(&'static str, bool)] {
    match flavor {
        Flavor::Pip => &[("requirements.txt", false)],
        Flavor::Npm => &[("package-lock.json", true), ("package.json", true)],
        Flavor::Composer => &[("composer.json", true), ("composer.lock", true)],
        Flavor::None => &[],
    }
}

fn load_app_source(
    repo: &GitRepo,
    root: ObjectId,
    service: &str,
    folder: &str,
    flavor: Flavor,
) -> Result<AppSource, LoadError> {
    let folder_err = |source| LoadError::SourceFolder {
        service: service.to_string(),
        folder: folder.to_string(),
        source,
    };
    let tree = repo
        .folder_tree(root, folder)
        .map_err(folder_err)?
        .ok_or_else(|| LoadError::MissingSource {
            service: service.to_string(),
            folder: folder.to_string(),
            commit: String::new(),
        })?;
    let mut lock_files = Vec::new();
    for &(path, required) in flavor_files(flavor) {
        match repo.file_id(tree, path).map_err(folder_err)? {
            Some(blob) => {
                let data = repo.blob(blob).map_err(folder_err)?;
                lock_files.push(LockFile {
                    path: path.to_string(),
                    blob,
                    data,
                });
            }
            None if required => {
                return Err(LoadError::MissingLockFile {
                    service: service.to_string(),
                    flavor: flavor.as_str(),
                    path,
                    folder: folder.to_string(),
                })
            }
            None => {}
        }
    }
    Ok(AppSource {
        folder: folder.to_string(),
        tree,
        lock_files,
    })
}
