//! # incidentd
//!
//! An incident-response chat-ops bot: alerts in (webhooks and alert-channel messages), one
//! incident thread per event, triage, approvals, remediation, reports.
//!
//! # Layout
//! - `domain`    — pure types and rules: alert, incident state machine, severity, classification, playbooks and their `when` conditions (`condition`), follow-ups with their due dates and reminders (`followup`), PromQL query templates that quote label values (`promql`), the card's metric chart and sparkline (`chart`), policy, card, commands, the outcome numbers (`stats`: one function, docs/metrics.md) and the timeline fold they read (`tally`)
//! - `engine`    — the core `handle`, which makes every decision (from the incident, the input and a read-only `View` of open incidents, executions and recent openings) and says what to write; its runner, which only applies decisions (group commit, outbox delivery, timers, the outcome numbers' book, the store's health for `/readyz`)
//! - `ports`     — traits the engine needs (Store, ChatPort, Clock) and the records they exchange
//! - `store`     — the Store implementations: sled (the default; its integrity manifest) and PostgreSQL (`pg`: schema migrations, term fencing), the database lease for replicas (`lease`), `store check/export/import` between them (versioned JSON lines), and a throw-away PostgreSQL cluster for tests and benchmarks (`pgtest`)
//! - `ingest`    — webhook decoders (Alertmanager, Grafana, generic) and the chat-message alert parser
//! - `remediate` — executors: templating (element-wise, allow-listed), command/kubectl and HTTP runs with timeout, retry, redaction; `preview`: what cards, notes and `simulate` show, from the same templating; `prometheus`: the Prometheus API client, Prometheus verifications, card charts and root-cause evidence
//! - `chat`      — chat surfaces: the web console (default surface and dashboard), Slack, Discord, and a recording port for tests; `service` interprets every surface's messages, buttons and commands into engine inputs (the engine knows nothing of `ingest`)
//! - `http`      — axum router: webhooks, read API, health
//! - `config`    — TOML → validated Config
//! - `app`       — wiring; `run(config, listener, deps, shutdown)`; `app::replica`: one of N replicas on PostgreSQL (standby until it takes the lease, then the leader; fenced chat and executor)
//! - `simulate`  — dry-run triage of an alert file
//! - `demo`      — `incidentd demo`: the app with a temporary store, the console and sample alerts
//! - `telemetry` — logging setup
//! - `process`   — process-wide settings made at start (transparent huge pages off)
//! - `fuzzing`   — one entry point per decoder/parser of untrusted input (fuzz/, tests/fuzz_smoke.rs)

pub mod app;
pub mod chat;
pub mod config;
pub mod demo;
pub mod dense;
pub mod domain;
pub mod engine;
pub mod fuzzing;
pub mod http;
pub mod ingest;
pub mod ports;
pub mod process;
pub mod remediate;
pub mod simulate;
pub mod store;
pub mod telemetry;
