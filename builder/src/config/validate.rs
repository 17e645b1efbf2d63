//! Checks beyond serde: app vs service, names, relationships, mounts, sizes, env, commands.

use std::collections::BTreeMap;

use super::error::Problem;
use super::model::{
    is_registry_reference, App, Build, Deploy, Endpoint, ImageService, Mount, ProjectConfig,
    Registry, Relationship, Route, Security, Service, ServiceKind, APP_ROOT,
    DEFAULT_HOOK_TIMEOUT_SECS,
};
use super::schema::{
    RawBuild, RawDeploy, RawEndpoint, RawProject, RawRegistry, RawRoute, RawService, RawSize,
};
use super::size::parse_size;

/// A problem at a key path, before it is located in the text.
pub(crate) type Found = (Vec<String>, Problem);

/// Collects problems under a key path prefix.
struct Checker {
    found: Vec<Found>,
}

impl Checker {
    fn report(&mut self, path: &[&str], problem: Problem) {
        self.found
            .push((path.iter().map(|s| s.to_string()).collect(), problem));
    }
}

/// Validates a parsed kiln.toml into its typed form, or lists every problem with its key path.
pub(crate) fn validate(raw: RawProject) -> Result<ProjectConfig, Vec<Found>> {
    let mut c = Checker { found: Vec::new() };
    if !is_dns_label(&raw.project) {
        c.report(&["project"], Problem::BadName(raw.project.clone()));
    }
    if raw.services.is_empty() {
        c.report(&["project"], Problem::NoServices);
    }
    let mut services = BTreeMap::new();
    for (name, svc) in &raw.services {
        if !is_dns_label(name) {
            c.report(&["services", name], Problem::BadName(name.clone()));
        }
        if let Some(service) = check_service(&mut c, name, svc) {
            services.insert(name.clone(), service);
        }
    }
    // Relationships need every service's endpoints first.
    for (name, svc) in &raw.services {
        let relationships =
            resolve_relationships(&mut c, name, &svc.relationships, &services, &raw.services);
        if let Some(service) = services.get_mut(name) {
            service.relationships = relationships;
        }
    }
    let registry = raw
        .registry
        .as_ref()
        .and_then(|r| check_registry(&mut c, r));
    let routes = check_routes(&mut c, &raw.routes, &services);
    if c.found.is_empty() {
        Ok(ProjectConfig {
            project: raw.project,
            services,
            registry,
            routes,
        })
    } else {
        Err(c.found)
    }
}

/// `[routes]`: each pattern an http(s) URL, an upstream that is an app with a port (or a
/// redirect, not both), redirect codes 301/302/307/308, at most one primary.
fn check_routes(
    c: &mut Checker,
    raw: &BTreeMap<String, RawRoute>,
    services: &BTreeMap<String, Service>,
) -> BTreeMap<String, Route> {
    let mut out = BTreeMap::new();
    for (pattern, r) in raw {
        let at = ["routes", pattern.as_str()];
        let mut bad = |why: String| c.report(&at, Problem::BadRoute(why));
        if !(pattern.starts_with("http://") || pattern.starts_with("https://")) {
            bad("a route is a URL starting with http:// or https:// (`{default}` is the environment's host)".into());
        }
        match (&r.upstream, &r.redirect) {
            (Some(_), Some(_)) => bad("sets both `upstream` and `redirect`; use one".into()),
            (Some(app), None) => match services.get(app).and_then(|s| s.app()) {
                None => bad(format!(
                    "upstream `{app}` is not an app declared in [services]"
                )),
                Some(a) if a.port.is_none() => {
                    bad(format!("upstream `{app}` has no `port` to route to"))
                }
                Some(_) => {}
            },
            (None, Some(_)) => {}
            (None, None) => {}
        }
        if let Some(code) = r.code {
            if r.redirect.is_none() || ![301, 302, 307, 308].contains(&code) {
                bad(format!(
                    "`code = {code}`: a redirect's code is 301, 302, 307 or 308"
                ));
            }
        }
        out.insert(
            pattern.clone(),
            Route {
                upstream: r.upstream.clone(),
                redirect: r.redirect.clone(),
                code: r.code,
                primary: r.primary.unwrap_or(false),
            },
        );
    }
    let primaries: Vec<&String> = out
        .iter()
        .filter(|(_, r)| r.primary)
        .map(|(p, _)| p)
        .collect();
    if primaries.len() > 1 {
        c.report(
            &["routes", primaries[1].as_str()],
            Problem::BadRoute(format!(
                "more than one route is primary (also `{}`)",
                primaries[0]
            )),
        );
    }
    out
}

