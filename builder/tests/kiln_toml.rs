//! kiln.toml: the example parses; each invalid case names the right line and key.

use kiln_builder::config::{self, Flavor, Problem};

const VALID: &str = r#"project = "shop"

[services.web]
base = "python"
source = "web"
start = "python3 server.py"
port = 8000
env = { GREETING = "hello" }
relationships = { cache = "cache:redis" }
mounts = { "/app/data" = { size = "256M" } }

[services.web.build]
flavor = "pip"
hook = "python3 make_assets.py"

[services.web.deploy]
hook = "python3 migrate.py"
post = ["python3 warm_cache.py"]

[services.cache]
image = "redis"
port = 6379
scheme = "redis"
"#;

#[test]
fn the_reference_config_parses_into_typed_services() {
    let project = config::parse("kiln.toml", VALID).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(project.project, "shop");
    let web = &project.services["web"];
    let app = web.app().unwrap_or_else(|| panic!("web is an app"));
    assert_eq!(app.base, "python");
    assert_eq!(app.source, "web");
    assert_eq!(app.build.flavor, Flavor::Pip);
    assert_eq!(app.deploy.post, ["python3 warm_cache.py"]);
    assert_eq!(
        (
            app.deploy.health.as_deref(),
            app.deploy.health_timeout_secs,
            app.deploy.stop_grace_secs
        ),
        (None, 30, 10),
        "deploy defaults"
    );
    assert_eq!(web.mounts["/app/data"].size_bytes, 256 << 20);
    let cache = &web.relationships["cache"];
    assert_eq!(
        (cache.service.as_str(), cache.endpoint.as_str()),
        ("cache", "redis")
    );
    assert_eq!((cache.port, cache.scheme.as_str()), (6379, "redis"));
    assert_eq!(project.services["cache"].image(), Some("redis"));
    assert_eq!(web.endpoints["http"].port, 8000);
}

#[test]
fn deploy_health_and_grace_settings_parse() {
    let text = VALID.replace(
        "post = [",
        "health = \"python3 -c 'import sys'\"\nhealth_timeout = 5\nstop_grace = 0\npost = [",
    );
    let project = config::parse("kiln.toml", &text).unwrap_or_else(|e| panic!("{e}"));
    let deploy = &project.services["web"].app().expect("app").deploy;
    assert_eq!(deploy.health.as_deref(), Some("python3 -c 'import sys'"));
    assert_eq!((deploy.health_timeout_secs, deploy.stop_grace_secs), (5, 0));
}

#[test]
fn examples_shop_parses() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/shop/kiln.toml");
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let project = config::parse("examples/shop/kiln.toml", &text).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(project.project, "shop");
    assert!(project.services["web"].app().is_some());
    assert_eq!(project.services["cache"].image(), Some("redis"));
}

/// Replaces the first occurrence of `from` in the reference config.
fn edit(from: &str, to: &str) -> String {
    assert!(
        VALID.contains(from),
        "case edits text that is not there: {from}"
    );
    VALID.replacen(from, to, 1)
}

struct Case {
    name: &'static str,
    text: String,
    line: usize,
    key: &'static str,
    says: &'static str,
}

fn case(
    name: &'static str,
    text: String,
    line: usize,
    key: &'static str,
    says: &'static str,
) -> Case {
    Case {
        name,
        text,
        line,
        key,
        says,
    }
}

fn invalid_cases() -> Vec<Case> {
    vec![
        case(
            "unknown key",
            edit("port = 8000", "port = 8000\nportt = 1"),
            8,
            "services.web.portt",
            "unknown field",
        ),
        case(
            "wrong type",
            edit("port = 8000", "port = \"8000\""),
            7,
            "services.web.port",
            "u16",
        ),
        case(
            "port out of range",
            edit("port = 8000", "port = 70000"),
            7,
            "services.web.port",
            "u16",
        ),
        case(
            "port zero",
            edit("port = 8000", "port = 0"),
            7,
            "services.web.port",
            "between 1 and 65535",
        ),
        case(
            "app and image",
            edit(
                "start = \"python3 server.py\"",
                "start = \"x\"\nimage = \"redis\"",
            ),
            4,
            "services.web.base",
            "both `image`",
        ),
        case(
            "neither app nor image",
            edit("image = \"redis\"\n", ""),
            20,
            "services.cache",
            "neither an app",
        ),
        case(
            "app without start",
            edit("start = \"python3 server.py\"\n", ""),
            3,
            "services.web.start",
            "required for an app",
        ),
        case(
            "unknown service",
            edit("cache = \"cache:redis\"", "cache = \"db:redis\""),
            9,
            "services.web.relationships.cache",
            "service `db`",
        ),
        case(
            "unknown endpoint",
            edit("cache = \"cache:redis\"", "cache = \"cache:http\""),
            9,
            "services.web.relationships.cache",
            "no endpoint `http`",
        ),
        case(
            "self relationship",
            edit("cache = \"cache:redis\"", "me = \"web\""),
            9,
            "services.web.relationships.me",
            "its own service",
        ),
        case(
            "relative mount",
            edit("\"/app/data\"", "\"app/data\""),
            10,
            "services.web.mounts.\"app/data\"",
            "not a mount path",
        ),
        case(
            "bad size",
            edit("\"256M\"", "\"lots\""),
            10,
            "services.web.mounts.\"/app/data\".size",
            "not a size",
        ),
        case(
            "bad service name",
            edit(
                "scheme = \"redis\"",
                "scheme = \"redis\"\n[services.Cache_1]\nimage = \"x\"\nport = 1",
            ),
            24,
            "services.Cache_1",
            "not a valid name",
        ),
        case(
            "bad project name",
            edit("project = \"shop\"", "project = \"-shop\""),
            1,
            "project",
            "not a valid name",
        ),
        case(
            "source escapes",
            edit("source = \"web\"", "source = \"../web\""),
            5,
            "services.web.source",
            "not a folder",
        ),
        case(
            "reserved env",
            edit("GREETING", "KILN_GIT_SHA"),
            8,
            "services.web.env.KILN_GIT_SHA",
            "set by kiln",
        ),
        case(
            "unknown flavor",
            edit("flavor = \"pip\"", "flavor = \"cargo\""),
            13,
            "services.web.build.flavor",
            "unknown variant",
        ),
        case(
            "empty hook",
            edit("hook = \"python3 make_assets.py\"", "hook = \" \""),
            14,
            "services.web.build.hook",
            "must not be empty",
        ),
        case(
            "build on a service",
            edit(
                "scheme = \"redis\"",
                "scheme = \"redis\"\n[services.cache.build]\nhook = \"x\"",
            ),
            24,
            "services.cache.build",
            "both `image`",
        ),
        case(
            "deploy unknown key",
            edit("post = [", "pots = 1\npost = ["),
            18,
            "services.web.deploy.pots",
            "unknown field",
        ),
        case(
            "zero health timeout",
            edit("post = [", "health_timeout = 0\npost = ["),
            18,
            "services.web.deploy.health_timeout",
            "at least 1 second",
        ),
        case(
            "endless stop grace",
            edit("post = [", "stop_grace = 99999999999\npost = ["),
            18,
            "services.web.deploy.stop_grace",
            "at most 604800 seconds",
        ),
        case(
            "empty health command",
            edit("post = [", "health = \" \"\npost = ["),
            18,
            "services.web.deploy.health",
            "must not be empty",
        ),
        case(
            "missing project",
            edit("project = \"shop\"\n", ""),
            1,
            "",
            "missing field `project`",
        ),
        case(
            "size of the wrong type",
            edit("size = \"256M\"", "size = true"),
            10,
            "services.web.mounts.\"/app/data\".size",
            "a size such as",
        ),
        case(
            "endpoints on an app",
            edit(
                "port = 8000",
                "port = 8000\nendpoints = { x = { port = 1 } }",
            ),
            8,
            "services.web.endpoints",
            "only for services",
        ),
        case(
            "syntax error",
            edit("port = 8000", "port = = 8000"),
            7,
            "",
            "TOML syntax",
        ),
    ]
}

