//! Teardown (after success and after a failed apply), idempotence and incremental apply,
//! checked against the kernel: /proc/self/mountinfo and netlink link dumps.

mod common;

use std::collections::BTreeMap;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use common::Env;
use kiln_netns::{LiveLink, Plan};

/// Six services, five edges (names prefixed).
fn six(p: &str) -> kiln_netns::Topology {
    let services = common::services(p, &["a", "b", "c", "d", "e", "f"]);
    common::topology(
        &services,
        &[
            ("a", "rb", "b"),
            ("a", "rc", "c"),
            ("b", "rd", "d"),
            ("c", "rd", "d"),
            ("e", "rf", "f"),
        ],
        p,
    )
}

/// (service, ifname) → ifindex of every veth in the environment, from the kernel.
fn veths(env: &Env) -> BTreeMap<(String, String), LiveLink> {
    let status = kiln_netns::status(&env.name, env.root()).expect("status");
    status
        .services
        .into_iter()
        .flat_map(|s| {
            let service = s.service;
            s.links
                .into_iter()
                .filter(|l| l.kind == "veth")
                .map(move |l| ((service.clone(), l.ifname.clone()), l))
        })
        .collect()
}

/// Asserts nothing of `plan` is left: no mount under the env dir, no env dir, no link of ours
/// in the host namespace, and only `lo` in each namespace still held open by `held`.
fn assert_gone(env: &Env, plan_ifnames: &[String], held: &[(String, File)]) {
    assert_eq!(common::mounts_under(env.root()), Vec::<PathBuf>::new());
    assert!(!env.dir().exists(), "{} still exists", env.dir().display());
    let host = common::host_ifnames();
    for name in plan_ifnames {
        assert!(!host.contains(name), "{name} is in the host namespace");
    }
    for (service, f) in held {
        let path = PathBuf::from(format!("/proc/self/fd/{}", f.as_raw_fd()));
        let links = kiln_netns::inspect_netns(&path).expect("inspect held netns");
        let names: Vec<&str> = links.iter().map(|l| l.ifname.as_str()).collect();
        assert_eq!(names, ["lo"], "{service}'s namespace still has links");
    }
}

/// Every interface name in a plan.
fn ifnames(plan: &Plan) -> Vec<String> {
    plan.links
        .iter()
        .flat_map(|l| [l.a.ifname.clone(), l.b.ifname.clone()])
        .collect()
}

/// Opens every service's namespace file (holding the namespaces alive past teardown).
fn hold(env: &Env, plan: &Plan) -> Vec<(String, File)> {
    plan.services
        .iter()
        .map(|s| (s.clone(), File::open(env.path(s)).expect("open netns")))
        .collect()
}

#[test]
fn teardown_after_success_leaves_nothing_and_is_idempotent() {
    let p = common::prefix();
    let env = Env::new();
    let (plan, _) = env.apply(&six(&p), common::pool()).expect("apply");
    assert_eq!(common::mounts_under(&env.dir()).len(), 6);
    assert_eq!(veths(&env).len(), 10);
    let held = hold(&env, &plan);

    let removed = kiln_netns::teardown(&env.name, env.root()).expect("teardown");
    assert_eq!(removed.len(), 6);
    assert_gone(&env, &ifnames(&plan), &held);
    let again = kiln_netns::teardown(&env.name, env.root()).expect("second teardown");
    assert!(again.is_empty());
}

