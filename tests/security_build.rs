//! The build sandbox under attack (issue 11, findings 5 and 12): `kiln build` of a hostile
//! repository whose build hook makes device nodes and tries to open them; dependency and flavor
//! steps (where package managers run scripts from the internet) that look for the host's network;
//! and a build on a pseudo-terminal, whose process must be single-threaded whenever a step
//! container exists. Each test uses its own store and runtime root and checks that nothing is
//! left behind (container, mount, cgroup, slirp4netns, network namespace).

mod common;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::{git, Sandbox};
use kiln_testkit::build_support::{self, busybox_base, names, LoopbackService};

/// A stand-in `python3` for the base image (the `pip` flavor's dependency and flavor steps run
/// `python3 -m pip ...`): runs `/bin/probe-net`, then fails if `$PROBE_FAIL` is set.
const FAKE_PYTHON: &str = r#"#!/bin/sh
/bin/probe-net
[ -n "$PROBE_FAIL" ] && { echo "probe-failing-on-purpose"; exit 7; }
echo installed
"#;

/// What a hostile install script would look at: its network namespace, the interfaces it sees,
/// the host's loopback (directly and through slirp's gateway) and a package registry.
const PROBE_NET: &str = r#"#!/bin/sh
echo "probe-netns=$(readlink /proc/self/ns/net)"
echo "probe-ifaces=$(sed 1,2d /proc/net/dev | cut -d: -f1 | tr -d ' ' | sort | tr '\n' ' ')"
for h in 127.0.0.1 10.0.2.2; do
  if echo hi | nc -w 3 "$h" "$PROBE_PORT"; then echo "probe-reached-$h"; else echo "probe-blocked-$h"; fi
done
if echo | timeout 20 openssl s_client -connect pypi.org:443 -servername pypi.org 2>&1 | grep -q '^New, TLS'; then
  echo probe-registry-ok; else echo probe-registry-failed; fi
echo "probe-resolv=$(grep nameserver /etc/resolv.conf | tr '\n' ' ')"
"#;

/// The hook of a hostile repository: make the host's kmsg (1:11), loop-control (10:237) and
/// first disk (8:0) as device nodes, then use them.
const ATTACK_HOOK: &str = r#"#!/bin/sh
for d in "kmsg c 1 11" "loop-control c 10 237" "sda b 8 0"; do
  set -- $d
  for dir in /tmp /app /dev; do
    if mknod "$dir/$1" "$2" "$3" "$4" 2>/dev/null; then echo "ATTACK-MKNOD $dir/$1"; fi
  done
done
for n in /tmp/kmsg /app/kmsg /dev/kmsg; do
  if [ -e "$n" ] && echo "kiln-attack-$MARK" > "$n" 2>/dev/null; then echo "ATTACK-WROTE $n"; fi
done
for n in /tmp/sda /app/sda /dev/sda /tmp/loop-control /dev/loop-control; do
  if [ -e "$n" ] && head -c 1 "$n" >/dev/null 2>&1; then echo "ATTACK-OPENED $n"; fi
done
echo attack-finished
"#;

/// Serialises the tests that count slirp4netns processes and network namespaces host-wide.
static NETWORK: Mutex<()> = Mutex::new(());

/// A project repository: kiln.toml for one `pip` app named `service`, its source in `app/`.
struct Repo {
    dir: tempfile::TempDir,
}