#[test]
fn each_invalid_case_names_its_line_and_key() {
    let cases = invalid_cases();
    assert!(cases.len() >= 10);
    let mut failures = Vec::new();
    for c in &cases {
        let errors = match config::parse("kiln.toml", &c.text) {
            Ok(_) => {
                failures.push(format!("{}: parsed, expected an error", c.name));
                continue;
            }
            Err(errors) => errors,
        };
        let Some(first) = errors.first() else {
            failures.push(format!("{}: empty error list", c.name));
            continue;
        };
        let shown = first.to_string();
        eprintln!("{:>22}: {shown}", c.name);
        let expected_prefix = format!("kiln.toml:{}:", c.line);
        let key_ok =
            first.key == c.key && (c.key.is_empty() || shown.contains(&format!("`{}`", c.key)));
        if first.line != c.line
            || !key_ok
            || !shown.contains(c.says)
            || !shown.starts_with(&expected_prefix)
        {
            failures.push(format!(
                "{}: got {shown:?} (line {}, key {:?}); expected line {}, key {:?}, saying {:?}",
                c.name, first.line, first.key, c.line, c.key, c.says
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn every_problem_is_reported_in_file_order() {
    let text = edit("port = 8000", "port = 0").replace("\"256M\"", "\"0\"");
    let errors = config::parse("kiln.toml", &text)
        .err()
        .unwrap_or_else(|| panic!("should fail"));
    let keys: Vec<&str> = errors.0.iter().map(|e| e.key.as_str()).collect();
    assert_eq!(
        keys,
        [
            "services.web.port",
            "services.web.mounts.\"/app/data\".size"
        ]
    );
    assert!(matches!(errors.0[0].problem, Problem::ZeroPort));
}

#[test]
fn a_relationship_to_an_app_without_port_is_refused() {
    let text = edit("port = 8000\n", "").replace(
        "scheme = \"redis\"\n",
        "scheme = \"redis\"\nrelationships = { app = \"web\" }\n",
    );
    let errors = config::parse("kiln.toml", &text)
        .err()
        .unwrap_or_else(|| panic!("should fail"));
    let first = errors.first().unwrap_or_else(|| panic!("no error"));
    assert_eq!(first.key, "services.cache.relationships.app");
    assert!(
        matches!(&first.problem, Problem::NoEndpoints(s) if s == "web"),
        "{errors}"
    );
}

#[test]
fn nested_mounts_and_ambiguous_endpoints_are_refused() {
    let nested = edit(
        "mounts = { \"/app/data\" = { size = \"256M\" } }",
        "mounts = { \"/app/data\" = { size = \"1G\" }, \"/app/data/x\" = { size = \"1M\" } }",
    );
    let errors = config::parse("kiln.toml", &nested)
        .err()
        .unwrap_or_else(|| panic!("should fail"));
    assert!(
        errors.to_string().contains("inside mount `/app/data`"),
        "{errors}"
    );

    let two = edit(
        "port = 6379\nscheme = \"redis\"",
        "endpoints = { redis = { port = 6379, scheme = \"redis\" }, metrics = { port = 9121, scheme = \"http\" } }",
    )
    .replace("cache = \"cache:redis\"", "cache = \"cache\"");
    let errors = config::parse("kiln.toml", &two)
        .err()
        .unwrap_or_else(|| panic!("should fail"));
    assert!(errors.to_string().contains("has 2 endpoints"), "{errors}");
}
