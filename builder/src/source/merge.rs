//! Pull-request builds: head merged onto base in memory, as git would, or a conflict error.

use gix::merge::blob::builtin_driver::text::Labels;
use gix::merge::tree::TreatAsUnresolved;
use gix::ObjectId;

use super::error::{GitCause, SourceError};
use super::repo::GitRepo;

impl GitRepo {
    /// Merges commit `head` onto commit `base` and returns the merged root tree.
    ///
    /// The merge (merge base, renames, content merges) is gix's, configured like `git merge`;
    /// its objects stay in memory. Any conflict git would leave unresolved is an error naming
    /// every conflicting path.
    pub fn merge(&self, base: ObjectId, head: ObjectId) -> Result<ObjectId, SourceError> {
        let merge_err = |source: GitCause| SourceError::Merge {
            base: base.to_string(),
            head: head.to_string(),
            source,
        };
        let options = self
            .repo
            .tree_merge_options()
            .map_err(|e| merge_err(Box::new(e)))?;
        let labels = Labels {
            ancestor: Some("merge-base".into()),
            current: Some("base".into()),
            other: Some("head".into()),
        };
        let mut outcome = self
            .repo
            .merge_commits(base, head, labels, options.into())
            .map_err(|e| merge_err(Box::new(e)))?;
        let how = TreatAsUnresolved::git();
        if outcome.tree_merge.has_unresolved_conflicts(how) {
            let mut paths: Vec<String> = outcome
                .tree_merge
                .conflicts
                .iter()
                .filter(|c| c.is_unresolved(how))
                .flat_map(|c| [c.ours.location(), c.theirs.location()])
                .map(|p| p.to_string())
                .collect();
            paths.sort();
            paths.dedup();
            return Err(SourceError::MergeConflict {
                base: base.to_string(),
                head: head.to_string(),
                paths,
            });
        }
        let tree = outcome
            .tree_merge
            .tree
            .write()
            .map_err(|e| merge_err(Box::new(e)))?;
        Ok(tree.detach())
    }
}