impl Repo {
    fn new(service: &str, hook: &str, env: &str) -> Repo {
        let repo = Repo {
            dir: tempfile::tempdir().expect("tempdir"),
        };
        let toml = format!(
            r#"project = "sec"

[services.{service}]
base = "busybox"
source = "app"
start = "true"
env = {{ {env} }}

[services.{service}.build]
flavor = "pip"
dependencies = {{ pip = ["toolz"] }}
hook = "{hook}"
timeout = 60
"#
        );
        repo.write("kiln.toml", &toml);
        repo.write("app/requirements.txt", "toolz\n");
        repo.write("app/attack.sh", ATTACK_HOOK);
        git(repo.path(), &["init", "-q", "-b", "main"]);
        git(repo.path(), &["add", "-A"]);
        git(repo.path(), &["commit", "-q", "-m", "hostile"]);
        repo
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn write(&self, rel: &str, text: &str) {
        let p = self.path().join(rel);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        std::fs::write(p, text).expect("write");
    }
}

/// Copies the host's `program` and the libraries it links into `rootfs`, at the same paths.
fn copy_with_libs(rootfs: &Path, program: &str) {
    assert!(
        Path::new(program).exists(),
        "{program} is missing on the host (scripts/setup installs it)"
    );
    let ldd = Command::new("ldd").arg(program).output().expect("ldd");
    assert!(ldd.status.success(), "ldd {program}: {ldd:?}");
    let text = String::from_utf8_lossy(&ldd.stdout).into_owned();
    let libs = text
        .lines()
        .filter_map(|l| l.split_whitespace().find(|w| w.starts_with('/')));
    for file in std::iter::once(program).chain(libs) {
        let dest = rootfs.join(file.trim_start_matches('/'));
        std::fs::create_dir_all(dest.parent().expect("parent")).expect("mkdir");
        std::fs::copy(file, &dest).unwrap_or_else(|e| panic!("copy {file}: {e}"));
    }
}

/// A sandbox whose store has the busybox base (fake python3, the probe and the host's openssl
/// for a TLS handshake) as `busybox:latest`.
fn sandbox() -> Sandbox {
    busybox_base(
        &[("python3", FAKE_PYTHON), ("probe-net", PROBE_NET)],
        |rootfs| copy_with_libs(rootfs, "/usr/bin/openssl"),
    )
}

fn build(sb: &Sandbox, repo: &Repo) -> Output {
    let path = repo.path().to_string_lossy().into_owned();
    sb.run(&["build", &path, "--json"])
}

fn log(sb: &Sandbox, service: &str) -> String {
    sb.ok(&["build", "log", "sec", service])
}

/// Pids of live (not zombie) processes whose command line starts with `program`.
fn live_processes(program: &str) -> Vec<String> {
    names(Path::new("/proc"))
        .into_iter()
        .filter(|p| p.chars().all(|c| c.is_ascii_digit()))
        .filter(|p| {
            let cmd = std::fs::read(format!("/proc/{p}/cmdline")).unwrap_or_default();
            let argv0 = cmd.split(|&b| b == 0).next().unwrap_or_default();
            Path::new(&*String::from_utf8_lossy(argv0)).file_name()
                == Some(std::ffi::OsStr::new(program))
        })
        .collect()
}

/// Whether any process is in the network namespace `ns` (`net:[inode]`).
fn netns_in_use(ns: &str) -> bool {
    names(Path::new("/proc")).into_iter().any(|p| {
        std::fs::read_link(format!("/proc/{p}/ns/net")).is_ok_and(|l| l.to_string_lossy() == ns)
    })
}

/// Cgroup dirs of `service`'s step containers, in any v1 hierarchy.
fn step_cgroups(service: &str) -> Vec<PathBuf> {
    let needle = format!("-{service}-");
    names(Path::new("/sys/fs/cgroup"))
        .into_iter()
        .flat_map(|h| {
            let dir = Path::new("/sys/fs/cgroup").join(h).join("kiln-build");
            names(&dir)
                .into_iter()
                .filter(|n| n.contains(&needle))
                .map(move |n| dir.join(n))
        })
        .collect()
}

fn assert_nothing_left(sb: &Sandbox, service: &str) {
    build_support::assert_nothing_left(sb);
    assert_eq!(step_cgroups(service), Vec::<PathBuf>::new(), "cgroups left");
}

/// The host's kernel log.
fn dmesg() -> String {
    let out = Command::new("dmesg").output().expect("dmesg");
    assert!(out.status.success(), "dmesg: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn a_build_hook_cannot_make_or_use_device_nodes_and_the_host_is_unchanged() {
    let sb = sandbox();
    let mark = common::unique("m");
    let repo = Repo::new("devprobe", "sh attack.sh", &format!("MARK = \"{mark}\""));
    let host_dev = names(Path::new("/dev"));
    let out = build(&sb, &repo);
    assert!(out.status.success(), "build: {out:?}");
    let log = log(&sb, "devprobe");
    assert!(log.contains("attack-finished"), "the hook ran: {log}");
    let attacks: Vec<&str> = log.lines().filter(|l| l.starts_with("ATTACK-")).collect();
    assert_eq!(attacks, Vec::<&str>::new(), "log: {log}");
    assert!(
        !dmesg().contains(&format!("kiln-attack-{mark}")),
        "kmsg got the mark"
    );
    assert_eq!(names(Path::new("/dev")), host_dev, "host /dev changed");
    // The hook's layer holds no device node either.
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON report");
    let hook = report["services"][0]["steps"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["name"] == "hook"))
        .expect("hook step")
        .clone();
    let hex = hook["layer"]
        .as_str()
        .expect("digest")
        .trim_start_matches("sha256:")
        .to_string();
    let listing = Command::new("tar")
        .arg("tvzf")
        .arg(sb.store().join("oci/blobs/sha256").join(hex))
        .output()
        .expect("tar");
    assert!(listing.status.success());
    let listing = String::from_utf8_lossy(&listing.stdout);
    assert!(
        !listing
            .lines()
            .any(|l| l.starts_with('c') || l.starts_with('b')),
        "{listing}"
    );
    assert_nothing_left(&sb, "devprobe");
}

/// The values of `probe-<key>=` lines in `log`.
fn probed<'a>(log: &'a str, key: &str) -> Vec<&'a str> {
    let prefix = format!("probe-{key}=");
    log.lines()
        .filter_map(|l| l.strip_prefix(&prefix))
        .collect()
}

