//! examples/shop deployed with kiln's hardened defaults: each service runs in a user namespace
//! mapping its ids to the environment's host range (not the identity), under the default
//! seccomp profile, with the service capability set and no_new_privs; it still serves, redis
//! still answers through the relationship, volumes are written with container-view owners; an
//! attack from inside (mount, a new user namespace, raw sockets) fails; a service that opted
//! out with `security.host_root` shows host root in `kiln env status`.

mod common;

use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

use common::{copy_example, git, Sandbox};
use kiln_router::Endpoint;
use kiln_testkit::loadgen::Client;
use serde_json::Value;

/// CapBnd/CapEff of the service set: CHOWN DAC_OVERRIDE FOWNER FSETID KILL SETGID SETUID
/// SETPCAP NET_BIND_SERVICE (bits 0 1 3 4 5 6 7 8 10).
const SERVICE_CAPS: u64 = 0x5fb;

/// Destroys the environment when the test ends, whatever happens.
struct EnvGuard<'a> {
    sb: &'a Sandbox,
    env: String,
}

impl Drop for EnvGuard<'_> {
    fn drop(&mut self) {
        let _ = self.sb.run(&["env", "destroy", &self.env]);
    }
}

/// shop plus `probe`, an app that opts out of the user namespace.
fn shop_repo(sb: &Sandbox) -> PathBuf {
    let repo = copy_example(sb.dir.path(), "shop");
    let toml = std::fs::read_to_string(repo.join("kiln.toml")).expect("read")
        + "\n[services.probe]\nbase = \"python\"\nsource = \"web\"\n\
           start = \"python3 -c 'import time; time.sleep(100000)'\"\n\
           [services.probe.deploy]\nhealth = \"test -e /app/server.py\"\n\
           [services.probe.security]\nhost_root = true\n";
    std::fs::write(repo.join("kiln.toml"), toml).expect("write");
    git(&repo, &["init", "-q", "-b", "main"]);
    git(&repo, &["add", "-A"]);
    git(&repo, &["commit", "-q", "-m", "shop"]);
    repo
}

/// `Key:\tvalue` of `/proc/<pid>/status`.
fn proc_status(pid: u64, key: &str) -> String {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}:")))
        .unwrap_or_else(|| panic!("no {key} in /proc/{pid}/status"))
        .trim()
        .to_string()
}

fn hex(s: &str) -> u64 {
    u64::from_str_radix(s, 16).expect("hex")
}

/// The init of `service` and its children (the wrapper shell and the service's command).
fn service_pids(s: &Value, service: &str) -> Vec<u64> {
    let init = s["services"][service]["pid"]
        .as_u64()
        .unwrap_or_else(|| panic!("{service} is not running: {s}"));
    let children =
        std::fs::read_to_string(format!("/proc/{init}/task/{init}/children")).expect("children");
    std::iter::once(init)
        .chain(children.split_whitespace().filter_map(|p| p.parse().ok()))
        .collect()
}

fn shell(sb: &Sandbox, env: &str, service: &str, python: &str) -> std::process::Output {
    sb.run(&["shell", env, service, "--", "python3", "-c", python])
}

