//! Every ordered pair of services is tried: declared pairs connect, nothing else does.

mod common;

use std::collections::BTreeMap;
use std::io::ErrorKind;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

use common::Env;
use kiln_netns::with_netns;

const PORT: u16 = 7000;

/// Connects to `ip:port` from inside the namespace at `path`.
fn connect_from(path: &std::path::Path, ip: Ipv4Addr, port: u16) -> std::io::Result<TcpStream> {
    with_netns(path, || {
        TcpStream::connect_timeout(&SocketAddr::from((ip, port)), Duration::from_secs(3))
    })
    .expect("enter netns")
}

#[test]
fn declared_pairs_connect_and_nothing_else() {
    let p = common::prefix();
    let names = ["web", "app", "worker", "db", "cache", "search", "queue"];
    let services = common::services(&p, &names);
    let t = common::topology(
        &services,
        &[
            ("web", "backend", "app"),
            ("app", "database", "db"),
            ("app", "cache", "cache"),
            ("app", "search", "search"),
            ("app", "jobs", "queue"),
            ("worker", "database", "db"),
            ("worker", "jobs", "queue"),
        ],
        &p,
    );
    let env = Env::new();
    let host_before = common::host_ifnames();
    let (plan, applied) = env.apply(&t, common::pool()).expect("apply");
    let host_after = common::host_ifnames();
    for name in &host_after {
        assert!(
            host_before.contains(name) || !services.contains(name),
            "apply left {name} in the host namespace"
        );
    }
    assert_eq!(applied.created_services.len(), 7);
    assert_eq!(applied.created_links.len(), 7);

    // A listener in every namespace, on every address.
    let listeners: BTreeMap<&String, TcpListener> = services
        .iter()
        .map(|s| {
            let l = with_netns(&env.path(s), || TcpListener::bind(("0.0.0.0", PORT)))
                .expect("enter netns")
                .expect("listen in netns");
            (s, l)
        })
        .collect();
    // The host listens on loopback and on every address: nothing may reach it.
    let host_lo = TcpListener::bind(("127.0.0.1", 0)).expect("host loopback listener");
    let host_any = TcpListener::bind(("0.0.0.0", 0)).expect("host listener");
    let host_lo_port = host_lo.local_addr().expect("addr").port();
    let host_any_port = host_any.local_addr().expect("addr").port();
    let host_ips = common::host_addresses();
    assert!(!host_ips.is_empty());

    let mut failures = Vec::new();
    let mut matrix = String::from("from\\to  ");
    for s in &names {
        matrix.push_str(&format!("{s:>7}"));
    }
    matrix.push_str("   host\n");
    for (i, from) in services.iter().enumerate() {
        matrix.push_str(&format!("{:<9}", names[i]));
        let path = env.path(from);
        for to in &services {
            if from == to {
                matrix.push_str(&format!("{:>7}", "·"));
                continue;
            }
            let link = plan.links_of(from).find(|(_, peer)| &peer.service == to);
            // Every address `to` has, on any of its links.
            let mut reached = false;
            for (target, _) in plan.links_of(to) {
                let declared = link.is_some_and(|(_, peer)| peer.ip == target.ip);
                match connect_from(&path, target.ip, PORT) {
                    Ok(_stream) => {
                        reached = true;
                        let (_, seen) = listeners[to].accept().expect("accept");
                        let (mine, _) = link.expect("connected, so linked");
                        if !declared || seen.ip() != mine.ip {
                            failures.push(format!(
                                "{from} reached {to} at {} (seen from {seen})",
                                target.ip
                            ));
                        }
                    }
                    Err(e) if declared => {
                        failures.push(format!("{from} -> {to} at {}: {e}", target.ip))
                    }
                    Err(e) if e.raw_os_error() != Some(nix::libc::ENETUNREACH) => {
                        failures.push(format!(
                            "{from} -> {to} at {} failed but not as unroutable: {e}",
                            target.ip
                        ))
                    }
                    Err(_) => {}
                }
            }
            matrix.push_str(&format!("{:>7}", if reached { "ok" } else { "--" }));
        }
        // The host: loopback (the namespace's own lo answers, refused) and every host address.
        let mut host_reached = false;
        match connect_from(&path, Ipv4Addr::LOCALHOST, host_lo_port) {
            Ok(_) => host_reached = true,
            Err(e) if e.kind() == ErrorKind::ConnectionRefused => {}
            Err(e) => failures.push(format!("{from} -> host loopback: unexpected {e}")),
        }
        for ip in &host_ips {
            if ip.is_loopback() {
                continue;
            }
            match connect_from(&path, *ip, host_any_port) {
                Ok(_) => host_reached = true,
                Err(e) if e.raw_os_error() == Some(nix::libc::ENETUNREACH) => {}
                Err(e) => failures.push(format!("{from} -> host {ip}: unexpected {e}")),
            }
        }
        if host_reached {
            failures.push(format!("{from} reached the host"));
        }
        matrix.push_str(&format!("{:>7}\n", if host_reached { "ok" } else { "--" }));
    }
    println!("reachability (ok = TCP connect succeeded, -- = no route / refused):\n{matrix}");
    for l in [&host_lo, &host_any] {
        l.set_nonblocking(true).expect("nonblocking");
        if let Ok((_, peer)) = l.accept() {
            failures.push(format!("host listener got a connection from {peer}"));
        }
    }
    assert!(failures.is_empty(), "{}\n{matrix}", failures.join("\n"));

    // Every linked pair connects, both ways; every other pair does not.
    let expected_ok = plan.links.len() * 2;
    assert_eq!(matrix.matches(" ok").count(), expected_ok, "{matrix}");
}

#[test]
fn kernel_holds_exactly_the_plan() {
    let p = common::prefix();
    let services = common::services(&p, &["a", "b", "c"]);
    let t = common::topology(&services, &[("a", "bee", "b"), ("c", "bee", "b")], &p);
    let env = Env::new();
    let (plan, _) = env.apply(&t, common::pool()).expect("apply");
    let status = kiln_netns::status(&env.name, env.root()).expect("status");
    assert_eq!(status.plan.as_ref(), Some(&plan));
    for s in &status.services {
        assert!(s.present, "{} missing", s.service);
        let lo = &s.links[0];
        assert_eq!((lo.ifname.as_str(), lo.up), ("lo", true));
        let veths: Vec<_> = s.links.iter().filter(|l| l.kind == "veth").collect();
        assert_eq!(
            veths.len() + 1,
            s.links.len(),
            "only lo and veths: {:?}",
            s.links
        );
        let planned: Vec<_> = plan.links_of(&s.service).collect();
        assert_eq!(veths.len(), planned.len());
        for (mine, peer) in planned {
            let l = veths
                .iter()
                .find(|l| l.ifname == mine.ifname)
                .unwrap_or_else(|| panic!("{} has no {}", s.service, mine.ifname));
            assert!(l.up && l.lower_up, "{l:?}");
            assert_eq!(l.addresses, vec![format!("{}/31", mine.ip)]);
            assert_eq!(l.routes, vec![format!("{}/32", peer.ip)]);
        }
    }
    // The hosts file of b names both peers by their service names.
    let hosts = plan.hosts(&services[1]).expect("hosts");
    assert!(
        hosts.contains(&services[0]) && hosts.contains(&services[2]),
        "{hosts}"
    );
}
