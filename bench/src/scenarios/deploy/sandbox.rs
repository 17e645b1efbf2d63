//! The world a full deploy runs in: a temporary folder with its own runtime root and (unless
//! one is given) its own store, the vendor images, a git repository of the project, and the
//! kiln commands run there. Dropping it destroys the environment and removes the folder.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use serde::Deserialize;
use serde_json::Value;

use crate::report::ms;
use crate::scenarios::project::{commit, make_repo};

/// Where .debs are cached across runs unless `$KILN_DEB_CACHE` says otherwise.
const DEB_CACHE: &str = "/var/cache/kiln/debs";
/// The vendor images the project runs on.
const VENDOR_IMAGES: [&str; 2] = ["python", "redis"];
/// The project's app folder, whose VERSION a code change rewrites.
const APP: &str = "web";

/// What `kiln deploy --json` reported, and how long the kiln process ran.
#[derive(Debug, Deserialize)]
pub struct Deployed {
    /// Wall time of the kiln process (build included), in ms.
    #[serde(skip)]
    pub wall_ms: f64,
    /// Services kept, replaced, started, stopped.
    pub changes: Changes,
    /// How long requests were held, in ms.
    pub hold_ms: f64,
    /// Wall time of the deploy after the build, in ms.
    pub total_ms: f64,
    /// The deploy's steps.
    pub steps: Vec<Step>,
}

/// The services a deploy changed.
#[derive(Debug, Deserialize)]
pub struct Changes {
    /// Replaced (old container stopped, new one started).
    pub replace: Vec<String>,
    /// Started (new services).
    pub start: Vec<String>,
    /// Stopped (services no longer declared).
    pub stop: Vec<String>,
}

/// One timed step of a deploy.
#[derive(Debug, Deserialize)]
pub struct Step {
    /// Its name.
    pub step: String,
    /// Whether requests were held during it.
    pub held: bool,
    /// Its duration in ms.
    pub ms: f64,
}

/// A temporary folder holding a runtime root, a store and a project repository.
pub struct Sandbox {
    kiln: PathBuf,
    dir: PathBuf,
    store: PathBuf,
    root: PathBuf,
    repo: PathBuf,
    env: String,
}

impl Sandbox {
    /// Creates the folder; `store` is a store to reuse ("" for a fresh one inside the folder).
    pub fn create(kiln: &Path, store: &str) -> Result<Self> {
        let pid = std::process::id();
        let dir = std::env::temp_dir().join(format!("kiln-bench-deploy-full-{pid}"));
        let sb = Self {
            kiln: kiln.to_path_buf(),
            store: match store {
                "" => dir.join("store"),
                s => PathBuf::from(s),
            },
            root: dir.join("run"),
            repo: dir.join("repo"),
            env: format!("benchfull{pid}"),
            dir,
        };
        std::fs::create_dir_all(&sb.root)
            .with_context(|| format!("creating {}", sb.root.display()))?;
        Ok(sb)
    }

    /// The store deploys use.
    pub fn store(&self) -> &Path {
        &self.store
    }

    /// Builds the vendor images the store lacks (a rebuild is not cheap, so present ones are
    /// kept); says what it did.
    pub fn vendor_images(&self, recipes: &Path) -> Result<String> {
        let (_, listing) = self.kiln(&["image", "ls", "--json"])?;
        let listing: Value = serde_json::from_str(&listing).context("kiln image ls --json")?;
        let present = |name: &str| {
            listing
                .as_array()
                .into_iter()
                .flatten()
                .any(|i| i["name"].as_str() == Some(&format!("{name}:latest")))
        };
        let mut done = Vec::new();
        for name in VENDOR_IMAGES {
            if present(name) {
                done.push(format!("{name} already in the store"));
                continue;
            }
            let recipes = recipes.to_str().context("recipes path is not UTF-8")?;
            let (took, _) =
                self.kiln(&["vendor", "build", name, "--quiet", "--recipes", recipes])?;
            done.push(format!("{name} built in {:.1} s", took / 1000.0));
        }
        Ok(done.join(", "))
    }

