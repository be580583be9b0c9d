//! The deploy kit, each file checked by what consumes it: the Dockerfile's copied files make a
//! complete crate (cargo), the Prometheus rules pass `promtool` (and their unit tests), the
//! Alertmanager example passes `amtool`, the Kubernetes manifests and the Grafana contact
//! point parse and point at what incidentd serves, the systemd unit keeps its hardening.
//!
//! `promtool` and `amtool` come from Debian's `prometheus` and `prometheus-alertmanager`
//! packages (.ci/run installs them). Without them a developer's run says so and skips those
//! checks; under CI (`CI` set) a missing tool fails.

use std::path::{Path, PathBuf};
use std::process::Command;

use incidentd::config::Config;
use incidentd::telemetry::metrics::CATALOG;
use serde_norway::Value;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(root().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

fn yaml_docs(rel: &str) -> Vec<Value> {
    use serde::Deserialize;
    serde_norway::Deserializer::from_str(&read(rel))
        .map(|d| Value::deserialize(d).unwrap_or_else(|e| panic!("{rel}: {e}")))
        .collect()
}

/// The tool, or None outside CI when it is not installed.
fn tool(name: &str, package: &str) -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(name))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "{name} is missing: .ci/run installs Debian's {package} package"
        );
        eprintln!("{name} is not installed (apt-get install {package}); skipping its check");
    }
    found
}

fn run_ok(cmd: &mut Command) {
    let out = cmd.output().expect("the tool runs");
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The paths the build stage copies (`COPY src dst` before the second `FROM`).
fn dockerfile_build_copies() -> Vec<String> {
    let text = read("Dockerfile");
    // The build stage: from the first FROM to the second.
    let build = text.split("\nFROM ").nth(1).expect("a build stage");
    let mut out = Vec::new();
    for line in build.lines() {
        let Some(args) = line.trim().strip_prefix("COPY ") else {
            continue;
        };
        assert!(!args.contains("--from"), "{line}");
        let words: Vec<&str> = args.split_whitespace().collect();
        out.extend(words[..words.len() - 1].iter().map(|s| s.to_string()));
    }
    out
}

fn copy_tree(from: &Path, to: &Path) {
    if from.is_dir() {
        std::fs::create_dir_all(to).unwrap();
        for e in std::fs::read_dir(from).unwrap() {
            let e = e.unwrap();
            copy_tree(&e.path(), &to.join(e.file_name()));
        }
    } else {
        std::fs::copy(from, to).unwrap();
    }
}

/// cargo reads the crate made of `files` (copied from the checkout) as a build would: target
/// discovery and the locked dependency graph (`cargo fetch`, offline: the test build already
/// fetched everything; nothing is compiled).
fn cargo_metadata_of(files: &[String]) -> std::process::Output {
    let dir = tempfile::tempdir().unwrap();
    for f in files {
        copy_tree(&root().join(f), &dir.path().join(f));
    }
    Command::new(env!("CARGO"))
        .args(["fetch", "--locked", "--offline", "--target", &host_target()])
        .current_dir(dir.path())
        .env_remove("CARGO_TARGET_DIR")
        .output()
        .unwrap()
}

/// This machine's target (the dependencies of other platforms are not downloaded).
fn host_target() -> String {
    let out = Command::new("rustc").arg("-vV").output().unwrap();
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("host: "))
        .expect("rustc -vV names the host")
        .to_string()
}

