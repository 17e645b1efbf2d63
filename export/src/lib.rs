//! kiln-export: one environment of a kiln project as Kubernetes objects.
//!
//! [`kubernetes`] turns a validated kiln.toml and the images of one commit into:
//! a Namespace `<project>-<env>`; per app a Deployment (image by digest, the start command,
//! env with `KILN_RELATIONSHIPS` holding cluster DNS names, readiness from the health check or
//! the port, a securityContext that drops every capability and mounts the root read-only);
//! per image service a Deployment, or a StatefulSet with a PersistentVolumeClaim template per
//! mount when it has mounts (an app's mounts are PersistentVolumeClaims); a Service per
//! endpoint; NetworkPolicies that deny everything and allow exactly the declared relationships
//! (plus DNS, and the ingress controller to apps that serve HTTP); an Ingress per app with a
//! port; the deploy hook and post-deploy tasks as Jobs; env as a ConfigMap, sensitive names
//! (`*SECRET*`, `*PASSWORD*`, `*TOKEN*`, `*KEY*`, `*CREDENTIAL*`) only in a Secret. Every
//! object carries the project, environment and commit labels.
//!
//! kiln.toml declares no workers, crons or variables outside `env` yet, so none are exported.

use std::collections::BTreeMap;

use base64::Engine as _;
use kiln_builder::config::{ProjectConfig, Service, ServiceKind, APP_ROOT};
use serde_json::{json, Value};

/// Label: the project.
pub const LABEL_PROJECT: &str = "kiln.dev/project";
/// Label: the environment.
pub const LABEL_ENV: &str = "kiln.dev/environment";
/// Label: the commit.
pub const LABEL_COMMIT: &str = "kiln.dev/commit";
/// Label: the service (what NetworkPolicies select on).
pub const LABEL_SERVICE: &str = "kiln.dev/service";

/// What to export besides the config.
#[derive(Debug, Clone)]
pub struct Export {
    /// Environment name (a DNS label).
    pub env: String,
    /// The commit the images were built from (full sha).
    pub commit: String,
    /// Image reference of each service (`registry/repo@sha256:…`), by service name.
    pub images: BTreeMap<String, String>,
    /// Ingress hosts are `<service>.<env>.<project>.<domain>`.
    pub domain: String,
}

/// An export that cannot be made.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A service without an image reference.
    #[error("no image for service `{0}` (build the commit first)")]
    NoImage(String),
    /// A name that would not be a valid Kubernetes name.
    #[error("`{0}` is not usable as a Kubernetes name: {1}")]
    BadName(String, &'static str),
}

/// The Kubernetes objects of one environment, in apply order.
pub fn kubernetes(config: &ProjectConfig, ex: &Export) -> Result<Vec<Value>, Error> {
    validate_env(&ex.env)?;
    let ns = format!("{}-{}", config.project, ex.env);
    if ns.len() > 63 {
        return Err(Error::BadName(
            ns,
            "project-env is longer than 63 characters",
        ));
    }
    let cx = Cx { config, ex, ns };
    let mut out = vec![json!({
        "apiVersion": "v1", "kind": "Namespace",
        "metadata": { "name": cx.ns, "labels": cx.labels(None) },
    })];
    out.extend(cx.network_policies());
    for s in config.services.values() {
        let image = ex
            .images
            .get(&s.name)
            .ok_or_else(|| Error::NoImage(s.name.clone()))?;
        out.extend(cx.env_objects(s));
        out.extend(cx.services(s));
        out.extend(cx.workload(s, image));
        if let ServiceKind::App(app) = &s.kind {
            if app.port.is_some() {
                out.push(cx.ingress(s));
            }
            let mut n = 0;
            for (what, cmd) in app
                .deploy
                .hook
                .iter()
                .map(|h| ("deploy-hook", h))
                .chain(app.deploy.post.iter().map(|p| ("post", p)))
            {
                n += 1;
                out.push(cx.job(
                    s,
                    image,
                    &format!("{what}-{n}"),
                    cmd,
                    app.deploy.timeout_secs,
                ));
            }
        }
    }
    Ok(out)
}

/// Checks an environment name: a DNS label (it becomes part of the namespace's name).
pub fn validate_env(env: &str) -> Result<(), Error> {
    let ok = !env.is_empty()
        && env.len() <= 63
        && env
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && env.as_bytes()[0].is_ascii_lowercase()
        && !env.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(Error::BadName(
            env.to_string(),
            "an environment is 1 to 63 lowercase letters, digits and '-', starting with a letter",
        ))
    }
}