/// The first app-only key a service sets, by name.
fn first_app_key(svc: &RawService) -> Option<&'static str> {
    [
        ("base", svc.base.is_some()),
        ("source", svc.source.is_some()),
        ("start", svc.start.is_some()),
        ("build", svc.build.is_some()),
        ("deploy", svc.deploy.is_some()),
    ]
    .into_iter()
    .find_map(|(key, set)| set.then_some(key))
}

fn check_service(c: &mut Checker, name: &str, svc: &RawService) -> Option<Service> {
    let at = ["services", name];
    let env = check_env(c, &["services", name, "env"], &svc.env);
    let mounts = check_mounts(c, name, &svc.mounts);
    let kind = match (&svc.image, first_app_key(svc)) {
        (Some(_), Some(app_key)) => {
            c.report(
                &["services", name, app_key],
                Problem::AppAndImage { app_key },
            );
            None
        }
        (None, None) => {
            c.report(&at, Problem::NeitherAppNorImage);
            None
        }
        (Some(image), None) => check_image_service(c, name, svc, image),
        (None, Some(_)) => check_app(c, name, svc),
    };
    let (kind, endpoints) = kind?;
    Some(Service {
        name: name.to_string(),
        kind,
        env,
        relationships: BTreeMap::new(),
        mounts,
        endpoints,
        security: Security {
            host_root: svc
                .security
                .as_ref()
                .and_then(|s| s.host_root)
                .unwrap_or(false),
        },
    })
}

type KindAndEndpoints = (ServiceKind, BTreeMap<String, Endpoint>);

fn check_image_service(
    c: &mut Checker,
    name: &str,
    svc: &RawService,
    image: &str,
) -> Option<KindAndEndpoints> {
    if image.trim().is_empty() {
        c.report(&["services", name, "image"], Problem::Empty);
    }
    let endpoints = match (&svc.endpoints, svc.port) {
        (Some(_), Some(_)) => {
            c.report(&["services", name, "endpoints"], Problem::PortAndEndpoints);
            BTreeMap::new()
        }
        (Some(table), None) => check_endpoints(c, name, table),
        (None, Some(port)) => default_endpoint(c, name, port, svc.scheme.as_deref(), "tcp"),
        (None, None) => {
            c.report(&["services", name], Problem::NoEndpoint);
            BTreeMap::new()
        }
    };
    let kind = ServiceKind::Image(ImageService {
        image: image.to_string(),
    });
    Some((kind, endpoints))
}

fn check_app(c: &mut Checker, name: &str, svc: &RawService) -> Option<KindAndEndpoints> {
    if svc.endpoints.is_some() {
        c.report(&["services", name, "endpoints"], Problem::NotForApp);
    }
    let base = required(c, name, "base", svc.base.as_deref());
    if let Some(b) = base.filter(|b| is_registry_reference(b)) {
        if let Err(reason) = check_registry_base(b) {
            c.report(
                &["services", name, "base"],
                Problem::BadRegistryReference(b.to_string(), reason),
            );
        }
    }
    let source = required(c, name, "source", svc.source.as_deref());
    let start = required(c, name, "start", svc.start.as_deref());
    if let Some(source) = source {
        if !is_clean_relative(source) {
            c.report(
                &["services", name, "source"],
                Problem::BadSource(source.to_string()),
            );
        }
    }
    let endpoints = match svc.port {
        Some(port) => default_endpoint(c, name, port, svc.scheme.as_deref(), "http"),
        None => BTreeMap::new(),
    };
    let build = check_build(c, name, svc.build.as_ref());
    let deploy = check_deploy(c, name, svc.deploy.as_ref());
    let app = App {
        base: base?.to_string(),
        source: source?.to_string(),
        start: start?.to_string(),
        port: svc.port,
        build,
        deploy,
    };
    Some((ServiceKind::App(app), endpoints))
}

