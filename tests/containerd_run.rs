//! containerd pulls the web image kiln pushed (examples/shop, TLS + basic auth registry) and runs
//! it with kiln as its runc binary (`ctr run --runc-binary kiln`): the runc shim drives kiln's
//! runc command line. containerd runs on a private socket, root and state under a temp dir, in
//! its own mount namespace, under a child subreaper (pid 1 here does not reap orphans).

mod registry_support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use kiln_testkit::common::{kiln_bin, unique, Sandbox};
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

#[test]
fn containerd_pulls_the_pushed_web_image_and_runs_it_with_kiln_as_runc() {
    if !have_tools(&[
        "docker-registry",
        "htpasswd",
        "openssl",
        "containerd",
        "ctr",
        "unshare",
        "python3",
    ]) {
        return;
    }
    let reg = Registry::start(true, true);
    let sb = Sandbox::new();
    let auth = reg.auth_file("auth.json", PASSWORD);
    let repo = shop(&sb);
    let web = build(&sb, &repo, &[])["services"][0].clone();
    let image = format!("{}/shop/web:v1", reg.host);
    let pushed = ok(
        sb.kiln()
            .env("REGISTRY_AUTH_FILE", &auth)
            .args([
                "push",
                web["image"].as_str().expect("image"),
                &image,
                "--json",
            ])
            .arg("--ca")
            .arg(reg.ca())
            .output()
            .expect("spawn kiln"),
        "kiln push",
    );
    assert_eq!(pushed["digest"], web["digest"]);

    let cd = Containerd::start();
    let ca = reg.ca().to_string_lossy().into_owned();
    let creds = format!("{USER}:{PASSWORD}");
    let out = cd.ctr(&[
        "images",
        "pull",
        "--user",
        &creds,
        "--tlscacert",
        &ca,
        &image,
    ]);
    assert!(out.status.success(), "ctr images pull: {out:?}");
    // containerd resolved the same manifest digest kiln pushed.
    let listed = cd.ctr(&["images", "ls"]);
    let text = String::from_utf8_lossy(&listed.stdout);
    let digest = web["digest"].as_str().expect("digest");
    assert!(
        text.lines()
            .any(|l| l.starts_with(&image) && l.contains(digest)),
        "{text}"
    );

    let id = unique("web");
    let version = std::fs::read_to_string(repo.join("web/VERSION")).expect("VERSION");
    let out = cd.ctr(&[
        "run",
        "--runc-binary",
        kiln_bin(),
        "--rm",
        &image,
        &id,
        "python3",
        "-c",
        "import os; print(os.getcwd(), open('VERSION').read().strip())",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "ctr run --runc-binary kiln: {out:?}\n{}",
        std::fs::read_to_string(cd.dir.path().join("containerd.log")).unwrap_or_default()
    );
    assert_eq!(stdout.trim(), format!("/app {}", version.trim()));

    // Exit codes come back through kiln and the shim; nothing is left in containerd.
    let out = cd.ctr(&[
        "run",
        "--runc-binary",
        kiln_bin(),
        "--rm",
        &image,
        &format!("{id}-rc"),
        "python3",
        "-c",
        "raise SystemExit(7)",
    ]);
    assert_eq!(out.status.code(), Some(7), "{out:?}");
    let left = cd.ctr(&["containers", "ls", "-q"]);
    assert!(left.stdout.is_empty(), "left: {left:?}");
}