/// The objects as a YAML stream (each document is JSON, which is YAML).
pub fn to_yaml_stream(objects: &[Value]) -> String {
    let mut s = String::new();
    for o in objects {
        s.push_str("---\n");
        s.push_str(&serde_json::to_string_pretty(o).unwrap_or_default());
        s.push('\n');
    }
    s
}

/// Whether an env name is sensitive (goes to the Secret, never the ConfigMap).
pub fn is_sensitive(name: &str) -> bool {
    let n = name.to_ascii_uppercase();
    ["SECRET", "PASSWORD", "TOKEN", "KEY", "CREDENTIAL"]
        .iter()
        .any(|w| n.contains(w))
}

struct Cx<'a> {
    config: &'a ProjectConfig,
    ex: &'a Export,
    ns: String,
}

impl Cx<'_> {
    fn labels(&self, service: Option<&str>) -> Value {
        let mut l = json!({
            LABEL_PROJECT: self.config.project,
            LABEL_ENV: self.ex.env,
            LABEL_COMMIT: self.ex.commit,
            "app.kubernetes.io/part-of": self.config.project,
            "app.kubernetes.io/managed-by": "kiln",
        });
        if let Some(s) = service {
            l[LABEL_SERVICE] = json!(s);
            l["app.kubernetes.io/name"] = json!(s);
        }
        l
    }

    /// The labels a service's pods are selected by (stable across commits).
    fn selector(&self, service: &str) -> Value {
        json!({ LABEL_PROJECT: self.config.project, LABEL_ENV: self.ex.env, LABEL_SERVICE: service })
    }

    fn meta(&self, name: &str, service: Option<&str>) -> Value {
        json!({ "name": name, "namespace": self.ns, "labels": self.labels(service) })
    }

    /// Cluster DNS name of a service's endpoint Service.
    fn host(&self, service: &str, endpoint: &str) -> String {
        format!(
            "{}.{}.svc.cluster.local",
            svc_name(service, endpoint),
            self.ns
        )
    }

    fn network_policies(&self) -> Vec<Value> {
        let mut out = vec![
            json!({
                "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                "metadata": self.meta("default-deny", None),
                "spec": { "podSelector": {}, "policyTypes": ["Ingress", "Egress"] },
            }),
            json!({
                "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                "metadata": self.meta("allow-dns", None),
                "spec": {
                    "podSelector": {}, "policyTypes": ["Egress"],
                    "egress": [{
                        "to": [{ "namespaceSelector": {},
                                 "podSelector": { "matchLabels": { "k8s-app": "kube-dns" } } }],
                        "ports": [{ "protocol": "UDP", "port": 53 }, { "protocol": "TCP", "port": 53 }],
                    }],
                },
            }),
        ];
        for s in self.config.services.values() {
            for r in s.relationships.values() {
                let port = json!([{ "protocol": "TCP", "port": r.port }]);
                out.push(json!({
                    "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                    "metadata": self.meta(&format!("{}-from-{}-{}", r.service, s.name, r.endpoint), Some(&r.service)),
                    "spec": {
                        "podSelector": { "matchLabels": self.selector(&r.service) },
                        "policyTypes": ["Ingress"],
                        "ingress": [{ "from": [{ "podSelector": { "matchLabels": self.selector(&s.name) } }], "ports": port }],
                    },
                }));
                out.push(json!({
                    "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                    "metadata": self.meta(&format!("{}-to-{}-{}", s.name, r.service, r.endpoint), Some(&s.name)),
                    "spec": {
                        "podSelector": { "matchLabels": self.selector(&s.name) },
                        "policyTypes": ["Egress"],
                        "egress": [{ "to": [{ "podSelector": { "matchLabels": self.selector(&r.service) } }], "ports": port }],
                    },
                }));
            }
            if let ServiceKind::App(app) = &s.kind {
                if let Some(port) = app.port {
                    out.push(json!({
                        "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                        "metadata": self.meta(&format!("{}-from-ingress", s.name), Some(&s.name)),
                        "spec": {
                            "podSelector": { "matchLabels": self.selector(&s.name) },
                            "policyTypes": ["Ingress"],
                            "ingress": [{
                                "from": [{ "namespaceSelector": {},
                                           "podSelector": { "matchLabels": { "app.kubernetes.io/name": "ingress-nginx" } } }],
                                "ports": [{ "protocol": "TCP", "port": port }],
                            }],
                        },
                    }));
                }
            }
        }
        out
    }

    fn env_objects(&self, s: &Service) -> Vec<Value> {
        let (secret, plain): (BTreeMap<_, _>, BTreeMap<_, _>) =
            s.env.iter().partition(|(k, _)| is_sensitive(k));
        let mut out = vec![json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": self.meta(&format!("{}-env", s.name), Some(&s.name)),
            "data": plain,
        })];
        if !secret.is_empty() {
            out.push(json!({
                "apiVersion": "v1", "kind": "Secret", "type": "Opaque",
                "metadata": self.meta(&format!("{}-secrets", s.name), Some(&s.name)),
                "stringData": secret,
            }));
        }
        out
    }

    fn services(&self, s: &Service) -> Vec<Value> {
        s.endpoints
            .iter()
            .map(|(name, e)| {
                json!({
                    "apiVersion": "v1", "kind": "Service",
                    "metadata": self.meta(&svc_name(&s.name, name), Some(&s.name)),
                    "spec": {
                        "selector": self.selector(&s.name),
                        "ports": [{ "name": port_name(name), "protocol": "TCP", "port": e.port, "targetPort": e.port }],
                    },
                })
            })
            .collect()
    }

    /// `KILN_RELATIONSHIPS`: base64 JSON, name → [{service, host, port, scheme}].
    fn relationships_env(&self, s: &Service) -> String {
        let rel: BTreeMap<&String, Value> = s
            .relationships
            .iter()
            .map(|(name, r)| {
                (
                    name,
                    json!([{
                        "service": r.service, "host": self.host(&r.service, &r.endpoint),
                        "port": r.port, "scheme": r.scheme,
                    }]),
                )
            })
            .collect();
        base64::engine::general_purpose::STANDARD.encode(json!(rel).to_string())
    }

    fn container(&self, s: &Service, image: &str, command: Option<&str>) -> Value {
        let mut env = vec![
            json!({ "name": "KILN_PROJECT", "value": self.config.project }),
            json!({ "name": "KILN_ENVIRONMENT", "value": self.ex.env }),
            json!({ "name": "KILN_COMMIT", "value": self.ex.commit }),
            json!({ "name": "KILN_RELATIONSHIPS", "value": self.relationships_env(s) }),
        ];
        let mut env_from = vec![json!({ "configMapRef": { "name": format!("{}-env", s.name) } })];
        if s.env.keys().any(|k| is_sensitive(k)) {
            env_from.push(json!({ "secretRef": { "name": format!("{}-secrets", s.name) } }));
        }
        env.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
        let mut mounts = vec![json!({ "name": "tmp", "mountPath": "/tmp" })];
        for path in s.mounts.keys() {
            mounts.push(json!({ "name": volume_name(path), "mountPath": path }));
        }
        let mut c = json!({
            "name": s.name,
            "image": image,
            "env": env,
            "envFrom": env_from,
            "volumeMounts": mounts,
            "securityContext": {
                "allowPrivilegeEscalation": false,
                "readOnlyRootFilesystem": true,
                "capabilities": { "drop": ["ALL"] },
                "seccompProfile": { "type": "RuntimeDefault" },
            },
        });
        if let Some(cmd) = command {
            c["command"] = json!(["/bin/sh", "-c", cmd]);
        }
        if let ServiceKind::App(_) = s.kind {
            c["workingDir"] = json!(APP_ROOT);
        }
        c
    }

    fn workload(&self, s: &Service, image: &str) -> Vec<Value> {
        let mut out = Vec::new();
        let mut c = match &s.kind {
            ServiceKind::App(app) => {
                let mut c = self.container(s, image, Some(&app.start));
                let probe = match (&app.deploy.health, app.port) {
                    (Some(h), _) => Some(json!({ "exec": { "command": ["/bin/sh", "-c", h] } })),
                    (None, Some(p)) => Some(json!({ "tcpSocket": { "port": p } })),
                    (None, None) => None,
                };
                if let Some(mut p) = probe {
                    p["periodSeconds"] = json!(2);
                    p["failureThreshold"] =
                        json!(app.deploy.health_timeout_secs.div_ceil(2).max(1));
                    c["readinessProbe"] = p;
                }
                c
            }
            ServiceKind::Image(_) => self.container(s, image, None),
        };
        let ports: Vec<Value> = s
            .endpoints
            .iter()
            .map(|(n, e)| json!({ "name": port_name(n), "containerPort": e.port, "protocol": "TCP" }))
            .collect();
        if !ports.is_empty() {
            c["ports"] = json!(ports);
        }
        let mut volumes = vec![json!({ "name": "tmp", "emptyDir": {} })];
        let stateful = matches!(s.kind, ServiceKind::Image(_)) && !s.mounts.is_empty();
        let claims: Vec<Value> = s
            .mounts
            .iter()
            .map(|(path, m)| {
                json!({
                    "metadata": { "name": volume_name(path), "labels": self.labels(Some(&s.name)) },
                    "spec": {
                        "accessModes": ["ReadWriteOnce"],
                        "resources": { "requests": { "storage": m.size_bytes.to_string() } },
                    },
                })
            })
            .collect();
        if !stateful {
            for (path, claim) in s.mounts.keys().zip(&claims) {
                let name = format!("{}-{}", s.name, volume_name(path));
                let mut pvc = json!({ "apiVersion": "v1", "kind": "PersistentVolumeClaim",
                                      "metadata": self.meta(&name, Some(&s.name)) });
                pvc["spec"] = claim["spec"].clone();
                out.push(pvc);
                volumes.push(json!({ "name": volume_name(path),
                                     "persistentVolumeClaim": { "claimName": name } }));
            }
        }
        let pod = json!({
            "metadata": { "labels": self.labels(Some(&s.name)) },
            "spec": {
                "automountServiceAccountToken": false,
                "enableServiceLinks": false,
                "containers": [c],
                "volumes": volumes,
            },
        });
        let mut spec = json!({
            "replicas": 1,
            "selector": { "matchLabels": self.selector(&s.name) },
            "template": pod,
        });
        let kind = if stateful {
            spec["serviceName"] = json!(s
                .endpoints
                .keys()
                .next()
                .map_or(s.name.clone(), |e| svc_name(&s.name, e)));
            spec["volumeClaimTemplates"] = json!(claims);
            "StatefulSet"
        } else {
            if !s.mounts.is_empty() {
                // ReadWriteOnce claims: the old pod lets go before the new one starts.
                spec["strategy"] = json!({ "type": "Recreate" });
            }
            "Deployment"
        };
        out.push(json!({
            "apiVersion": "apps/v1", "kind": kind,
            "metadata": self.meta(&s.name, Some(&s.name)),
            "spec": spec,
        }));
        out
    }

    fn ingress(&self, s: &Service) -> Value {
        let (endpoint, e) = s
            .endpoints
            .iter()
            .next()
            .map_or((String::from("http"), 0), |(n, e)| (n.clone(), e.port));
        json!({
            "apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
            "metadata": self.meta(&s.name, Some(&s.name)),
            "spec": {
                "rules": [{
                    "host": format!("{}.{}.{}.{}", s.name, self.ex.env, self.config.project, self.ex.domain),
                    "http": { "paths": [{
                        "path": "/", "pathType": "Prefix",
                        "backend": { "service": { "name": svc_name(&s.name, &endpoint), "port": { "number": e } } },
                    }] },
                }],
            },
        })
    }

    fn job(&self, s: &Service, image: &str, what: &str, cmd: &str, timeout: u64) -> Value {
        let short = &self.ex.commit[..self.ex.commit.len().min(12)];
        let mut c = self.container(s, image, Some(cmd));
        c["name"] = json!(what);
        let mut volumes = vec![json!({ "name": "tmp", "emptyDir": {} })];
        for path in s.mounts.keys() {
            volumes.push(
                json!({ "name": volume_name(path), "persistentVolumeClaim": {
                "claimName": format!("{}-{}", s.name, volume_name(path)) } }),
            );
        }
        json!({
            "apiVersion": "batch/v1", "kind": "Job",
            "metadata": self.meta(&format!("{}-{what}-{short}", s.name), Some(&s.name)),
            "spec": {
                "backoffLimit": 0,
                "activeDeadlineSeconds": timeout,
                "template": {
                    "metadata": { "labels": self.labels(Some(&s.name)) },
                    "spec": {
                        "restartPolicy": "Never",
                        "automountServiceAccountToken": false,
                        "enableServiceLinks": false,
                        "containers": [c],
                        "volumes": volumes,
                    },
                },
            },
        })
    }
}

/// The Service of one endpoint: `<service>-<endpoint>`.
fn svc_name(service: &str, endpoint: &str) -> String {
    format!("{service}-{endpoint}")
}

/// A port name (at most 15 characters, IANA_SVC_NAME).
fn port_name(endpoint: &str) -> String {
    endpoint
        .chars()
        .take(15)
        .collect::<String>()
        .trim_end_matches('-')
        .to_string()
}

/// A volume name for a mount path: `/app/data` → `app-data`.
fn volume_name(path: &str) -> String {
    let s: String = path
        .trim_matches('/')
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    let s = s.trim_matches('-');
    if s.is_empty() {
        "root".to_string()
    } else {
        s.chars().take(40).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_sensitivity() {
        assert_eq!(volume_name("/app/data"), "app-data");
        assert_eq!(port_name("a-very-long-endpoint-name"), "a-very-long-end");
        assert!(is_sensitive("DB_PASSWORD") && is_sensitive("api_key"));
        assert!(!is_sensitive("GREETING"));
    }
}