/// A required, non-empty app key.
fn required<'a>(c: &mut Checker, name: &str, key: &str, value: Option<&'a str>) -> Option<&'a str> {
    match value {
        None => {
            c.report(&["services", name, key], Problem::MissingForApp);
            None
        }
        Some(v) if v.trim().is_empty() => {
            c.report(&["services", name, key], Problem::Empty);
            None
        }
        Some(v) => Some(v),
    }
}

/// The single endpoint of `port` + `scheme`, named after its scheme.
fn default_endpoint(
    c: &mut Checker,
    name: &str,
    port: u16,
    scheme: Option<&str>,
    default_scheme: &str,
) -> BTreeMap<String, Endpoint> {
    let scheme = scheme.unwrap_or(default_scheme);
    let mut ok = true;
    if port == 0 {
        c.report(&["services", name, "port"], Problem::ZeroPort);
        ok = false;
    }
    if !is_scheme(scheme) {
        c.report(
            &["services", name, "scheme"],
            Problem::BadScheme(scheme.to_string()),
        );
        ok = false;
    }
    let mut endpoints = BTreeMap::new();
    if ok {
        endpoints.insert(
            scheme.to_string(),
            Endpoint {
                port,
                scheme: scheme.to_string(),
            },
        );
    }
    endpoints
}

fn check_endpoints(
    c: &mut Checker,
    name: &str,
    table: &BTreeMap<String, RawEndpoint>,
) -> BTreeMap<String, Endpoint> {
    let mut endpoints = BTreeMap::new();
    if table.is_empty() {
        c.report(&["services", name, "endpoints"], Problem::NoEndpoint);
    }
    for (endpoint, raw) in table {
        let at = ["services", name, "endpoints", endpoint.as_str()];
        if !is_dns_label(endpoint) {
            c.report(&at, Problem::BadName(endpoint.clone()));
        }
        if raw.port == 0 {
            c.report(&[&at[..], &["port"]].concat(), Problem::ZeroPort);
        }
        let scheme = raw.scheme.clone().unwrap_or_else(|| "tcp".to_string());
        if !is_scheme(&scheme) {
            c.report(
                &[&at[..], &["scheme"]].concat(),
                Problem::BadScheme(scheme.clone()),
            );
        }
        endpoints.insert(
            endpoint.clone(),
            Endpoint {
                port: raw.port,
                scheme,
            },
        );
    }
    endpoints
}

fn check_build(c: &mut Checker, name: &str, raw: Option<&RawBuild>) -> Build {
    let Some(raw) = raw else {
        return Build {
            timeout_secs: DEFAULT_HOOK_TIMEOUT_SECS,
            ..Build::default()
        };
    };
    let at = |key: &'static str| -> [String; 4] {
        ["services".into(), name.into(), "build".into(), key.into()]
    };
    check_command(c, &at("hook"), raw.hook.as_deref());
    for (manager, packages) in &raw.dependencies {
        for package in packages {
            if package.trim().is_empty() {
                let path = ["services", name, "build", "dependencies", manager.as_str()];
                c.report(&path, Problem::Empty);
            }
        }
    }
    let env = check_env(c, &["services", name, "build", "env"], &raw.env);
    let timeout_secs = check_timeout(c, &at("timeout"), raw.timeout);
    Build {
        flavor: raw.flavor.unwrap_or_default(),
        dependencies: raw.dependencies.clone(),
        hook: raw.hook.clone(),
        env,
        timeout_secs,
    }
}

