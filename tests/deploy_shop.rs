//! examples/shop deployed by `kiln deploy` from a git repo made by the test, on the python and
//! redis vendor images, one test per scenario over one shared fixture (the vendor images and
//! the v1 repository, made once per test binary): the page proves redis was reached through
//! the relationship and the deploy hook ran; a redeploy of the same commit replaces nothing; an
//! app without the relationship cannot reach redis; a v2 commit swaps under 8 concurrent
//! clients with no failed request; a failing hook rolls back; a hook over its time limit is
//! killed; an unhealthy service fails the deploy; a killed deploy frees the requests it held
//! and the next one converges; an environment stops and starts; volumes are cloned for a child
//! environment; destroy leaves nothing behind.
//!
//! Each test has its own environments and its own clone of the repository; they take turns
//! (one lock): deploys are timed, and two at once on two cores would blur the timings.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use kiln_router::client::RouterClient;
use kiln_router::Endpoint;
use kiln_testkit::common::{copy_example, git, unique, Envs, Sandbox};
use kiln_testkit::loadgen::{self, Client};
use kiln_util::wait::Deadline;
use serde_json::Value;

/// The fixture every test deploys from: a sandbox whose store has the python and redis
/// vendor images, and the shop repository at v1.
struct Shop {
    sb: Sandbox,
    repo: PathBuf,
}

static SHOP: OnceLock<Shop> = OnceLock::new();
static TURN: Mutex<()> = Mutex::new(());

/// Removes the fixture's sandbox when the test binary exits (a static is never dropped).
extern "C" fn remove_shop() {
    if let Some(shop) = SHOP.get() {
        let _ = std::fs::remove_dir_all(shop.sb.dir.path());
    }
}

/// The fixture (made by the first test that asks), and this test's turn.
fn shop() -> (MutexGuard<'static, ()>, &'static Shop) {
    // A test that failed holding the turn does not stop the others.
    let turn = TURN.lock().unwrap_or_else(|e| e.into_inner());
    let shop = SHOP.get_or_init(|| {
        let sb = Sandbox::new();
        // SAFETY: `remove_shop` is an `extern "C" fn()` that does not unwind (remove_dir_all
        // reports errors, and they are ignored) and touches only the static it reads.
        let registered = unsafe { libc::atexit(remove_shop) };
        assert_eq!(registered, 0, "atexit");
        sb.vendor("python");
        sb.vendor("redis");
        let repo = shop_repo(sb.dir.path());
        Shop { sb, repo }
    });
    (turn, shop)
}

/// One test's share of the fixture: its own clone of the repository and its own
/// environments, destroyed when the test ends, pass or fail.
struct Case {
    sb: &'static Sandbox,
    repo: PathBuf,
    repo_s: String,
    env: String,
    _envs: Envs<'static>,
    _dir: tempfile::TempDir,
    _turn: MutexGuard<'static, ()>,
}

impl Case {
    /// A clone of the v1 repository and a fresh environment name (plus `extra` names).
    fn new(extra: &[&str]) -> Self {
        let (turn, shop) = shop();
        let dir = tempfile::Builder::new()
            .prefix("kiln-test-shop-")
            .tempdir()
            .expect("tempdir");
        let repo = dir.path().join("shop");
        let out = std::process::Command::new("git")
            .args(["clone", "-q"])
            .arg(&shop.repo)
            .arg(&repo)
            .output()
            .expect("git clone");
        assert!(out.status.success(), "git clone: {out:?}");
        let env = unique("shop");
        let mut names: Vec<String> = extra.iter().map(|x| format!("{env}-{x}")).collect();
        names.push(env.clone());
        Self {
            sb: &shop.sb,
            repo_s: repo.to_string_lossy().into_owned(),
            repo,
            env,
            _envs: Envs {
                sb: &shop.sb,
                names,
            },
            _dir: dir,
            _turn: turn,
        }
    }

    /// The environment named `<env>-<extra>` (given to `new`).
    fn other(&self, extra: &str) -> String {
        format!("{}-{extra}", self.env)
    }

    /// Deploys the repository's HEAD into `env`; the command's stdout.
    fn deploy(&self, env: &str) -> String {
        self.sb.ok(&["deploy", &self.repo_s, "--env", env])
    }

    /// Deploys v1 into the test's environment; the router's address and the first page.
    fn v1(&self) -> (SocketAddr, String) {
        self.deploy(&self.env);
        let addr = self.sb.router_address(&self.env);
        let page = get(addr);
        assert!(page.starts_with("v1 from shop v1"), "{page}");
        (addr, page)
    }

