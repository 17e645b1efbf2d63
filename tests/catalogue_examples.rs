//! examples/php-mariadb deployed by `kiln deploy` from a git repository the test makes, on the
//! php, mariadb and memcached vendor images: each request writes a row to MariaDB (through the
//! `database` relationship) and counts the visitor's requests in a session kept in memcached
//! (through `sessions`).

use std::path::Path;
use std::process::Command;

use kiln_testkit::common::{copy_example, git, shared_deb_cache, unique, Sandbox};
use serde_json::Value;

/// Builds vendor image `name` into the sandbox's store.
fn vendor(sb: &Sandbox, name: &str) {
    let recipes = Path::new(env!("CARGO_MANIFEST_DIR")).join("vendor-images");
    let out = sb
        .kiln()
        .env("KILN_DEB_CACHE", shared_deb_cache())
        .args(["vendor", "build", name, "--quiet", "--recipes"])
        .arg(&recipes)
        .output()
        .expect("spawn kiln");
    assert!(out.status.success(), "vendor build {name}: {out:?}");
}

/// Destroys the environment when the test ends, pass or fail.
struct Env<'a> {
    sb: &'a Sandbox,
    name: String,
}

impl Drop for Env<'_> {
    fn drop(&mut self) {
        let _ = self.sb.run(&["env", "destroy", &self.name]);
    }
}

/// GET `url` with curl, keeping cookies in `jar`.
fn get(url: &str, jar: &Path) -> String {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "20", "-w", "%{http_code}", "-c"])
        .arg(jar)
        .arg("-b")
        .arg(jar)
        .arg(url)
        .output()
        .expect("curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success() && text.ends_with("200"),
        "GET {url}: {text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    text.trim_end_matches("200").to_string()
}

#[test]
fn php_mariadb_example_deploys_and_keeps_rows_and_sessions() {
    let sb = Sandbox::new();
    for image in ["php", "mariadb", "memcached"] {
        vendor(&sb, image);
    }
    let repo = copy_example(sb.dir.path(), "php-mariadb");
    git(&repo, &["init", "-q", "-b", "main"]);
    git(&repo, &["add", "-A"]);
    git(&repo, &["commit", "-q", "-m", "guestbook"]);
    let env = Env {
        sb: &sb,
        name: unique("gb"),
    };
    sb.ok(&["deploy", &repo.to_string_lossy(), "--env", &env.name]);
    let status: Value =
        serde_json::from_str(&sb.ok(&["env", "status", &env.name, "--json"])).expect("JSON");
    let addr = status["record"]["router"]["listen"]
        .as_str()
        .expect("router address")
        .to_string();
    let jar = sb.dir.path().join("cookies");
    let url = format!("http://{addr}/visit");
    assert_eq!(get(&url, &jar), "guestbook rows=1 session_visits=1\n");
    assert_eq!(get(&url, &jar), "guestbook rows=2 session_visits=2\n");
    // Another visitor: a new session, the same table.
    let other = sb.dir.path().join("cookies-2");
    assert_eq!(get(&url, &other), "guestbook rows=3 session_visits=1\n");
}
