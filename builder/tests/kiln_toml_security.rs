//! `[services.<name>.security]`: the host-root opt-out parses, defaults to off, and bad values
//! are errors naming the key.

use kiln_builder::config;

const BASE: &str = r#"project = "shop"

[services.web]
base = "python"
source = "web"
start = "python3 server.py"
port = 8000

[services.cache]
image = "redis"
port = 6379
"#;

#[test]
fn host_root_opts_out_and_defaults_off() {
    let text = format!("{BASE}\n[services.cache.security]\nhost_root = true\n");
    let p = config::parse("kiln.toml", &text).unwrap_or_else(|e| panic!("{e}"));
    assert!(p.services["cache"].security.host_root);
    assert!(!p.services["web"].security.host_root);
    let p = config::parse("kiln.toml", BASE).unwrap_or_else(|e| panic!("{e}"));
    assert!(!p.services["cache"].security.host_root);
}

#[test]
fn bad_security_values_name_the_key() {
    for (table, want) in [
        ("host_root = \"yes\"\n", "host_root"),
        ("root = true\n", "root"),
    ] {
        let text = format!("{BASE}\n[services.web.security]\n{table}");
        let err = config::parse("kiln.toml", &text)
            .expect_err("refused")
            .to_string();
        assert!(err.contains(want) && err.contains("security"), "{err}");
    }
}