#[test]
fn shop_services_run_mapped_confined_and_still_work() {
    let sb = Sandbox::new();
    sb.vendor("python");
    sb.vendor("redis");
    let repo = shop_repo(&sb);
    let env = common::unique("sec");
    let _guard = EnvGuard {
        sb: &sb,
        env: env.clone(),
    };
    sb.ok(&["deploy", &repo.to_string_lossy(), "--env", &env]);
    let s = sb.env_status(&env);
    let range = &s["record"]["id_range"];
    let host = range["host"].as_u64().expect("recorded id range");
    assert!(host >= 1_000_000, "{range}");

    // Mapped (not the identity), seccomp filter mode, service caps, no_new_privs.
    for service in ["web", "cache"] {
        assert_eq!(
            s["services"][service]["uid_map"].as_str(),
            Some(format!("0 {host} 65536").as_str()),
            "{service}: {s}"
        );
        for pid in service_pids(&s, service) {
            let uid_map = std::fs::read_to_string(format!("/proc/{pid}/uid_map")).expect("map");
            let fields: Vec<u64> = uid_map
                .split_whitespace()
                .map(|f| f.parse().expect("number"))
                .collect();
            assert_eq!(fields, [0, host, 65536], "{service} pid {pid}");
            assert_eq!(proc_status(pid, "Seccomp"), "2", "{service} pid {pid}");
            assert_eq!(proc_status(pid, "NoNewPrivs"), "1", "{service} pid {pid}");
            assert_eq!(hex(&proc_status(pid, "CapBnd")), SERVICE_CAPS, "{service}");
            let eff = hex(&proc_status(pid, "CapEff"));
            // web runs as its root, redis as user redis (no capabilities at all).
            let want = if service == "web" { SERVICE_CAPS } else { 0 };
            assert_eq!(eff, want, "{service} pid {pid} CapEff");
            // On the host the process is an id of the range, never root.
            let uid: u64 = proc_status(pid, "Uid")
                .split_whitespace()
                .next()
                .and_then(|u| u.parse().ok())
                .expect("uid");
            assert!(
                uid >= host && uid < host + 65536,
                "{service} host uid {uid}"
            );
        }
        assert!(
            s["services"][service]["user"]
                .as_str()
                .is_some_and(|u| u.contains(&format!("host {host}-"))),
            "{s}"
        );
    }

    // The opted-out service is host root, and says so.
    let probe = &s["services"]["probe"];
    assert_eq!(probe["host_root"], true, "{s}");
    assert_eq!(probe["user"], "host root (opted out)", "{s}");
    assert_eq!(
        probe["uid_map"].as_str(),
        Some("0 0 4294967295"),
        "probe runs in the host user namespace: {s}"
    );
    let text = sb.ok(&["env", "status", &env]);
    assert!(text.contains("host root (opted out)"), "{text}");
    assert!(text.contains(&format!("host {host}-")), "{text}");

    // It still serves; redis answers through the relationship; the volume is written.
    let addr: std::net::SocketAddr = s["record"]["router"]["listen"]
        .as_str()
        .expect("router")
        .parse()
        .expect("addr");
    let (code, page) = Client::new(Endpoint::host(addr))
        .request("/", "")
        .expect("GET through the router");
    assert_eq!(code, 200, "{page}");
    assert!(page.contains("redis: ok at cache:6379"), "{page}");
    assert!(page.contains("visits logged"), "{page}");
    let save = shell(
        &sb,
        &env,
        "web",
        "import sys; sys.path.insert(0, '/app'); import kiln_env; \
         print(kiln_env.ready_cache_client().save())",
    );
    assert!(save.status.success(), "redis SAVE: {save:?}");

    // Volumes hold container-view owners on disk: web's root wrote uid 0, redis uid 999.
    let volume = |service: &str| -> PathBuf {
        s["record"]["services"][service]["volumes"][0]["path"]
            .as_str()
            .map(PathBuf::from)
            .unwrap_or_else(|| panic!("{service} has a volume: {s}"))
    };
    let visits = std::fs::metadata(volume("web").join("visits.log")).expect("visits.log");
    assert_eq!((visits.uid(), visits.gid()), (0, 0), "web's file on disk");
    let dump = std::fs::metadata(volume("cache").join("dump.rdb")).expect("dump.rdb");
    assert_eq!(dump.uid(), 999, "redis's dump on disk");

    // Attacks from the container's root: each is refused, the host unchanged.
    let mounts_before = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    let attack = r#"
import ctypes, socket, sys
libc = ctypes.CDLL(None, use_errno=True)
r = libc.mount(b"none", b"/tmp", b"tmpfs", 0, None)
print("mount", r, ctypes.get_errno())
r2 = libc.unshare(0x10000000 | 0x00020000)
print("unshare", r2, ctypes.get_errno())
try:
    socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    print("raw ok")
except OSError as e:
    print("raw", e.errno)
sys.exit(0 if r == -1 and r2 == -1 else 1)
"#;
    let out = shell(&sb, &env, "web", attack);
    let said = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "the attacks must fail: {out:?}");
    assert!(said.contains("mount -1 1"), "mount EPERM: {said}");
    assert!(said.contains("unshare -1 1"), "unshare EPERM: {said}");
    assert!(said.contains("raw 1"), "no NET_RAW: {said}");
    let mounts_after = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    assert_eq!(
        mounts_before.lines().count(),
        mounts_after.lines().count(),
        "the host's mount table is unchanged"
    );
}
