//! How a failed `kiln build` reports its error: the service, what was being done, the path and
//! the operating system's reason, each cause once (an error's cause is either in its message or
//! its source, and the CLI prints the chain), and nothing left behind.

use kiln_testkit::build_support::{assert_nothing_left, busybox_base, Project};

#[test]
fn a_failed_build_names_the_path_and_its_os_error_exactly_once() {
    let sb = busybox_base(&[], |_| {});
    // The store's build/ is a plain file: the build lock's directory cannot be made under it.
    let build_dir = sb.store().join("build");
    if build_dir.is_dir() {
        std::fs::remove_dir_all(&build_dir).expect("remove build dir");
    }
    std::fs::write(&build_dir, "").expect("a file where a directory goes");
    let repo = Project::new();
    repo.write(
        "kiln.toml",
        "project = \"errs\"\n\n[services.web]\nbase = \"busybox\"\nsource = \"web\"\n\
         start = \"true\"\nport = 8000\n",
    );
    repo.write("web/hello.txt", "hello\n");
    repo.commit("first");
    let out = sb.run(&["build", &repo.path().to_string_lossy()]);
    assert!(!out.status.success(), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    let locks = build_dir.join("locks");
    assert!(err.contains("service `web`"), "{err}");
    assert!(
        err.contains(&format!("create directory {}", locks.display())),
        "{err}"
    );
    let cause = std::io::Error::from_raw_os_error(libc::ENOTDIR).to_string();
    assert_eq!(err.matches(&cause).count(), 1, "the cause once: {err}");
    assert_eq!(
        err.matches(&locks.display().to_string()).count(),
        1,
        "the path once: {err}"
    );
    let report: Vec<&str> = err
        .lines()
        .filter(|l| l.starts_with("kiln build:"))
        .collect();
    assert_eq!(
        report,
        [format!(
            "kiln build: service `web`: lock the build: create directory {}: {cause}",
            locks.display()
        )],
        "{err}"
    );
    assert_nothing_left(&sb);
}