#[test]
fn failed_apply_undoes_itself() {
    let p = common::prefix();
    let env = Env::new();
    let t = six(&p);
    // The fifth service's namespace file cannot be created: a directory is in the way. By then
    // a..d exist with their links (a-b, a-c, b-d, c-d).
    let blocker = env.path(&format!("{p}e"));
    std::fs::create_dir_all(blocker.join("x")).expect("blocker");
    let plan = kiln_netns::plan_for(&env.name, &t, common::pool(), env.root()).expect("plan");
    let err = kiln_netns::apply(&env.name, &plan, env.root())
        .expect_err("apply must fail")
        .to_string();
    assert!(err.contains(&blocker.display().to_string()), "{err}");

    assert_eq!(common::mounts_under(env.root()), Vec::<PathBuf>::new());
    let left: Vec<_> = std::fs::read_dir(env.dir())
        .expect("env dir")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert_eq!(
        left,
        [blocker.file_name().expect("name")],
        "only the blocker"
    );
    assert!(kiln_netns::load_record(env.root(), &env.name)
        .expect("record")
        .is_none());
    let host = common::host_ifnames();
    assert!(ifnames(&plan).iter().all(|n| !host.contains(n)));

    std::fs::remove_dir_all(&blocker).expect("remove blocker");
    kiln_netns::teardown(&env.name, env.root()).expect("teardown");
    assert_gone(&env, &ifnames(&plan), &[]);
}

#[test]
fn failed_incremental_apply_restores_the_live_env() {
    let p = common::prefix();
    let env = Env::new();
    let pool = common::pool();
    let t1 = six(&p);
    env.apply(&t1, pool).expect("apply");
    let before = veths(&env);

    // New link b-c (made while reaching c), and a new service z whose file is blocked.
    let mut t2 = t1.clone();
    t2.services.push(format!("{p}z"));
    t2.edges
        .extend(common::topology(&[], &[("b", "rc", "c"), ("z", "ra", "a")], &p).edges);
    let blocker = env.path(&format!("{p}z"));
    std::fs::create_dir_all(blocker.join("x")).expect("blocker");
    let err = env
        .apply(&t2, pool)
        .expect_err("apply must fail")
        .to_string();
    assert!(err.contains(&blocker.display().to_string()), "{err}");

    let after = veths(&env);
    assert_eq!(
        before
            .iter()
            .map(|(k, l)| (k, l.ifindex))
            .collect::<Vec<_>>(),
        after
            .iter()
            .map(|(k, l)| (k, l.ifindex))
            .collect::<Vec<_>>(),
        "the live env changed"
    );
    let record = kiln_netns::load_record(env.root(), &env.name)
        .expect("record")
        .expect("kept");
    let mut planned = t1.services.clone();
    planned.sort();
    assert_eq!(
        record.plan.services, planned,
        "the record still holds the old plan"
    );
    std::fs::remove_dir_all(&blocker).expect("remove blocker");
}

#[test]
fn incremental_apply_touches_only_what_changed() {
    let p = common::prefix();
    let env = Env::new();
    let pool = common::pool();
    let t1 = six(&p);
    let (plan1, _) = env.apply(&t1, pool).expect("apply");
    let before = veths(&env);

    // Drop edge e-f and service f; add service g with edge g->a; add edge b->c.
    let mut t2 = t1.clone();
    t2.services.retain(|s| s != &format!("{p}f"));
    t2.services.push(format!("{p}g"));
    t2.edges.retain(|e| e.name != "rf");
    t2.edges
        .extend(common::topology(&[], &[("g", "ra", "a"), ("b", "rc", "c")], &p).edges);
    let (plan2, applied) = env.apply(&t2, pool).expect("second apply");
    assert_eq!(applied.created_services, [format!("{p}g")]);
    assert_eq!(applied.removed_services, [format!("{p}f")]);
    assert_eq!(applied.created_links.len(), 2, "{applied:?}");
    assert_eq!(applied.kept_links.len(), 4, "{applied:?}");
    assert_eq!(applied.removed_links, [format!("{p}e:{p}f")]);

    let after = veths(&env);
    for link in &plan1.links {
        for end in [&link.a, &link.b] {
            let key = (end.service.clone(), end.ifname.clone());
            let kept = plan2.links.contains(link);
            match (kept, after.get(&key)) {
                (true, Some(l)) => {
                    assert_eq!(l.ifindex, before[&key].ifindex, "{key:?} was recreated");
                    assert_eq!(l.addresses, before[&key].addresses);
                }
                (false, None) => {}
                (kept, now) => panic!("{key:?}: kept={kept} but now {now:?}"),
            }
        }
    }
    assert!(!env.path(&format!("{p}f")).exists());
    assert_eq!(after.len(), plan2.links.len() * 2);
    let (_, same) = env.apply(&t2, pool).expect("third apply");
    assert!(
        same.created_links.is_empty() && same.removed_links.is_empty(),
        "{same:?}"
    );
}

