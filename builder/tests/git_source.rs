//! Reading sources from git objects: revisions, files, folder trees, entries, writing, merges.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use common::TestRepo;
use kiln_builder::source::{GitRepo, ObjectId, SourceEntryKind, SourceError};

fn open(repo: &TestRepo) -> GitRepo {
    GitRepo::open(repo.path()).unwrap_or_else(|e| panic!("open: {e}"))
}

fn oid(hex: &str) -> ObjectId {
    ObjectId::from_hex(hex.as_bytes()).unwrap_or_else(|e| panic!("{hex}: {e}"))
}

/// A repo with a web app (an executable script and a symlink) and an api folder.
fn sample() -> (TestRepo, String) {
    let repo = TestRepo::new();
    repo.write("kiln.toml", "project = \"p\"\n");
    repo.write("web/server.py", "print('v1')\n");
    repo.write("web/lib/util.py", "X = 1\n");
    let script = repo.write("web/run.sh", "#!/bin/sh\necho run\n");
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755))
        .unwrap_or_else(|e| panic!("chmod: {e}"));
    std::os::unix::fs::symlink("lib/util.py", repo.path().join("web/util-link"))
        .unwrap_or_else(|e| panic!("symlink: {e}"));
    repo.write("web/a-b.txt", "dash sorts before slash\n");
    repo.write("api/main.py", "pass\n");
    let sha = repo.commit("first");
    (repo, sha)
}

#[test]
fn revisions_resolve_to_commits_and_name_their_branch() {
    let (repo, first) = sample();
    repo.write("web/server.py", "print('v2')\n");
    let second = repo.commit("second");
    repo.git(&["branch", "old", &first]);
    let git = open(&repo);
    for (rev, want) in [
        ("HEAD", &second),
        ("main", &second),
        ("old", &first),
        (&first[..10], &first),
        ("main~1", &first),
    ] {
        let got = git.resolve(rev).unwrap_or_else(|e| panic!("{rev}: {e}"));
        assert_eq!(got.to_string(), *want, "{rev}");
    }
    assert_eq!(git.branch_of("HEAD").as_deref(), Some("main"));
    assert_eq!(git.branch_of("old").as_deref(), Some("old"));
    assert_eq!(git.branch_of(&first), None);
    let err = git
        .resolve("no-such-branch")
        .err()
        .unwrap_or_else(|| panic!("resolved a missing branch"));
    assert!(matches!(err, SourceError::Resolve { .. }));
    assert!(err.to_string().contains("no-such-branch"), "{err}");
}

#[test]
fn files_and_folder_trees_come_from_the_commit_not_the_work_tree() {
    let (repo, first) = sample();
    repo.write("web/server.py", "print('uncommitted')\n");
    let git = open(&repo);
    let tree = git
        .commit_tree(oid(&first))
        .unwrap_or_else(|e| panic!("{e}"));
    let data = git
        .read_file(tree, "web/server.py")
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(data.as_deref(), Some(&b"print('v1')\n"[..]));
    assert_eq!(
        git.read_file(tree, "missing.txt")
            .unwrap_or_else(|e| panic!("{e}")),
        None
    );

    let web = git
        .folder_tree(tree, "web")
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        web.map(|t| t.to_string()),
        Some(repo.git(&["rev-parse", &format!("{first}:web")]))
    );
    let nested = git
        .folder_tree(tree, "web/lib")
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        nested.map(|t| t.to_string()),
        Some(repo.git(&["rev-parse", &format!("{first}:web/lib")]))
    );
    assert_eq!(
        git.folder_tree(tree, ".").unwrap_or_else(|e| panic!("{e}")),
        Some(tree)
    );
    assert_eq!(
        git.folder_tree(tree, "nope")
            .unwrap_or_else(|e| panic!("{e}")),
        None
    );
    let err = git
        .folder_tree(tree, "kiln.toml")
        .err()
        .unwrap_or_else(|| panic!("a file is not a folder"));
    assert!(err.to_string().contains("`kiln.toml`"), "{err}");
}

#[test]
fn entries_are_sorted_with_modes_and_symlinks() {
    let (repo, first) = sample();
    let git = open(&repo);
    let tree = git
        .commit_tree(oid(&first))
        .unwrap_or_else(|e| panic!("{e}"));
    let web = git
        .folder_tree(tree, "web")
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_else(|| panic!("web"));
    let entries: Vec<_> = git
        .entries(web)
        .unwrap_or_else(|e| panic!("{e}"))
        .collect::<Result<_, _>>()
        .unwrap_or_else(|e| panic!("{e}"));
    let paths: Vec<String> = entries
        .iter()
        .map(|e| e.path.display().to_string())
        .collect();
    assert_eq!(
        paths,
        [
            "a-b.txt",
            "lib",
            "lib/util.py",
            "run.sh",
            "server.py",
            "util-link"
        ]
    );
    let modes: Vec<u32> = entries.iter().map(|e| e.mode()).collect();
    assert_eq!(modes, [0o644, 0o755, 0o644, 0o755, 0o644, 0o777]);
    assert_eq!(
        entries[5].kind,
        SourceEntryKind::Symlink {
            target: "lib/util.py".into()
        }
    );
    assert!(
        matches!(&entries[3].kind, SourceEntryKind::File { executable: true, data } if data.starts_with(b"#!/bin/sh"))
    );
}

