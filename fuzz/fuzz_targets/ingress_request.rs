//! Arbitrary bytes through the request parsing kiln's ingress still does itself: the first
//! request head checks (`strict`), Host parsing and route expansion and matching (`routes`),
//! and control-protocol lines (`protocol`). None may panic; the checks must agree with each
//! other (a head `check_head` accepts has no NUL and no bare CR; a host `host_of` accepts is
//! stable under normalizing again and matches its own route).
#![no_main]

use kiln_router::protocol::Command;
use kiln_router::routes::{self, RouteSpec, RouteTable, Target};
use kiln_router::strict;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Some(end) = strict::head_end(data) {
        assert!(end <= data.len());
        if strict::check_head(&data[..end]).is_ok() {
            assert!(!data[..end].contains(&0));
        }
    }
    let _ = strict::check_head(data);
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (host, path) = text.split_once('\n').unwrap_or((text, "/"));
    if let Ok(h) = routes::host_of(host) {
        assert_eq!(routes::normalize_host(&h).as_deref(), Ok(h.as_str()));
        let spec = RouteSpec {
            pattern: format!("http://{h}/"),
            target: Target::Upstream { upstream: None },
            primary: false,
        };
        if let Ok(expanded) = routes::expand("e", "e.p.localhost", &[spec]) {
            let table = RouteTable::build([expanded.as_slice()]).expect("one env never conflicts");
            assert!(table.lookup(&h, "/").is_some());
            let _ = table.lookup(&h, path);
        }
    }
    let spec = RouteSpec {
        pattern: text.to_string(),
        target: Target::Upstream { upstream: None },
        primary: true,
    };
    if let Ok(expanded) = routes::expand("e", "e.p.localhost", &[spec]) {
        let table = RouteTable::build([expanded.as_slice()]).expect("one route never conflicts");
        let r = &expanded[0];
        assert!(table.lookup(&r.host, &r.path).is_some(), "{r:?}");
        let _ = routes::routes_env(&expanded);
    }
    if let Ok(cmd) = Command::parse(text) {
        assert_eq!(Command::parse(&cmd.to_line()), Ok(cmd));
    }
});
