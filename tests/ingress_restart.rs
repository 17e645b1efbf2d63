//! Restarting the ingress under load: 8 keep-alive clients (through an environment's own port
//! and by host) see no failed request while the old process hands its listening sockets to
//! the new one and finishes what it has in flight.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use kiln_router::daemon;
use kiln_testkit::deploy_support::{app_in, load, via, TestEnv};
use kiln_testkit::ingress_support::{register, IngressGuard, Raw};

#[test]
fn a_restart_under_eight_keep_alive_clients_fails_no_request() {
    let env = TestEnv::with_netns(&["app"]);
    let _app = app_in(&env.netns("app"), "v1");
    let ingress = IngressGuard::start(&env, &["--listen", "127.0.0.1:0"]);
    register(&env, &env.name, &env.app("app").to_string(), "shop", &[]);
    let own = daemon::running(&env.root(), &env.name)
        .expect("record")
        .expect("registered")
        .listen;
    let old = ingress.info.process;
    let stop = Arc::new(AtomicBool::new(false));
    let clients = load(&via(own), 8, &stop);
    std::thread::sleep(Duration::from_millis(300));
    let out = env.sandbox.ok(&["ingress", "restart"]);
    assert!(out.contains("new pid"), "{out}");
    std::thread::sleep(Duration::from_millis(300));
    // A new connection by host reaches the new process.
    let host = format!("{}.shop.localhost", env.name);
    assert_eq!(Raw::new(ingress.addr()).get(&host, "/").text(), "v1 0");
    assert!(
        old.wait_gone(Duration::from_secs(10)),
        "the old ingress ended"
    );
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    let results: Vec<_> = clients
        .into_iter()
        .map(|c| c.join().expect("client"))
        .collect();
    let ok: u64 = results.iter().map(|r| r.ok).sum();
    let failed: u64 = results.iter().map(|r| r.failed).sum();
    println!("restart under load: {ok} requests ok, {failed} failed");
    for (i, r) in results.iter().enumerate() {
        assert_eq!(r.failed, 0, "client {i}: {:?}", r.errors);
    }
    assert!(ok > 100, "{ok}");
    let new = daemon::ingress_running(&env.root())
        .expect("record")
        .expect("new ingress");
    assert_ne!(new.process.pid, old.pid);
    assert_eq!(new.listen, ingress.info.listen, "same listening address");
    let reg = daemon::running(&env.root(), &env.name)
        .expect("record")
        .expect("registered");
    assert_eq!((reg.process.pid, reg.listen), (new.process.pid, own));
}