/// A forked child joins a service's namespace by its path (as an OCI runtime does) and
/// connects to the declared peer, then to an undeclared one.
#[test]
fn a_process_joins_by_path_and_reaches_only_its_peer() {
    let p = common::prefix();
    let env = Env::new();
    let (plan, _) = env.apply(&six(&p), common::pool()).expect("apply");
    let (a, b, f) = (format!("{p}a"), format!("{p}b"), format!("{p}f"));
    let listener = kiln_netns::with_netns(&env.path(&b), || {
        std::net::TcpListener::bind(("0.0.0.0", 7100))
    })
    .expect("enter")
    .expect("listen");
    let (_, peer) = plan
        .links_of(&a)
        .find(|(_, x)| x.service == b)
        .expect("a-b");
    let (_, far) = plan.links_of(&f).next().expect("f has a link");

    assert_eq!(join_and_connect(&env.path(&a), peer.ip, 7100), 0);
    let (_, from) = listener.accept().expect("accept from child");
    let (mine, _) = plan
        .links_of(&a)
        .find(|(_, x)| x.service == b)
        .expect("a-b");
    assert_eq!(from.ip(), mine.ip);
    assert_eq!(
        join_and_connect(&env.path(&a), far.ip, 7100),
        nix::libc::ENETUNREACH
    );
}

/// Forks; the child setns()es into `netns` and connects to `ip:port`. Returns 0 on success,
/// else the errno the child saw.
fn join_and_connect(netns: &Path, ip: std::net::Ipv4Addr, port: u16) -> i32 {
    use nix::libc;
    let path = std::ffi::CString::new(netns.as_os_str().as_encoded_bytes()).expect("path");
    let addr = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: port.to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(ip).to_be(),
        },
        sin_zero: [0; 8],
    };
    // SAFETY: the child only makes raw system calls (no allocation, no locks) and _exits.
    match unsafe { nix::unistd::fork() }.expect("fork") {
        nix::unistd::ForkResult::Child => {
            // SAFETY: raw syscalls on valid pointers (a CString and a sockaddr_in on the stack).
            unsafe {
                let fd = libc::open(path.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC);
                if fd < 0 || libc::setns(fd, libc::CLONE_NEWNET) != 0 {
                    libc::_exit(200);
                }
                let s = libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0);
                let r = libc::connect(
                    s,
                    (&addr as *const libc::sockaddr_in).cast(),
                    std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
                );
                libc::_exit(if r == 0 { 0 } else { *libc::__errno_location() });
            }
        }
        nix::unistd::ForkResult::Parent { child } => {
            match nix::sys::wait::waitpid(child, None).expect("waitpid") {
                nix::sys::wait::WaitStatus::Exited(_, code) => code,
                other => panic!("child: {other:?}"),
            }
        }
    }
}

#[test]
fn changing_the_pool_readdresses_every_link() {
    let p = common::prefix();
    let env = Env::new();
    let t = six(&p);
    env.apply(&t, common::pool()).expect("apply");
    let pool2 = common::pool();
    let (plan2, applied) = env.apply(&t, pool2).expect("re-apply in another pool");
    assert!(applied.kept_links.is_empty(), "{applied:?}");
    assert_eq!(applied.created_links.len(), plan2.links.len());
    let prefix = pool2.to_string();
    let prefix = prefix.rsplit_once('.').expect("dotted").0;
    let now = veths(&env);
    assert_eq!(now.len(), plan2.links.len() * 2);
    for l in now.values() {
        assert_eq!(l.addresses.len(), 1, "{l:?}");
        assert!(l.addresses[0].starts_with(prefix), "{l:?} not in {pool2}");
    }
}
