//! The catalogue's service images (vendor-images/memcached, postgresql, mariadb): each builds
//! from an empty store to the same digest in two fresh stores, passes the layout judge and runs
//! on kiln's runtime as a deploy runs it (read-only root, /tmp a tmpfs, data on a volume). The
//! databases make their data dir at the first start, keep a row through a `kill -9` of the
//! database process (crash recovery at the next start) and through a clean SIGTERM stop.

mod vendor_support;

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use kiln_testkit::common::Sandbox;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use vendor_support::{build, eventually, judge, stdout_if_ok, Container};

/// Builds `name` in `sb` and in a second fresh store; both give the same manifest digest.
fn build_twice(sb: &Sandbox, name: &str) -> serde_json::Value {
    let first = build(sb, name);
    let second = build(&Sandbox::new(), name);
    assert_eq!(
        first["manifest_digest"], second["manifest_digest"],
        "{name} is not reproducible"
    );
    judge(sb, &format!("{name}:latest"));
    first
}

/// The output of a command that must succeed.
fn ok(out: Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The pid of the container init's only child (the server a wrapper shell waits for).
fn child_of(pid: u32) -> i32 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .expect("children of the container's init");
    text.split_whitespace()
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("init {pid} has no child: {text:?}"))
}

#[test]
fn memcached_image_stores_and_returns_a_value() {
    let sb = Sandbox::new();
    build_twice(&sb, "memcached");
    let c = Container::new(&sb, "memcached:latest", None).deployed_like(
        &sb.dir.path().join("unused"),
        "/srv",
        &[],
    );
    let pid = c.start();
    let reply = eventually("memcached set/get", || {
        let out = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "printf 'set k 0 0 2\\r\\nok\\r\\nget k\\r\\nquit\\r\\n' | \
                 nsenter --net=/proc/{pid}/ns/net /bin/busybox nc 127.0.0.1 11211"
            ))
            .output()
            .ok()?;
        stdout_if_ok(out).filter(|s| s.contains("VALUE"))
    });
    assert!(
        reply.contains("STORED") && reply.contains("VALUE k 0 2\r\nok"),
        "{reply:?}"
    );
    // It runs as memcache, not root.
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    assert!(status.contains("Uid:\t997\t"), "{status}");
    c.kill("TERM");
    assert!(
        c.stops_within(Duration::from_secs(10)),
        "SIGTERM did not stop it"
    );
}

const PG: &str = "/usr/lib/postgresql/15/bin";

fn psql(c: &Container, sql: &str) -> String {
    ok(
        c.exec(&[
            "env",
            "PGPASSWORD=s3cret'x",
            &format!("{PG}/psql"),
            "-h",
            "127.0.0.1",
            "-U",
            "app",
            "-d",
            "app",
            "-v",
            "ON_ERROR_STOP=1",
            "-tAc",
            sql,
        ]),
        sql,
    )
}

fn pg_ready(c: &Container) {
    eventually("pg_isready", || {
        stdout_if_ok(c.exec(&[&format!("{PG}/pg_isready"), "-h", "127.0.0.1"]))
    });
}

/// `pg_controldata`'s cluster state of the data dir on `vol`.
fn pg_state(sb: &Sandbox, vol: &Path) -> String {
    let out = Container::new(
        sb,
        "postgresql:latest",
        Some(&[&format!("{PG}/pg_controldata"), "/var/lib/postgresql/data"]),
    )
    .deployed_like(vol, "/var/lib/postgresql", &[])
    .run();
    let text = ok(out, "pg_controldata");
    text.lines()
        .find_map(|l| l.strip_prefix("Database cluster state:"))
        .unwrap_or_default()
        .trim()
        .to_string()
}