    /// Commits kiln.toml as `change` makes it from the current one.
    fn commit_toml(&self, change: impl FnOnce(&str) -> String, msg: &str) {
        let toml = std::fs::read_to_string(self.repo.join("kiln.toml")).expect("read");
        commit_file(&self.repo, "kiln.toml", &change(&toml), msg);
    }
}

/// kiln.toml with the deploy hook sleeping `secs` seconds (and `extra` lines after it).
fn sleeper(toml: &str, secs: u32, extra: &str) -> String {
    toml.replace(
        "hook = \"python3 migrate.py\"",
        &format!("hook = \"python3 -c 'import time; time.sleep({secs})'\"{extra}"),
    )
}

fn pids(sb: &Sandbox, env: &str) -> Vec<u64> {
    let s = sb.env_status(env);
    ["cache", "web"]
        .iter()
        .map(|n| {
            s["record"]["services"][n]["process"]["pid"]
                .as_u64()
                .expect("pid")
        })
        .collect()
}

fn get(addr: SocketAddr) -> String {
    let (code, body) = Client::new(Endpoint::host(addr))
        .request("/", "")
        .expect("GET through the router");
    assert_eq!(code, 200, "{body}");
    body
}

fn commit_file(repo: &Path, file: &str, text: &str, msg: &str) {
    std::fs::write(repo.join(file), text).expect("write");
    git(repo, &["commit", "-q", "-am", msg]);
}

fn shop_repo(dir: &Path) -> PathBuf {
    let repo = copy_example(dir, "shop");
    // The greeting names the version (the load clients tell v1 from v2 by the first word), and
    // a second app `probe` has no relationship to redis (and no port: a command is its health).
    let toml = std::fs::read_to_string(repo.join("kiln.toml")).expect("read");
    let toml = toml.replace("GREETING = \"hello\"", "GREETING = \"v1\"")
        + "\n[services.probe]\nbase = \"python\"\nsource = \"web\"\n\
           start = \"python3 -c 'import time; time.sleep(100000)'\"\n\
           [services.probe.deploy]\nhealth = \"test -e /app/server.py\"\n";
    std::fs::write(repo.join("kiln.toml"), toml).expect("write");
    git(&repo, &["init", "-q", "-b", "main"]);
    git(&repo, &["add", "-A"]);
    git(&repo, &["commit", "-q", "-m", "shop v1"]);
    repo
}

/// Pids whose command line contains `needle`.
fn processes_running(needle: &str) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .expect("/proc")
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|c| String::from_utf8_lossy(&c).contains(needle))
                .unwrap_or(false)
        })
        .collect()
}

/// Polls `f` every `pause` until it is true or `timeout` passed.
fn wait_until(timeout: Duration, pause: Duration, f: impl FnMut() -> bool) -> bool {
    kiln_util::wait::until(Deadline::after(timeout), pause, f)
}

/// Starts `kiln deploy` of `repo` into `env`, SIGKILLs it once a process matching `hook` runs;
/// returns (router held when killed, router released within 5 s after).
fn kill_deploy_in_hook(sb: &Sandbox, repo: &str, env: &str, hook: &str) -> (bool, bool) {
    let mut child = sb
        .kiln()
        .args(["deploy", repo, "--env", env])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn deploy");
    let ms = Duration::from_millis;
    wait_until(Duration::from_secs(60), ms(20), || {
        !processes_running(hook).is_empty()
    });
    let held = router_held(sb, env);
    child.kill().expect("kill -9 the deploy");
    let _ = child.wait();
    let released = wait_until(Duration::from_secs(5), ms(10), || !router_held(sb, env));
    (held, released)
}

/// After a killed deploy and the next one: no process matching `hook` runs, and `env` has one
/// container per service, no orphan.
fn assert_settled(sb: &Sandbox, env: &str, hook: &str) {
    assert!(processes_running(hook).is_empty(), "the orphans went");
    let containers = std::fs::read_dir(sb.root().join("envs").join(env).join("containers"))
        .expect("containers")
        .count();
    assert_eq!(containers, 3, "one container per service, no orphan");
}

/// Whether the router of `env` holds requests now.
fn router_held(sb: &Sandbox, env: &str) -> bool {
    RouterClient::connect(&sb.root(), env)
        .and_then(|mut c| c.status())
        .expect("router status")
        .gate
        .held
}

/// Each client's runs of answers: (first word, how many in a row).
type Runs = Vec<Vec<(String, u64)>>;