#[test]
fn the_dockerfile_copies_a_complete_crate() {
    let files = dockerfile_build_copies();
    for needed in ["Cargo.toml", "Cargo.lock", "src", "config"] {
        assert!(files.iter().any(|f| f == needed), "{files:?}");
    }
    let out = cargo_metadata_of(&files);
    assert!(
        out.status.success(),
        "cargo cannot read the crate made of {files:?}:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The check catches what it is for: without the example the manifest names, cargo refuses.
    let without: Vec<String> = files.into_iter().filter(|f| f != "examples").collect();
    let out = cargo_metadata_of(&without);
    assert!(
        !out.status.success(),
        "a crate without examples/ should not load"
    );
    // The image checks its own health and keeps the store on a volume.
    let text = read("Dockerfile");
    assert!(text.contains("HEALTHCHECK"), "no HEALTHCHECK");
    assert!(text.contains("VOLUME [\"/var/lib/incidentd\"]"));
}

#[test]
fn prometheus_rules_pass_promtool_and_their_unit_tests() {
    let Some(promtool) = tool("promtool", "prometheus") else {
        return;
    };
    let dir = root().join("deploy/prometheus");
    run_ok(
        Command::new(&promtool)
            .args(["check", "rules", "incidentd-rules.yml"])
            .current_dir(&dir),
    );
    run_ok(
        Command::new(&promtool)
            .args(["test", "rules", "incidentd-rules.test.yml"])
            .current_dir(&dir),
    );
}

#[test]
fn the_rules_query_only_what_incidentd_exposes() {
    let docs = yaml_docs("deploy/prometheus/incidentd-rules.yml");
    let mut alerts = Vec::new();
    for group in docs[0]["groups"].as_sequence().unwrap() {
        for rule in group["rules"].as_sequence().unwrap() {
            alerts.push(rule["alert"].as_str().unwrap().to_string());
            let expr = rule["expr"].as_str().unwrap();
            for (i, _) in expr.match_indices("incidentd_") {
                let name: String = expr[i..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                let base = ["_bucket", "_sum", "_count"]
                    .iter()
                    .find_map(|s| name.strip_suffix(s))
                    .unwrap_or(&name);
                assert!(
                    CATALOG.iter().any(|(n, _, _)| *n == base),
                    "{:?} queries {name}, which incidentd does not expose",
                    rule["alert"]
                );
            }
        }
    }
    for want in [
        "IncidentdDown",
        "IncidentdNotReady",
        "IncidentdOutboxBacklog",
        "IncidentdChatDisconnected",
    ] {
        assert!(alerts.iter().any(|a| a == want), "{alerts:?}");
    }
}

#[test]
fn the_alertmanager_example_passes_amtool_and_points_at_the_webhook() {
    let text = read("deploy/alertmanager/alertmanager.yml");
    assert!(text.contains("/api/v1/alerts/alertmanager"));
    let docs = yaml_docs("deploy/alertmanager/alertmanager.yml");
    let receivers = docs[0]["receivers"].as_sequence().unwrap();
    let hook = &receivers[0]["webhook_configs"][0];
    assert_eq!(hook["http_config"]["authorization"]["type"], "Bearer");
    assert!(receivers.iter().any(|r| r.get("slack_configs").is_some()));
    assert!(receivers.iter().any(|r| r.get("discord_configs").is_some()));
    let Some(amtool) = tool("amtool", "prometheus-alertmanager") else {
        return;
    };
    run_ok(
        Command::new(amtool)
            .args(["check-config", "alertmanager.yml"])
            .current_dir(root().join("deploy/alertmanager")),
    );
}

#[test]
fn the_grafana_contact_point_posts_to_the_grafana_webhook_with_a_token() {
    let docs = yaml_docs("deploy/grafana/contact-points.yaml");
    let r = &docs[0]["contactPoints"][0]["receivers"][0];
    assert_eq!(r["type"], "webhook");
    let url = r["settings"]["url"].as_str().unwrap();
    assert!(url.ends_with("/api/v1/alerts/grafana"), "{url}");
    assert_eq!(r["settings"]["authorization_scheme"], "Bearer");
}

#[test]
fn the_kubernetes_manifests_fit_together_and_their_config_is_valid() {
    let mut by_kind = std::collections::BTreeMap::new();
    let kustomization = &yaml_docs("deploy/kubernetes/kustomization.yaml")[0];
    for f in kustomization["resources"].as_sequence().unwrap() {
        let f = f.as_str().unwrap();
        for doc in yaml_docs(&format!("deploy/kubernetes/{f}")) {
            assert_eq!(doc["metadata"]["name"], "incidentd", "{f}");
            by_kind.insert(doc["kind"].as_str().unwrap().to_string(), doc);
        }
    }
    let kinds: Vec<&String> = by_kind.keys().collect();
    assert_eq!(kinds, ["ConfigMap", "Secret", "Service", "StatefulSet"]);

    let sts = &by_kind["StatefulSet"]["spec"];
    assert_eq!(sts["replicas"], 1, "sled: one process at a time");
    assert!(sts["volumeClaimTemplates"][0]["metadata"]["name"] == "data");
    let pod = &sts["template"]["spec"];
    assert!(pod["terminationGracePeriodSeconds"].as_u64().unwrap() >= 15);
    let c = &pod["containers"][0];
    assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(c["securityContext"]["readOnlyRootFilesystem"], true);
    assert!(c["resources"]["requests"]["memory"].is_string());
    assert!(c["resources"]["limits"]["memory"].is_string());
    let mounts: Vec<&str> = c["volumeMounts"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|m| m["mountPath"].as_str().unwrap())
        .collect();
    assert!(mounts.contains(&"/var/lib/incidentd"), "{mounts:?}");
    let config_path = c["env"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "INCIDENTD_CONFIG")
        .unwrap()["value"]
        .as_str()
        .unwrap();
    assert!(config_path.starts_with("/etc/incidentd/"));
    assert!(mounts.contains(&"/etc/incidentd"));
    assert_eq!(
        by_kind["Service"]["spec"]["ports"][0]["targetPort"],
        c["ports"][0]["name"]
    );

    // The ConfigMap's config is valid with exactly the Secret's variables, and its store is
    // on the volume.
    let secret = by_kind["Secret"]["stringData"]
        .as_mapping()
        .unwrap()
        .clone();
    let env = move |k: &str| {
        secret
            .get(k)
            .and_then(|v| v.as_str())
            .map(|v| v.to_string())
    };
    let toml = by_kind["ConfigMap"]["data"]["incidentd.toml"]
        .as_str()
        .unwrap();
    let cfg = Config::from_toml(toml, &env).unwrap_or_else(|e| panic!("{e}"));
    assert!(cfg.store.path.starts_with("/var/lib/incidentd"));
    assert_eq!(cfg.server.listen.port(), 8080);
    assert!(cfg.webhooks.alertmanager.is_some() && cfg.webhooks.grafana.is_some());
    assert!(!cfg.api.tokens.is_empty());
}

#[test]
fn the_replicas_deployment_runs_three_on_postgresql_and_routes_to_the_leader() {
    let mut by_kind = std::collections::BTreeMap::new();
    let kustomization = &yaml_docs("deploy/kubernetes-replicas/kustomization.yaml")[0];
    for f in kustomization["resources"].as_sequence().unwrap() {
        let f = f.as_str().unwrap();
        for doc in yaml_docs(&format!("deploy/kubernetes-replicas/{f}")) {
            assert_eq!(doc["metadata"]["name"], "incidentd", "{f}");
            by_kind.insert(doc["kind"].as_str().unwrap().to_string(), doc);
        }
    }
    let kinds: Vec<&String> = by_kind.keys().collect();
    assert_eq!(kinds, ["ConfigMap", "Deployment", "Secret", "Service"]);
    let d = &by_kind["Deployment"]["spec"];
    assert_eq!(d["replicas"], 3);
    // Standbys are never Ready: a rollout must not wait for new pods to be Ready first.
    assert_eq!(d["strategy"]["rollingUpdate"]["maxUnavailable"], "100%");
    assert_eq!(d["strategy"]["rollingUpdate"]["maxSurge"], 0);
    let pod = &d["template"]["spec"];
    assert!(pod["terminationGracePeriodSeconds"].as_u64().unwrap() >= 15);
    let c = &pod["containers"][0];
    assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(c["securityContext"]["readOnlyRootFilesystem"], true);
    let mounts: Vec<&str> = c["volumeMounts"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|m| m["mountPath"].as_str().unwrap())
        .collect();
    assert!(
        !mounts.contains(&"/var/lib/incidentd"),
        "no store volume: {mounts:?}"
    );
    assert_eq!(
        by_kind["Service"]["spec"]["ports"][0]["targetPort"],
        c["ports"][0]["name"]
    );
    assert_eq!(
        by_kind["Service"]["spec"]["selector"],
        d["selector"]["matchLabels"]
    );
    // The config is valid with exactly the Secret's variables, and on PostgreSQL.
    let secret = by_kind["Secret"]["stringData"]
        .as_mapping()
        .unwrap()
        .clone();
    let env = move |k: &str| {
        secret
            .get(k)
            .and_then(|v| v.as_str())
            .map(|v| v.to_string())
    };
    let toml = by_kind["ConfigMap"]["data"]["incidentd.toml"]
        .as_str()
        .unwrap();
    let cfg = Config::from_toml(toml, &env).unwrap_or_else(|e| panic!("{e}"));
    match &cfg.store.backend {
        incidentd::config::StoreBackend::Postgres { url } => {
            assert!(url.expose().starts_with("postgres://"), "a PostgreSQL URL")
        }
        other => panic!("the replicas' store is {other:?}"),
    }
    assert_eq!(cfg.server.listen.port(), 8080);
    assert!(cfg.webhooks.alertmanager.is_some() && cfg.webhooks.grafana.is_some());
}

#[test]
fn the_systemd_unit_is_hardened_and_keeps_state_in_its_state_directory() {
    let unit = read("deploy/systemd/incidentd.service");
    for want in [
        "DynamicUser=yes",
        "StateDirectory=incidentd",
        "ProtectSystem=strict",
        "NoNewPrivileges=yes",
        "ProtectHome=yes",
        "PrivateTmp=yes",
        "Environment=INCIDENTD_STORE_PATH=/var/lib/incidentd/store",
        "ExecStart=/usr/local/bin/incidentd run",
        "TimeoutStopSec=",
    ] {
        assert!(unit.lines().any(|l| l.starts_with(want)), "missing {want}");
    }
}