    /// The project's repository: a copy of `project` committed, then a second commit removing
    /// every deploy hook and post-deploy task and adding a file unique to this run to the app
    /// (so a reused store's build cache cannot serve this run's builds).
    pub fn make_repo(&self, project: &Path) -> Result<()> {
        make_repo(project, &self.repo)?;
        let path = self.repo.join("kiln.toml");
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        let mut doc: toml::Table = toml::from_str(&text).context("parsing kiln.toml")?;
        let services = doc
            .get_mut("services")
            .and_then(toml::Value::as_table_mut)
            .context("kiln.toml has no [services]")?;
        for (_, svc) in services.iter_mut() {
            if let Some(deploy) = svc.get_mut("deploy").and_then(toml::Value::as_table_mut) {
                deploy.remove("hook");
                deploy.remove("post");
            }
        }
        std::fs::write(&path, toml::to_string(&doc)?)?;
        std::fs::write(
            self.repo.join(APP).join("BENCH_RUN"),
            format!(
                "{} {:?}\n",
                std::process::id(),
                std::time::SystemTime::now()
            ),
        )?;
        commit(&self.repo, "bench: no deploy hook, no post-deploy tasks")
    }

    /// Commits a code change: the app's VERSION becomes `v<n>`.
    pub fn change_code(&self, n: usize) -> Result<()> {
        std::fs::write(self.repo.join(APP).join("VERSION"), format!("v{n}\n"))?;
        commit(&self.repo, &format!("v{n}"))
    }

    /// Commits the code change `v<n>` with every service's `security.host_root` set to `on`
    /// (false: the key removed, the default user namespace).
    pub fn set_host_root(&self, on: bool, n: usize) -> Result<()> {
        let path = self.repo.join("kiln.toml");
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        let mut doc: toml::Table = toml::from_str(&text).context("parsing kiln.toml")?;
        let services = doc
            .get_mut("services")
            .and_then(toml::Value::as_table_mut)
            .context("kiln.toml has no [services]")?;
        for (_, svc) in services.iter_mut() {
            let svc = svc.as_table_mut().context("a service is not a table")?;
            if on {
                let mut security = toml::Table::new();
                security.insert("host_root".into(), toml::Value::Boolean(true));
                svc.insert("security".into(), toml::Value::Table(security));
            } else {
                svc.remove("security");
            }
        }
        std::fs::write(&path, toml::to_string(&doc)?)?;
        std::fs::write(self.repo.join(APP).join("VERSION"), format!("v{n}\n"))?;
        commit(&self.repo, &format!("v{n}, host_root {on}"))
    }

    /// `kiln deploy REPO --env E --json` of HEAD.
    pub fn deploy(&self) -> Result<Deployed> {
        let repo = self.repo.to_str().context("repo path is not UTF-8")?;
        let (wall_ms, out) = self.kiln(&["deploy", repo, "--env", &self.env, "--json"])?;
        let mut d: Deployed =
            serde_json::from_str(&out).with_context(|| format!("kiln deploy --json: {out}"))?;
        d.wall_ms = wall_ms;
        Ok(d)
    }

    /// The environment's router address (`record.router.listen` of `kiln env status --json`).
    pub fn router(&self) -> Result<SocketAddr> {
        let (_, out) = self.kiln(&["env", "status", &self.env, "--json"])?;
        let status: Value = serde_json::from_str(&out).context("kiln env status --json")?;
        status["record"]["router"]["listen"]
            .as_str()
            .with_context(|| format!("no record.router.listen in {out}"))?
            .parse()
            .context("record.router.listen")
    }

    /// Runs `kiln --root ROOT ARGS` on the store; its wall time in ms and its stdout.
    fn kiln(&self, args: &[&str]) -> Result<(f64, String)> {
        let mut cmd = Command::new(&self.kiln);
        cmd.arg("--root")
            .arg(&self.root)
            .args(args)
            .env("KILN_STORE", &self.store)
            .env("KILN_RUNTIME", &self.root);
        if std::env::var_os("KILN_DEB_CACHE").is_none() {
            cmd.env("KILN_DEB_CACHE", DEB_CACHE);
        }
        let t = Instant::now();
        let out = cmd
            .output()
            .with_context(|| format!("running {}", self.kiln.display()))?;
        let took = ms(t.elapsed());
        if !out.status.success() {
            bail!(
                "kiln {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok((took, String::from_utf8(out.stdout)?))
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        if let Err(e) = self.kiln(&["env", "destroy", &self.env]) {
            eprintln!("kiln-bench: destroying environment {}: {e:#}", self.env);
        }
        if let Err(e) = std::fs::remove_dir_all(&self.dir) {
            eprintln!("kiln-bench: removing {}: {e}", self.dir.display());
        }
    }
}