/// Builds a repository whose dependency and flavor steps probe the network (the dependency
/// step failing when `fail`), checks what the probes saw and that nothing is left.
fn probe_network(service: &str, fail: bool) -> (Output, String) {
    let _serial = NETWORK.lock().unwrap_or_else(|e| e.into_inner());
    let host = LoopbackService::start();
    let sb = sandbox();
    let mut env = format!("PROBE_PORT = \"{}\"", host.port);
    if fail {
        env.push_str(", PROBE_FAIL = \"1\"");
    }
    let repo = Repo::new(service, "true", &env);
    let slirps_before = live_processes("slirp4netns");
    let out = build(&sb, &repo);
    let log = log(&sb, service);

    let host_ns = std::fs::read_link("/proc/self/ns/net")
        .expect("host netns")
        .to_string_lossy()
        .into_owned();
    let steps = if fail { 1 } else { 2 };
    let netns = probed(&log, "netns");
    assert_eq!(netns.len(), steps, "one probe per network step: {log}");
    for ns in &netns {
        assert!(ns.starts_with("net:["), "{log}");
        assert_ne!(
            *ns, host_ns,
            "a network step ran in the host's namespace: {log}"
        );
        assert!(
            !netns_in_use(ns),
            "the step's namespace {ns} outlived the build"
        );
    }
    assert_eq!(probed(&log, "ifaces"), vec!["lo tap0 "; steps], "{log}");
    assert_eq!(
        probed(&log, "resolv"),
        vec!["nameserver 10.0.2.3 "; steps],
        "{log}"
    );
    for h in ["127.0.0.1", "10.0.2.2"] {
        assert!(!log.contains(&format!("probe-reached-{h}")), "{log}");
        assert_eq!(
            log.matches(&format!("probe-blocked-{h}")).count(),
            steps,
            "{log}"
        );
    }
    assert_eq!(host.received(), Vec::<String>::new(), "{log}");
    assert_eq!(
        log.matches("probe-registry-ok").count(),
        steps,
        "a network step must reach pypi.org:443 (TCP + TLS): {log}"
    );
    assert_eq!(
        live_processes("slirp4netns"),
        slirps_before,
        "slirp4netns left running"
    );
    assert_nothing_left(&sb, service);
    (out, log)
}

#[test]
fn network_steps_have_their_own_namespace_reach_a_registry_and_not_the_host() {
    let (out, log) = probe_network("netprobe", false);
    assert!(out.status.success(), "build: {out:?}\n{log}");
}

#[test]
fn a_failing_network_step_leaves_no_slirp_namespace_mount_or_cgroup() {
    let (out, log) = probe_network("netfail", true);
    assert!(!out.status.success(), "{log}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("service `netfail`, step `dependencies`") && err.contains("status 7"),
        "{err}"
    );
}

/// `Threads:` of `/proc/<pid>/status`.
fn threads(pid: &str) -> Option<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|n| n.trim().parse().ok())
}

/// The kiln process building `repo` (its command line names the repository).
fn kiln_building(repo: &Path) -> Option<String> {
    let repo = repo.to_string_lossy().into_owned();
    names(Path::new("/proc"))
        .into_iter()
        .filter(|p| p.chars().all(|c| c.is_ascii_digit()))
        .find(|p| {
            let exe = std::fs::read_link(format!("/proc/{p}/exe")).ok();
            let cmd = std::fs::read(format!("/proc/{p}/cmdline")).unwrap_or_default();
            exe.is_some_and(|e| e.file_name() == Some(std::ffi::OsStr::new("kiln")))
                && String::from_utf8_lossy(&cmd).contains(&repo)
        })
}

#[test]
fn a_build_on_a_terminal_is_single_threaded_while_its_step_containers_exist() {
    assert!(
        Path::new("/usr/bin/script").exists(),
        "script (util-linux) is missing: scripts/setup installs it"
    );
    let sb = sandbox();
    let repo = Repo::new("ttyprobe", "sleep 2; echo slept", "PROBE_PORT = \"9\"");
    let cmd = format!(
        "{} build {}",
        common::kiln_bin(),
        repo.path().to_string_lossy()
    );
    let mut script = Command::new("script")
        .args(["-qec", &cmd, "/dev/null"])
        .env("KILN_STORE", sb.store())
        .env("KILN_RUNTIME", sb.root())
        .env("TERM", "xterm")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn script");
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut samples = Vec::new();
    let status = loop {
        if let Some(status) = script.try_wait().expect("wait script") {
            break status;
        }
        assert!(Instant::now() < deadline, "kiln build under script hangs");
        let live = names(&sb.root());
        if let Some(pid) = kiln_building(repo.path()) {
            if let (false, Some(n)) = (live.is_empty(), threads(&pid)) {
                samples.push(n);
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut out = String::new();
    if let Some(mut s) = script.stdout.take() {
        let _ = s.read_to_string(&mut out);
    }
    assert!(status.success(), "kiln build on a pty failed: {out}");
    assert!(
        out.contains("ttyprobe"),
        "progress was shown on the terminal: {out}"
    );
    assert!(
        samples.len() >= 20,
        "the test saw kiln with a step container only {} times",
        samples.len()
    );
    assert!(
        samples.iter().all(|&n| n == 1),
        "kiln had more than one thread while a step container existed: {samples:?}"
    );
    assert_nothing_left(&sb, "ttyprobe");
}