/// How many visits the page says the volume holds.
fn visits(page: &str) -> u64 {
    page.lines()
        .find(|l| l.starts_with("data:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no visit count in {page}"))
}

/// Runs 8 keep-alive clients through the router while `during` runs; returns (ok, failed,
/// longest wait, each client's runs of answers, first errors).
fn under_load(addr: SocketAddr, during: impl FnOnce()) -> (u64, u64, Duration, Runs, Vec<String>) {
    let stop = Arc::new(AtomicBool::new(false));
    let handles = loadgen::load(&Endpoint::host(addr), 8, &stop);
    std::thread::sleep(Duration::from_millis(300));
    during();
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    let (mut ok, mut failed, mut longest, mut runs, mut errors) =
        (0, 0, Duration::ZERO, Vec::new(), Vec::new());
    for h in handles {
        let r = h.join().expect("client");
        ok += r.ok;
        failed += r.failed;
        longest = longest.max(r.longest);
        runs.push(r.runs);
        errors.extend(r.errors);
    }
    (ok, failed, longest, runs, errors)
}

#[test]
fn v1_page_proves_redis_through_the_relationship_and_the_deploy_hook() {
    let case = Case::new(&[]);
    let (_, page) = case.v1();
    assert!(page.contains("redis: ok at cache:6379"), "{page}");
    assert!(page.contains("migration: applied for v1"), "{page}");
    assert!(page.contains("BUILT BY THE KILN BUILD HOOK"), "{page}");
}

#[test]
fn a_redeploy_of_the_same_commit_replaces_nothing() {
    let case = Case::new(&[]);
    case.v1();
    let before = pids(case.sb, &case.env);
    let out = case
        .sb
        .ok(&["deploy", &case.repo_s, "--env", &case.env, "--json"]);
    let report: Value = serde_json::from_str(&out).expect("json");
    assert_eq!(
        report["changes"]["replace"].as_array().map(Vec::len),
        Some(0),
        "{out}"
    );
    assert_eq!(
        pids(case.sb, &case.env),
        before,
        "same pids after a no-op redeploy"
    );
}

#[test]
fn only_the_relationship_reaches_redis() {
    let case = Case::new(&[]);
    case.v1();
    let (sb, env) = (case.sb, &case.env);
    let s = sb.env_status(env);
    let ip = s["record"]["services"]["web"]["links"]["cache"][0]["ip"]
        .as_str()
        .expect("cache ip")
        .to_string();
    let connect =
        format!("import socket; socket.create_connection(('{ip}', 6379), 2); print('connected')");
    let from_web = sb.run(&["shell", env, "web", "--", "python3", "-c", &connect]);
    assert!(from_web.status.success(), "web reaches redis: {from_web:?}");
    let from_probe = sb.run(&["shell", env, "probe", "--", "python3", "-c", &connect]);
    assert!(
        !from_probe.status.success(),
        "probe must not reach redis: {from_probe:?}"
    );
}

#[test]
fn v2_swaps_under_8_clients_without_a_failed_request_and_keeps_the_volume() {
    let case = Case::new(&[]);
    let (addr, page) = case.v1();
    let visits_before = visits(&page);
    std::fs::write(case.repo.join("web/VERSION"), "v2\n").expect("write");
    case.commit_toml(|t| t.replace("\"v1\"", "\"v2\""), "v2");
    let mut swap = String::new();
    let (ok, failed, longest, runs, errors) = under_load(addr, || {
        swap = case
            .sb
            .ok(&["deploy", &case.repo_s, "--env", &case.env, "--json"]);
    });
    let swap: Value = serde_json::from_str(&swap).expect("json");
    let hold_ms = swap["hold_ms"].as_f64().expect("hold_ms");
    eprintln!(
        "swap v1→v2 under 8 clients: {ok} requests ok, {failed} failed, longest wait {:.1} ms, \
         hold window {hold_ms:.1} ms, steps {}",
        longest.as_secs_f64() * 1000.0,
        swap["steps"]
    );
    assert!(hold_ms > 0.0, "the swap held requests: {swap}");
    assert_eq!(
        swap["changes"]["replace"],
        serde_json::json!(["probe", "web"]),
        "{swap}"
    );
    assert_eq!(failed, 0, "no request fails during the swap: {errors:?}");
    for r in &runs {
        let order: Vec<&str> = r.iter().map(|(w, _)| w.as_str()).collect();
        assert!(
            order == ["v1", "v2"] || order == ["v2"],
            "answers switch once: {order:?}"
        );
    }
    assert!(
        runs.iter().any(|r| r.iter().any(|(w, _)| w == "v1")),
        "{runs:?}"
    );
    let page = get(addr);
    assert!(page.starts_with("v2 from shop v2"), "{page}");
    assert!(
        visits(&page) > visits_before + ok - 1,
        "the volume kept v1's data: {page}"
    );
}