fn check_deploy(c: &mut Checker, name: &str, raw: Option<&RawDeploy>) -> Deploy {
    let Some(raw) = raw else {
        return Deploy::default();
    };
    let at = |key: &'static str| -> [String; 4] {
        ["services".into(), name.into(), "deploy".into(), key.into()]
    };
    check_command(c, &at("hook"), raw.hook.as_deref());
    for task in &raw.post {
        check_command(c, &at("post"), Some(task));
    }
    check_command(c, &at("health"), raw.health.as_deref());
    let defaults = Deploy::default();
    Deploy {
        hook: raw.hook.clone(),
        post: raw.post.clone(),
        timeout_secs: check_timeout(c, &at("timeout"), raw.timeout),
        health: raw.health.clone(),
        health_timeout_secs: check_secs(
            c,
            &at("health_timeout"),
            raw.health_timeout,
            defaults.health_timeout_secs,
            false,
        ),
        stop_grace_secs: check_secs(
            c,
            &at("stop_grace"),
            raw.stop_grace,
            defaults.stop_grace_secs,
            true,
        ),
    }
}

fn check_command(c: &mut Checker, path: &[String], command: Option<&str>) {
    if command.is_some_and(|cmd| cmd.trim().is_empty()) {
        c.found.push((path.to_vec(), Problem::Empty));
    }
}

fn check_timeout(c: &mut Checker, path: &[String], timeout: Option<u64>) -> u64 {
    check_secs(c, path, timeout, DEFAULT_HOOK_TIMEOUT_SECS, false)
}

/// The longest time limit accepted, in seconds (a week).
const MAX_SECS: u64 = 7 * 24 * 3600;

/// A time limit in seconds: `default` when unset; more than [`MAX_SECS`] is an error, and so is
/// zero unless `zero_ok`.
fn check_secs(
    c: &mut Checker,
    path: &[String],
    secs: Option<u64>,
    default: u64,
    zero_ok: bool,
) -> u64 {
    match secs {
        Some(0) if !zero_ok => {
            c.found.push((path.to_vec(), Problem::ZeroTimeout));
            default
        }
        Some(s) if s > MAX_SECS => {
            c.found
                .push((path.to_vec(), Problem::TimeoutTooLong { max: MAX_SECS }));
            default
        }
        Some(secs) => secs,
        None => default,
    }
}

fn check_env(
    c: &mut Checker,
    at: &[&str],
    env: &BTreeMap<String, String>,
) -> BTreeMap<String, String> {
    for key in env.keys() {
        let path = [at, &[key.as_str()]].concat();
        if !is_env_name(key) {
            c.report(&path, Problem::BadEnvName(key.clone()));
        } else if key.starts_with("KILN_") {
            c.report(&path, Problem::ReservedEnv(key.clone()));
        }
    }
    env.clone()
}

fn check_mounts(
    c: &mut Checker,
    name: &str,
    raw: &BTreeMap<String, super::schema::RawMount>,
) -> BTreeMap<String, Mount> {
    let mut mounts = BTreeMap::new();
    for (path, mount) in raw {
        let at = ["services", name, "mounts", path.as_str()];
        if !is_mount_path(path) {
            c.report(&at, Problem::BadMountPath(path.clone()));
            continue;
        }
        let size = match &mount.size {
            RawSize::Bytes(bytes) => (*bytes > 0).then_some(*bytes),
            RawSize::Text(text) => parse_size(text),
        };
        let Some(size_bytes) = size else {
            let shown = match &mount.size {
                RawSize::Bytes(bytes) => bytes.to_string(),
                RawSize::Text(text) => text.clone(),
            };
            c.report(&[&at[..], &["size"]].concat(), Problem::BadSize(shown));
            continue;
        };
        mounts.insert(path.clone(), Mount { size_bytes });
    }
    // Sorted paths put a parent right before the paths under it.
    let paths: Vec<&String> = mounts.keys().collect();
    for (i, inner) in paths.iter().enumerate() {
        if let Some(outer) = paths[..i]
            .iter()
            .find(|outer| inner.starts_with(&format!("{outer}/")))
        {
            c.report(
                &["services", name, "mounts", inner.as_str()],
                Problem::NestedMount {
                    inner: inner.to_string(),
                    outer: outer.to_string(),
                },
            );
        }
    }
    mounts
}

