//! A real registry for the registry tests: Debian's `docker-registry` (distribution) on
//! 127.0.0.1 with htpasswd basic auth and TLS from a CA made for the test, killed on drop.

#![allow(dead_code)]

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Output;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The test user and password the registry accepts.
pub const USER: &str = "kiln";
/// The test user's password.
pub const PASSWORD: &str = "s3cret-pw";

/// The tools these tests need; missing ones fail under CI and skip otherwise.
pub fn have_tools(tools: &[&str]) -> bool {
    let missing: Vec<&&str> = tools
        .iter()
        .filter(|t| !kiln_testkit::common::on_path(t))
        .collect();
    if missing.is_empty() {
        return true;
    }
    if std::env::var_os("CI").is_some() {
        panic!("missing {missing:?} (scripts/setup installs them)");
    }
    eprintln!("skipping: missing {missing:?}");
    false
}

fn run(cmd: &mut Command) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A running registry and the files that reach it.
pub struct Registry {
    /// Holds the CA, certs, htpasswd, config, data and log.
    pub dir: tempfile::TempDir,
    /// 127.0.0.1:PORT.
    pub host: String,
    child: Child,
}

impl Registry {
    /// Starts a registry with TLS (`tls`) or plain HTTP, and htpasswd auth (`auth`).
    pub fn start(tls: bool, auth: bool) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("kiln-registry-")
            .tempdir()
            .expect("tempdir");
        let d = dir.path();
        if tls {
            make_certs(d);
        }
        if auth {
            let out = Command::new("htpasswd")
                .args(["-Bbn", USER, PASSWORD])
                .output()
                .expect("htpasswd");
            assert!(out.status.success(), "htpasswd: {out:?}");
            std::fs::write(d.join("htpasswd"), out.stdout).expect("write htpasswd");
        }
        let port = {
            let l = TcpListener::bind("127.0.0.1:0").expect("bind");
            l.local_addr().expect("addr").port()
        };
        let host = format!("127.0.0.1:{port}");
        let mut config = format!(
            "version: 0.1\nlog:\n  level: info\n  accesslog:\n    disabled: false\n\
             storage:\n  filesystem:\n    rootdirectory: {data}\n  delete:\n    enabled: true\n\
             http:\n  addr: {host}\n",
            data = d.join("data").display()
        );
        if tls {
            config += &format!(
                "  tls:\n    certificate: {}\n    key: {}\n",
                d.join("server.crt").display(),
                d.join("server.key").display()
            );
        }
        if auth {
            config += &format!(
                "auth:\n  htpasswd:\n    realm: kiln-test\n    path: {}\n",
                d.join("htpasswd").display()
            );
        }
        std::fs::write(d.join("config.yml"), config).expect("write config");
        let log = std::fs::File::create(d.join("registry.log")).expect("log");
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(d.join("config.yml"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("spawn docker-registry");
        let reg = Self { dir, host, child };
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(&reg.host).is_err() {
            assert!(
                Instant::now() < deadline,
                "registry did not listen on {}: {}",
                reg.host,
                reg.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        reg
    }

    /// The test CA's certificate (PEM).
    pub fn ca(&self) -> PathBuf {
        self.dir.path().join("ca.crt")
    }

    /// A directory with `ca.crt` in it (skopeo's `--cert-dir`).
    pub fn cert_dir(&self) -> PathBuf {
        self.dir.path().join("certs.d")
    }

    /// Writes a podman-style auth file with `password` for this registry; returns its path.
    pub fn auth_file(&self, name: &str, password: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(
            &path,
            format!(
                r#"{{"auths":{{"{}":{{"username":"{USER}","password":"{password}"}}}}}}"#,
                self.host
            ),
        )
        .expect("write auth file");
        path
    }

    /// The registry's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }

    /// The blob uploads the registry completed for `repo`, from its access log: one
    /// `PUT /v2/REPO/blobs/uploads/…?digest=…` line each.
    pub fn blob_puts(&self, repo: &str) -> usize {
        let needle = format!("\"PUT /v2/{repo}/blobs/uploads/");
        self.log()
            .lines()
            .filter(|l| l.contains(&needle) && l.contains("digest=") && l.contains("\" 201 "))
            .count()
    }

    /// Where the registry keeps a blob's bytes.
    pub fn blob_data(&self, digest: &str) -> PathBuf {
        let hex = digest.trim_start_matches("sha256:");
        self.dir
            .path()
            .join("data/docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A CA and a server certificate for 127.0.0.1 signed by it.
fn make_certs(d: &Path) {
    let ssl = |args: &[&str]| run(Command::new("openssl").current_dir(d).args(args));
    ssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        "-days",
        "2",
        "-subj",
        "/CN=kiln test CA",
    ]);
    ssl(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=127.0.0.1",
    ]);
    std::fs::write(
        d.join("ext.cnf"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .expect("write ext");
    ssl(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.crt",
        "-days",
        "2",
        "-extfile",
        "ext.cnf",
    ]);
    std::fs::create_dir_all(d.join("certs.d")).expect("mkdir certs.d");
    std::fs::copy(d.join("ca.crt"), d.join("certs.d/ca.crt")).expect("copy ca");
}

/// Parses a command's stdout as JSON.
pub fn json(out: &[u8]) -> serde_json::Value {
    serde_json::from_slice(out)
        .unwrap_or_else(|e| panic!("bad JSON ({e}): {}", String::from_utf8_lossy(out)))
}

/// Asserts a command succeeded and parses its stdout as JSON.
pub fn ok(out: Output, what: &str) -> serde_json::Value {
    assert!(
        out.status.success(),
        "{what} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    json(&out.stdout)
}

/// `kiln build REPO --json EXTRA...` in the sandbox.
pub fn build(sb: &kiln_testkit::common::Sandbox, repo: &Path, extra: &[&str]) -> serde_json::Value {
    let out = sb
        .kiln()
        .args(["build", &repo.to_string_lossy(), "--json"])
        .args(extra)
        .output()
        .expect("spawn kiln");
    ok(out, "kiln build")
}

/// The python vendor image in the sandbox's store and examples/shop committed in a git repo.
pub fn shop(sb: &kiln_testkit::common::Sandbox) -> PathBuf {
    use kiln_testkit::common::{copy_example, git, shared_deb_cache, workspace_root};
    let out = sb
        .kiln()
        .env("KILN_DEB_CACHE", shared_deb_cache())
        .args(["vendor", "build", "python", "--quiet", "--recipes"])
        .arg(workspace_root().join("vendor-images"))
        .output()
        .expect("spawn kiln");
    assert!(out.status.success(), "vendor build python: {out:?}");
    let repo = copy_example(sb.dir.path(), "shop");
    git(&repo, &["init", "-q", "-b", "main"]);
    git(&repo, &["add", "-A"]);
    git(&repo, &["commit", "-q", "-m", "shop"]);
    repo
}
