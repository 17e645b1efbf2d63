//! containerd pulls images kiln pushed (a busybox image and examples/shop's web, TLS + basic
//! auth registry) and runs them with kiln as its runc binary (`ctr run --runc-binary kiln`): the
//! runc shim drives kiln's runc command line. containerd runs on a private socket, root and state under a temp dir, in
//! its own mount namespace, under a child subreaper (pid 1 here does not reap orphans).

mod registry_support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use kiln_testkit::common::{busybox_rootfs, kiln_bin, unique, Sandbox};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use registry_support::{build, have_tools, ok, shop, Registry, PASSWORD, USER};

/// Reaps the runc shims, which re-parent away from containerd (PR_SET_CHILD_SUBREAPER = 36).
const SUBREAPER: &str = r#"
import ctypes, os, signal, subprocess, sys, time
ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0)
p = subprocess.Popen(sys.argv[1:])
signal.signal(signal.SIGTERM, lambda *_: p.send_signal(signal.SIGTERM))
p.wait()
end = time.time() + 10
while time.time() < end:
    try:
        pid, _ = os.waitpid(-1, os.WNOHANG)
    except ChildProcessError:
        break
    if pid == 0:
        time.sleep(0.1)
"#;

/// A containerd of the test's own; stopped (SIGTERM, then SIGKILL) and its cgroups removed on drop.
struct Containerd {
    dir: tempfile::TempDir,
    ns: String,
    child: Child,
}