fn resolve_relationships(
    c: &mut Checker,
    name: &str,
    raw: &BTreeMap<String, String>,
    services: &BTreeMap<String, Service>,
    declared: &BTreeMap<String, RawService>,
) -> BTreeMap<String, Relationship> {
    let mut resolved = BTreeMap::new();
    for (rel, value) in raw {
        let at = ["services", name, "relationships", rel.as_str()];
        if !is_dns_label(rel) {
            c.report(&at, Problem::BadName(rel.clone()));
            continue;
        }
        let (target, endpoint) = match value.split_once(':') {
            Some((target, endpoint)) => (target, Some(endpoint)),
            None => (value.as_str(), None),
        };
        if target.is_empty() || endpoint.is_some_and(str::is_empty) {
            c.report(&at, Problem::BadRelationship(value.clone()));
            continue;
        }
        if target == name {
            c.report(&at, Problem::SelfRelationship(target.to_string()));
            continue;
        }
        let Some(service) = services.get(target) else {
            // A declared but invalid service was already reported; only name truly unknown ones.
            if !declared.contains_key(target) {
                c.report(&at, Problem::UnknownService(target.to_string()));
            }
            continue;
        };
        let chosen = match endpoint {
            Some(endpoint) => {
                service
                    .endpoints
                    .get_key_value(endpoint)
                    .ok_or_else(|| Problem::UnknownEndpoint {
                        service: target.to_string(),
                        endpoint: endpoint.to_string(),
                        available: list_or_none(service.endpoints.keys()),
                    })
            }
            None if service.endpoints.is_empty() => Err(Problem::NoEndpoints(target.to_string())),
            None if service.endpoints.len() == 1 => {
                service.endpoints.iter().next().ok_or(Problem::NoEndpoint)
            }
            None => Err(Problem::AmbiguousEndpoint {
                service: target.to_string(),
                count: service.endpoints.len(),
            }),
        };
        match chosen {
            Ok((endpoint, ep)) => {
                resolved.insert(
                    rel.clone(),
                    Relationship {
                        service: target.to_string(),
                        endpoint: endpoint.clone(),
                        port: ep.port,
                        scheme: ep.scheme.clone(),
                    },
                );
            }
            Err(problem) => c.report(&at, problem),
        }
    }
    resolved
}

fn list_or_none<'a>(names: impl Iterator<Item = &'a String>) -> String {
    let names: Vec<&str> = names.map(String::as_str).collect();
    if names.is_empty() {
        "none".to_string()
    } else {
        names.join(", ")
    }
}

/// 1-63 of `[a-z0-9-]`, starting with a letter, not ending with `-`.
pub(crate) fn is_dns_label(name: &str) -> bool {
    let bytes = name.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 63
        && bytes[0].is_ascii_lowercase()
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
        && !name.ends_with('-')
}

fn is_scheme(scheme: &str) -> bool {
    let bytes = scheme.as_bytes();
    !bytes.is_empty()
        && bytes[0].is_ascii_lowercase()
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"+-.".contains(b))
}

fn is_env_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    !bytes.is_empty()
        && !bytes[0].is_ascii_digit()
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || *b == b'_')
}

/// `.` or `a/b/c` with no empty, `.` or `..` parts.
fn is_clean_relative(path: &str) -> bool {
    path == "."
        || (!path.is_empty()
            && path.split('/').all(|part| {
                !part.is_empty() && part != "." && part != ".." && !part.contains('\0')
            }))
}