#[test]
fn postgresql_image_initialises_then_survives_kill_9_and_a_clean_stop() {
    let sb = Sandbox::new();
    build_twice(&sb, "postgresql");
    let vol = sb.dir.path().join("pg-volume");
    let env = [
        "POSTGRES_PASSWORD=s3cret'x",
        "POSTGRES_USER=app",
        "POSTGRES_DB=app",
    ];
    let c = Container::new(&sb, "postgresql:latest", None).deployed_like(
        &vol,
        "/var/lib/postgresql",
        &env,
    );
    let init = c.start();
    pg_ready(&c);
    psql(&c, "CREATE TABLE t (v text); INSERT INTO t VALUES ('one')");
    // A wrong password is refused over TCP (scram-sha-256, not trust).
    let wrong = c.exec(&[
        "env",
        "PGPASSWORD=nope",
        &format!("{PG}/psql"),
        "-h",
        "127.0.0.1",
        "-U",
        "app",
        "-d",
        "app",
        "-c",
        "select 1",
    ]);
    assert!(!wrong.status.success(), "a wrong password was accepted");

    // kill -9 of the postmaster: the container ends; the next start recovers from the WAL.
    let postmaster = child_of(init);
    kill(Pid::from_raw(postmaster), Signal::SIGKILL).expect("kill -9 postgres");
    assert!(c.stops_within(Duration::from_secs(10)), "still running");
    c.delete();
    c.start();
    pg_ready(&c);
    assert_eq!(psql(&c, "SELECT v FROM t").trim(), "one");
    psql(&c, "INSERT INTO t VALUES ('two')");

    // SIGTERM: a fast, clean shutdown.
    c.kill("TERM");
    assert!(
        c.stops_within(Duration::from_secs(15)),
        "SIGTERM did not stop it"
    );
    c.delete();
    assert_eq!(pg_state(&sb, &vol), "shut down");
    c.start();
    pg_ready(&c);
    assert_eq!(
        psql(&c, "SELECT string_agg(v, ',' ORDER BY v) FROM t").trim(),
        "one,two"
    );
}

fn mariadb(c: &Container, sql: &str) -> String {
    ok(
        c.exec(&[
            "mariadb",
            "--no-defaults",
            "--protocol=tcp",
            "-h",
            "127.0.0.1",
            "-uapp",
            "-ps3cret'x",
            "-N",
            "-B",
            "app",
            "-e",
            sql,
        ]),
        sql,
    )
}

fn mariadb_ready(c: &Container) {
    eventually("mariadb answers", || {
        stdout_if_ok(c.exec(&[
            "mariadb",
            "--no-defaults",
            "--protocol=tcp",
            "-h",
            "127.0.0.1",
            "-uapp",
            "-ps3cret'x",
            "-e",
            "select 1",
        ]))
    });
}

#[test]
fn mariadb_image_initialises_then_survives_kill_9_and_a_clean_stop() {
    let sb = Sandbox::new();
    build_twice(&sb, "mariadb");
    let vol = sb.dir.path().join("db-volume");
    let env = [
        "MARIADB_USER=app",
        "MARIADB_PASSWORD=s3cret'x",
        "MARIADB_DATABASE=app",
    ];
    let c = Container::new(&sb, "mariadb:latest", None).deployed_like(&vol, "/var/lib/mysql", &env);
    let init = c.start();
    mariadb_ready(&c);
    mariadb(
        &c,
        "CREATE TABLE t (v varchar(10)) ENGINE=InnoDB; INSERT INTO t VALUES ('one')",
    );
    let status = std::fs::read_to_string(format!("/proc/{init}/status")).expect("status");
    assert!(status.contains("Uid:\t995\t"), "not user mysql: {status}");

    // kill -9 of mariadbd (the container's init): InnoDB recovers at the next start.
    kill(Pid::from_raw(init as i32), Signal::SIGKILL).expect("kill -9 mariadbd");
    assert!(c.stops_within(Duration::from_secs(10)), "still running");
    c.delete();
    c.start();
    mariadb_ready(&c);
    assert_eq!(mariadb(&c, "SELECT v FROM t").trim(), "one");
    mariadb(&c, "INSERT INTO t VALUES ('two')");

    c.kill("TERM");
    assert!(
        c.stops_within(Duration::from_secs(20)),
        "SIGTERM did not stop it"
    );
    c.delete();
    c.start();
    mariadb_ready(&c);
    assert_eq!(
        mariadb(&c, "SELECT GROUP_CONCAT(v ORDER BY v) FROM t").trim(),
        "one,two"
    );
}