impl Containerd {
    fn start() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("kiln-containerd-")
            .tempdir()
            .expect("tempdir");
        let d = dir.path();
        std::fs::write(
            d.join("config.toml"),
            format!(
                "version = 2\nroot = \"{root}\"\nstate = \"{state}\"\n\
                 disabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n\
                 [grpc]\n  address = \"{sock}\"\n  tcp_address = \"\"\n\
                 [ttrpc]\n  address = \"{sock}.ttrpc\"\n\
                 [debug]\n  address = \"\"\n  level = \"info\"\n[metrics]\n  address = \"\"\n",
                root = d.join("root").display(),
                state = d.join("state").display(),
                sock = d.join("containerd.sock").display(),
            ),
        )
        .expect("write config");
        std::fs::write(d.join("subreaper.py"), SUBREAPER).expect("write subreaper");
        let log = std::fs::File::create(d.join("containerd.log")).expect("log");
        let child = Command::new("unshare")
            .args(["-m", "--propagation", "private", "python3"])
            .arg(d.join("subreaper.py"))
            .arg("containerd")
            .arg("--config")
            .arg(d.join("config.toml"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("spawn containerd");
        let c = Self {
            dir,
            ns: unique("kiln-cd-"),
            child,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !c.ctr(&["version"]).status.success() {
            assert!(
                Instant::now() < deadline,
                "containerd did not come up: {}",
                std::fs::read_to_string(c.dir.path().join("containerd.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        c
    }

    fn sock(&self) -> PathBuf {
        self.dir.path().join("containerd.sock")
    }

    fn ctr(&self, args: &[&str]) -> Output {
        Command::new("ctr")
            .arg("-a")
            .arg(self.sock())
            .args(["-n", &self.ns])
            .args(args)
            .output()
            .expect("spawn ctr")
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        if let Ok(pid) = i32::try_from(self.child.id()) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        // The namespace's cgroups (the runc shim's, one per container), deepest first.
        if let Ok(controllers) = std::fs::read_dir("/sys/fs/cgroup") {
            for c in controllers.flatten() {
                remove_cgroups(&c.path().join(&self.ns));
            }
        }
    }
}

fn remove_cgroups(dir: &Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                remove_cgroups(&e.path());
            }
        }
        let _ = std::fs::remove_dir(dir);
    }
}

const TOOLS: &[&str] = &[
    "docker-registry",
    "htpasswd",
    "openssl",
    "containerd",
    "ctr",
    "unshare",
    "python3",
];

/// A TLS + basic-auth registry, a kiln sandbox and a private containerd that trusts the
/// registry's CA (hosts.toml: containerd talks plain HTTP to a loopback registry otherwise).
struct Setup {
    reg: Registry,
    sb: Sandbox,
    cd: Containerd,
    hosts: String,
}

impl Setup {
    fn new() -> Self {
        let reg = Registry::start(true, true);
        let cd = Containerd::start();
        let hosts = cd.dir.path().join("certs.d");
        let host_dir = hosts.join(&reg.host);
        std::fs::create_dir_all(&host_dir).expect("mkdir hosts dir");
        std::fs::write(
            host_dir.join("hosts.toml"),
            format!(
                "server = \"https://{h}\"\n[host.\"https://{h}\"]\n  \
                 capabilities = [\"pull\", \"resolve\"]\n  ca = \"{ca}\"\n",
                h = reg.host,
                ca = reg.ca().display()
            ),
        )
        .expect("write hosts.toml");
        Self {
            hosts: hosts.to_string_lossy().into_owned(),
            reg,
            sb: Sandbox::new(),
            cd,
        }
    }

    /// `kiln push IMAGE host/REPO`, then `ctr images pull` of it: containerd resolves the
    /// digest kiln pushed. Returns the registry reference.
    fn push_and_pull(&self, image: &str, repo: &str, digest: &str) -> String {
        let auth = self.reg.auth_file("auth.json", PASSWORD);
        let target = format!("{}/{repo}", self.reg.host);
        let pushed = ok(
            self.sb
                .kiln()
                .env("REGISTRY_AUTH_FILE", &auth)
                .args(["push", image, &target, "--json", "--ca"])
                .arg(self.reg.ca())
                .output()
                .expect("spawn kiln"),
            "kiln push",
        );
        assert_eq!(pushed["digest"], digest);
        let creds = format!("{USER}:{PASSWORD}");
        let out = self.cd.ctr(&[
            "images",
            "pull",
            "--user",
            &creds,
            "--hosts-dir",
            &self.hosts,
            &target,
        ]);
        assert!(out.status.success(), "ctr images pull: {out:?}");
        let listed = self.cd.ctr(&["images", "ls"]);
        let text = String::from_utf8_lossy(&listed.stdout);
        assert!(
            text.lines()
                .any(|l| l.starts_with(&target) && l.contains(digest)),
            "{text}"
        );
        target
    }

    /// `ctr run --runc-binary kiln --rm IMAGE ID ARGS...`.
    fn run(&self, image: &str, args: &[&str]) -> Output {
        let id = unique("cd");
        let mut all = vec!["run", "--runc-binary", kiln_bin(), "--rm", image, &id];
        all.extend_from_slice(args);
        self.cd.ctr(&all)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.cd.dir.path().join("containerd.log")).unwrap_or_default()
    }
}

#[test]
fn containerd_pulls_images_kiln_pushed_and_runs_them_with_kiln_as_runc() {
    if !have_tools(TOOLS) {
        return;
    }
    let s = Setup::new();
    let rootfs = s.sb.dir.path().join("rootfs");
    busybox_rootfs(&rootfs);
    std::fs::write(rootfs.join("etc/motd"), "pushed by kiln\n").expect("write motd");
    let imported = ok(
        s.sb.kiln()
            .args([
                "image",
                "import",
                &rootfs.to_string_lossy(),
                "--tag",
                "bb:v1",
                "--json",
            ])
            .output()
            .expect("spawn kiln"),
        "image import",
    );
    let digest = imported["digest"].as_str().expect("digest").to_string();
    let image = s.push_and_pull("bb:v1", "tools/busybox:v1", &digest);

    let out = s.run(&image, &["/bin/cat", "/etc/motd"]);
    assert!(
        out.status.success(),
        "ctr run --runc-binary kiln: {out:?}\n{}",
        s.log()
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "pushed by kiln"
    );
    // Exit codes come back through kiln and the shim; nothing is left in containerd.
    let out = s.run(&image, &["/bin/sh", "-c", "exit 7"]);
    assert_eq!(out.status.code(), Some(7), "{out:?}");
    let left = s.cd.ctr(&["containers", "ls", "-q"]);
    assert!(left.stdout.is_empty(), "left: {left:?}");

    // examples/shop's web image: containerd pulls what kiln pushed, digest for digest.
    let repo = shop(&s.sb);
    let web = build(&s.sb, &repo, &[])["services"][0].clone();
    s.push_and_pull(
        web["image"].as_str().expect("image"),
        "shop/web:v1",
        web["digest"].as_str().expect("digest"),
    );
}

#[test]
fn containerd_runs_the_pushed_web_image_with_kiln_as_runc() {
    if !have_tools(TOOLS) {
        return;
    }
    let s = Setup::new();
    let repo = shop(&s.sb);
    let web = build(&s.sb, &repo, &[])["services"][0].clone();
    let image = s.push_and_pull(
        web["image"].as_str().expect("image"),
        "shop/web:v1",
        web["digest"].as_str().expect("digest"),
    );
    let version = std::fs::read_to_string(repo.join("web/VERSION")).expect("VERSION");
    // The app itself (the image's `python3 server.py` from /app) starts in the container and
    // answers HTTP on the loopback; redis is not there, so `/` is the app's own 503 page.
    let out = s.run(&image, &["python3", "-c", WEB_PROBE]);
    assert!(
        out.status.success(),
        "ctr run --runc-binary kiln: {out:?}\n{}",
        s.log()
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("cwd /app"), "{text}");
    assert_eq!(lines.next(), Some("healthz 200 ok"), "{text}");
    // `/ 503 <GREETING> from shop <VERSION>` (GREETING is the environment's, or `hi`).
    assert!(
        lines
            .next()
            .is_some_and(|l| l.starts_with("/ 503 ")
                && l.ends_with(&format!(" from shop {}", version.trim()))),
        "{text}"
    );
    assert!(
        lines
            .next()
            .is_some_and(|l| l.starts_with("redis: unreachable")),
        "{text}"
    );
}

/// Runs the web app (`python3 server.py`, PORT 8000 in the container's own network namespace,
/// whose loopback kiln brings up as runc does) and prints what it answers to `/healthz` and `/`
/// (the app's own log lines go to /dev/null, its errors to stderr).
const WEB_PROBE: &str = r#"
import http.client, os, subprocess, sys, time
print("cwd", os.getcwd())
app = subprocess.Popen([sys.executable, "server.py"], stdout=subprocess.DEVNULL)
deadline = time.time() + 30
def get(path):
    c = http.client.HTTPConnection("127.0.0.1", 8000, timeout=5)
    c.request("GET", path)
    r = c.getresponse()
    return r.status, r.read().decode()
while True:
    try:
        status, body = get("/healthz")
        break
    except OSError:
        if time.time() > deadline or app.poll() is not None:
            raise
        time.sleep(0.2)
print("healthz", status, body.strip())
status, body = get("/")
print("/", status, body)
app.kill()
"#;