#[test]
fn a_failing_deploy_hook_rolls_back_without_a_failed_request() {
    let case = Case::new(&[]);
    let (addr, _) = case.v1();
    case.commit_toml(
        |t| {
            t.replace(
                "hook = \"python3 migrate.py\"",
                "hook = \"python3 migrate.py && exit 3\"",
            )
        },
        "v3 with a failing hook",
    );
    let mut bad = None;
    let (_, failed, _, _, errors) = under_load(addr, || {
        bad = Some(case.sb.run(&["deploy", &case.repo_s, "--env", &case.env]));
    });
    let bad = bad.expect("deploy ran");
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(!bad.status.success(), "a failing hook fails the deploy");
    assert!(err.contains("deploy hook") && err.contains("web"), "{err}");
    assert_eq!(
        failed, 0,
        "no request fails during the rollback: {errors:?}"
    );
    assert!(get(addr).starts_with("v1 from shop v1"));
}

#[test]
fn a_hook_over_its_time_limit_is_killed_with_what_it_started() {
    let case = Case::new(&[]);
    let (addr, _) = case.v1();
    case.commit_toml(|t| sleeper(t, 31, "\ntimeout = 1"), "v3 slow hook");
    let slow = case.sb.run(&["deploy", &case.repo_s, "--env", &case.env]);
    let err = String::from_utf8_lossy(&slow.stderr);
    assert!(
        !slow.status.success(),
        "a hook over its limit fails the deploy"
    );
    assert!(err.contains("timed out after 1 s"), "{err}");
    assert!(
        processes_running("time.sleep(31)").is_empty(),
        "the hook was killed"
    );
    assert!(get(addr).starts_with("v1 from shop v1"));
}

#[test]
fn a_health_command_that_never_passes_fails_the_deploy_naming_it() {
    let case = Case::new(&[]);
    let (addr, _) = case.v1();
    case.commit_toml(
        |t| {
            t.replace(
                "health = \"test -e /app/server.py\"",
                "health = \"test -e /app/missing\"\nhealth_timeout = 1",
            )
        },
        "v3 unhealthy probe",
    );
    let sick = case.sb.run(&["deploy", &case.repo_s, "--env", &case.env]);
    let err = String::from_utf8_lossy(&sick.stderr);
    assert!(
        !sick.status.success(),
        "an unhealthy service fails the deploy"
    );
    assert!(
        err.contains("probe")
            && err.contains("health check")
            && err.contains("test -e /app/missing"),
        "{err}"
    );
    assert!(get(addr).starts_with("v1 from shop v1"));
}

#[test]
fn a_deploy_killed_in_its_hook_frees_the_held_requests_and_the_next_converges() {
    let case = Case::new(&[]);
    let (addr, _) = case.v1();
    // Killed while it holds requests: the router lets them through (to the new container,
    // which answers on the same port of the same namespace), none fails.
    case.commit_toml(|t| sleeper(t, 32, ""), "v3 hook that hangs");
    let mut killed = None;
    let (ok, failed, _, _, errors) = under_load(addr, || {
        let (held, released) =
            kill_deploy_in_hook(case.sb, &case.repo_s, &case.env, "time.sleep(32)");
        assert!(held, "held while the hook runs");
        killed = Some(released);
    });
    assert_eq!(
        killed,
        Some(true),
        "the router released when the deploy died"
    );
    assert_eq!(failed, 0, "no request fails when a deploy dies: {errors:?}");
    assert!(ok > 0);
    // The next deploy adopts the container left serving and replaces it in a hold: no request
    // fails either.
    git(&case.repo, &["reset", "-q", "--hard", "HEAD~1"]);
    let (_, failed, _, _, errors) = under_load(addr, || {
        case.deploy(&case.env);
    });
    assert_eq!(
        failed, 0,
        "no request fails when the orphan is replaced: {errors:?}"
    );
    assert_settled(case.sb, &case.env, "time.sleep(32)");
    assert!(get(addr).starts_with("v1 from shop v1"));
}

#[test]
fn an_environment_stops_and_starts_even_with_its_namespaces_gone() {
    let case = Case::new(&[]);
    case.v1();
    let (sb, env) = (case.sb, case.env.as_str());
    sb.ok(&["env", "stop", env]);
    sb.ok(&["net", "teardown", "--env", env]);
    sb.ok(&["env", "start", env]);
    assert!(get(sb.router_address(env)).starts_with("v1 from shop v1"));
}