#[test]
fn a_tree_is_written_to_a_directory_as_git_would_check_it_out() {
    let (repo, first) = sample();
    let git = open(&repo);
    let tree = git
        .commit_tree(oid(&first))
        .unwrap_or_else(|e| panic!("{e}"));
    let web = git
        .folder_tree(tree, "web")
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_else(|| panic!("web"));
    let out = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let dest = out.path().join("app");
    let written = git.write_tree(web, &dest).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(written, 6);
    let mode = |rel: &str| {
        std::fs::symlink_metadata(dest.join(rel))
            .map(|m| m.permissions().mode() & 0o777)
            .unwrap_or_else(|e| panic!("{rel}: {e}"))
    };
    assert_eq!(mode("."), 0o755);
    assert_eq!(mode("lib"), 0o755);
    assert_eq!(mode("run.sh"), 0o755);
    assert_eq!(mode("server.py"), 0o644);
    assert_eq!(
        std::fs::read_link(dest.join("util-link")).ok().as_deref(),
        Some(Path::new("lib/util.py"))
    );
    assert_eq!(
        std::fs::read_to_string(dest.join("lib/util.py"))
            .ok()
            .as_deref(),
        Some("X = 1\n")
    );
    // Writing again over the same files is refused rather than overwriting or following links.
    let again = git
        .write_tree(web, &dest)
        .err()
        .unwrap_or_else(|| panic!("overwrote files"));
    assert!(matches!(again, SourceError::Write { .. }), "{again}");
}

#[test]
fn a_submodule_is_refused_by_path() {
    let (repo, first) = sample();
    repo.git(&[
        "update-index",
        "--add",
        "--cacheinfo",
        &format!("160000,{first},web/vendored"),
    ]);
    repo.git(&["commit", "-q", "-m", "submodule"]);
    let git = open(&repo);
    let head = git.resolve("HEAD").unwrap_or_else(|e| panic!("{e}"));
    let tree = git.commit_tree(head).unwrap_or_else(|e| panic!("{e}"));
    let web = git
        .folder_tree(tree, "web")
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_else(|| panic!("web"));
    let err = git
        .entries(web)
        .err()
        .unwrap_or_else(|| panic!("listed a submodule"));
    assert!(err.to_string().contains("`vendored`"), "{err}");
}

/// base and head branch off `main`; returns (repo, base sha, head sha).
fn diverged(base_edit: (&str, &str), head_edit: (&str, &str)) -> (TestRepo, String, String) {
    let repo = TestRepo::new();
    repo.write("shared.txt", "one\ntwo\nthree\n");
    repo.write("base-only.txt", "b\n");
    repo.commit("root");
    repo.git(&["checkout", "-q", "-b", "feature"]);
    repo.write(head_edit.0, head_edit.1);
    let head = repo.commit("head change");
    repo.git(&["checkout", "-q", "main"]);
    repo.write(base_edit.0, base_edit.1);
    let base = repo.commit("base change");
    (repo, base, head)
}

#[test]
fn a_pull_request_merges_head_onto_base() {
    let (repo, base, head) = diverged(
        ("base-only.txt", "b2\n"),
        ("shared.txt", "one\ntwo\nTHREE\n"),
    );
    let git = open(&repo);
    let merged = git
        .merge(oid(&base), oid(&head))
        .unwrap_or_else(|e| panic!("{e}"));
    let read = |path| {
        git.read_file(merged, path)
            .unwrap_or_else(|e| panic!("{e}"))
            .map(|d| String::from_utf8_lossy(&d).into_owned())
    };
    assert_eq!(read("base-only.txt").as_deref(), Some("b2\n"));
    assert_eq!(read("shared.txt").as_deref(), Some("one\ntwo\nTHREE\n"));
    // Nothing was written into the repository: the merged tree exists only in memory.
    let status = std::process::Command::new("git")
        .args(["cat-file", "-e", &merged.to_string()])
        .current_dir(repo.path())
        .status()
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(!status.success(), "merge wrote into the repository");
}

#[test]
fn a_conflicting_pull_request_names_the_conflicting_paths() {
    let (repo, base, head) = diverged(
        ("shared.txt", "one\nTWO\nthree\n"),
        ("shared.txt", "one\ndeux\nthree\n"),
    );
    let git = open(&repo);
    let err = git
        .merge(oid(&base), oid(&head))
        .err()
        .unwrap_or_else(|| panic!("merged a conflict"));
    match &err {
        SourceError::MergeConflict { paths, .. } => assert_eq!(paths, &["shared.txt"]),
        other => panic!("expected a conflict, got {other}"),
    }
    assert!(
        err.to_string().contains("conflicts in: shared.txt"),
        "{err}"
    );
}

#[test]
fn a_pull_request_ahead_of_its_base_builds_the_head_tree() {
    let repo = TestRepo::new();
    repo.write("a.txt", "a\n");
    let base = repo.commit("base");
    repo.write("a.txt", "a2\n");
    let head = repo.commit("head");
    let git = open(&repo);
    let merged = git
        .merge(oid(&base), oid(&head))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        merged,
        git.commit_tree(oid(&head))
            .unwrap_or_else(|e| panic!("{e}"))
    );
}

#[test]
fn unrelated_histories_do_not_merge() {
    let repo = TestRepo::new();
    repo.write("a.txt", "a\n");
    let base = repo.commit("base");
    repo.git(&["checkout", "-q", "--orphan", "other"]);
    repo.write("b.txt", "b\n");
    let head = repo.commit("unrelated");
    let git = open(&repo);
    let err = git
        .merge(oid(&base), oid(&head))
        .err()
        .unwrap_or_else(|| panic!("merged unrelated histories"));
    assert!(matches!(err, SourceError::Merge { .. }), "{err}");
}