/// `/a/b` with clean parts, not `/` and not the code folder itself.
fn is_mount_path(path: &str) -> bool {
    path.strip_prefix('/')
        .is_some_and(|rest| rest != "." && is_clean_relative(rest))
        && path != APP_ROOT
}

/// `[registry] url`: `host[:port]` and an optional path prefix, no scheme, tag or digest.
fn check_registry(c: &mut Checker, r: &RawRegistry) -> Option<Registry> {
    let url = r.url.trim_end_matches('/');
    let host = url.split('/').next().unwrap_or_default();
    let reason = if url.contains("://") {
        Some("give host[:port][/prefix] without a scheme (use plain_http = true for http)")
    } else if host.is_empty()
        || url.contains('@')
        || url.split('/').skip(1).any(|p| p.contains(':'))
    {
        Some("expected host[:port][/prefix], without a tag or digest")
    } else {
        None
    };
    if let Some(reason) = reason {
        c.report(
            &["registry", "url"],
            Problem::BadRegistryReference(r.url.clone(), reason),
        );
        return None;
    }
    Some(Registry {
        url: url.to_string(),
        ca: r.ca.clone(),
        plain_http: r.plain_http,
    })
}

/// A registry `base`: a tag or a full sha256 digest after the repository.
fn check_registry_base(base: &str) -> Result<(), &'static str> {
    let (_, path) = base.split_once('/').unwrap_or((base, ""));
    if let Some((_, digest)) = path.split_once('@') {
        let hex = digest.strip_prefix("sha256:").unwrap_or_default();
        if hex.len() != 64
            || !hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return Err("a digest is @sha256: and 64 lowercase hex digits");
        }
        return Ok(());
    }
    let last = path.rsplit('/').next().unwrap_or_default();
    if path.is_empty() || !last.contains(':') {
        return Err("name the image by :tag or @sha256:… (host[:port]/repository:tag)");
    }
    Ok(())
}

#[cfg(test)]
mod registry_tests {
    use super::super::{parse, Problem};

    fn app(base: &str, extra: &str) -> String {
        format!(
            "project = \"p\"\n{extra}\n[services.web]\nbase = \"{base}\"\nsource = \".\"\nstart = \"x\"\n"
        )
    }

    #[test]
    fn registry_bases_and_the_registry_table_parse() {
        let digest = format!("reg.example:5000/library/python@sha256:{}", "a".repeat(64));
        for base in [
            "reg.example:5000/library/python:3.12",
            "localhost/py:1",
            &digest,
        ] {
            let p = parse("kiln.toml", &app(base, "")).unwrap_or_else(|e| panic!("{base}: {e}"));
            assert_eq!(p.services["web"].app().map(|a| a.base.as_str()), Some(base));
        }
        let p = parse(
            "kiln.toml",
            &app(
                "python",
                "[registry]\nurl = \"127.0.0.1:5000/team/\"\nplain_http = true",
            ),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let r = p.registry.unwrap_or_else(|| panic!("no registry"));
        assert_eq!(
            (r.url.as_str(), r.plain_http),
            ("127.0.0.1:5000/team", true)
        );
    }

    #[test]
    fn bad_registry_references_name_the_key() {
        for (text, key) in [
            (app("reg.example:5000/python", ""), "services.web.base"),
            (app("reg.example/python@sha256:12", ""), "services.web.base"),
            (
                app("python", "[registry]\nurl = \"https://reg.example\""),
                "registry.url",
            ),
            (
                app("python", "[registry]\nurl = \"reg.example/x:1\""),
                "registry.url",
            ),
        ] {
            let e = parse("kiln.toml", &text).expect_err(&text);
            let first = &e.0[0];
            assert!(
                matches!(first.problem, Problem::BadRegistryReference(..)),
                "{text}: {e}"
            );
            assert_eq!(first.key, key, "{text}: {e}");
        }
    }
}