#[test]
fn a_child_environment_clones_the_parent_volume_and_writes_stay_apart() {
    let case = Case::new(&["pr"]);
    let (addr, page) = case.v1();
    let child = case.other("pr");
    case.sb.ok(&[
        "deploy",
        &case.repo_s,
        "--env",
        &child,
        "--parent",
        &case.env,
    ]);
    let child_addr = case.sb.router_address(&child);
    let c1 = visits(&get(child_addr));
    assert!(c1 > visits(&page), "the child cloned the parent's volume");
    let p1 = visits(&get(addr));
    let c2 = visits(&get(child_addr));
    let p2 = visits(&get(addr));
    assert_eq!(c2, c1 + 1, "the parent's write does not show in the child");
    assert_eq!(p2, p1 + 1, "the child's write does not show in the parent");
}

#[test]
fn a_first_deploy_killed_in_its_hook_is_released_and_the_next_converges() {
    let case = Case::new(&[]);
    // A first deploy killed in its hook: its router lets requests through (to nothing yet),
    // and the next deploy of the environment removes what it left and converges.
    case.commit_toml(|t| sleeper(t, 33, ""), "v3 hook that hangs");
    let (_, released) = kill_deploy_in_hook(case.sb, &case.repo_s, &case.env, "time.sleep(33)");
    assert!(released, "a new router is released when its deploy dies");
    git(&case.repo, &["reset", "-q", "--hard", "HEAD~1"]);
    case.deploy(&case.env);
    assert_settled(case.sb, &case.env, "time.sleep(33)");
    assert!(get(case.sb.router_address(&case.env)).starts_with("v1 from shop v1"));
}

#[test]
fn destroy_leaves_no_process_mount_netns_cgroup_or_router() {
    let case = Case::new(&["pr"]);
    case.v1();
    let (sb, env, child) = (case.sb, case.env.clone(), case.other("pr"));
    sb.ok(&["deploy", &case.repo_s, "--env", &child, "--parent", &env]);
    let web_pid = pids(sb, &env)[1];
    let router_pid = sb.env_status(&env)["record"]["router"]["process"]["pid"]
        .as_u64()
        .expect("router pid");
    let netns: Vec<u64> = [&env, &child]
        .iter()
        .flat_map(|e| {
            ["cache", "probe", "web"].map(|s| {
                use std::os::unix::fs::MetadataExt;
                std::fs::metadata(sb.root().join("netns").join(e).join(s))
                    .expect("netns file")
                    .ino()
            })
        })
        .collect();
    sb.ok(&["env", "destroy", &env]);
    sb.ok(&["env", "destroy", &child]);
    // A namespace lives while a mount or a process holds it; its veth ends go with it.
    let held: Vec<String> = std::fs::read_dir("/proc")
        .expect("/proc")
        .filter_map(|e| e.ok())
        .filter_map(|e| std::fs::read_link(e.path().join("ns/net")).ok())
        .map(|l| l.to_string_lossy().into_owned())
        .filter(|l| netns.iter().any(|i| *l == format!("net:[{i}]")))
        .collect();
    assert!(
        held.is_empty(),
        "no process in the env's namespaces: {held:?}"
    );
    for pid in [web_pid, router_pid] {
        // Gone, or a zombie waiting for a reaper that is not ours.
        let gone = u32::try_from(pid)
            .ok()
            .and_then(kiln_util::process::stat)
            .is_none_or(|s| s.exited());
        assert!(gone, "pid {pid} is gone");
    }
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    let root = sb.root().to_string_lossy().to_string();
    assert!(!mounts.contains(&root), "no mount left under {root}");
    assert!(
        !netns.iter().any(|i| mounts.contains(&format!("net:[{i}]"))),
        "no netns mount left anywhere"
    );
    // The containers' cgroups (kiln's scheme, and the older `kiln-<id>` beside it) are gone.
    let freezer = kiln_util::cgroup::v1_dir("freezer", Path::new(""));
    let scheme = kiln_util::cgroup::v1_dir("freezer", Path::new(kiln_util::cgroup::PARENT));
    let cgroups: Vec<String> = [freezer, scheme]
        .iter()
        .filter_map(|d| std::fs::read_dir(d).ok())
        .flatten()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(&env))
        .collect();
    assert!(cgroups.is_empty(), "no cgroup left: {cgroups:?}");
    assert!(
        !sb.root().join("envs").join(&env).exists(),
        "no env record left"
    );
}
