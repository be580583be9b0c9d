//! What people are shown is what runs: the previews on cards, in notes, in `/incident preview`
//! and in `simulate` come from the same templating as the run itself ([`super::plan`]), so a
//! `{labels.x}` is shown expanded, and a value the templating would refuse shows the refusal.

use crate::domain::incident::Incident;
use crate::domain::playbook::{prometheus_summary, ActionSpec, ExecutorSpec, VerifySpec};

/// The program kubectl plans name in previews (what production runs).
const KUBECTL: &str = "kubectl";

/// One line: what the action runs for this incident, or why it cannot.
pub fn action(action: &ActionSpec, incident: &Incident) -> String {
    match super::plan(action, incident, KUBECTL) {
        Ok(p) => p.preview(),
        Err(e) => format!("cannot run: {e}"),
    }
}

/// An HTTP or command verification as an action of its own, with the action's templating
/// rules (allowed pattern, timeout), and its interval; `None` for "the alert resolves" and
/// for a Prometheus query (which has its own templating, [`super::prometheus::render`]).
pub fn check(action: &ActionSpec, spec: &VerifySpec) -> Option<(ActionSpec, u64)> {
    let (run, interval) = match spec {
        VerifySpec::Http {
            url,
            expect_status,
            interval_seconds,
            ..
        } => (
            ExecutorSpec::Http {
                method: "GET".into(),
                url: url.clone(),
                headers: Default::default(),
                body: None,
                expect_status: *expect_status,
            },
            *interval_seconds,
        ),
        VerifySpec::Command {
            argv,
            interval_seconds,
            ..
        } => (
            ExecutorSpec::Command { argv: argv.clone() },
            *interval_seconds,
        ),
        VerifySpec::AlertResolves { .. } | VerifySpec::Prometheus { .. } => return None,
    };
    Some((
        ActionSpec {
            run,
            verify: None,
            rollback: None,
            ..action.clone()
        },
        interval,
    ))
}

/// One line: how the action's effect is verified for this incident (`GET http://… answers
/// 200`, `` `probe checkout` exits 0``, `the alert resolves within 300 s`,
/// ``Prometheus `QUERY` < 0.01 for 60 s (within 300 s)`` with the query as it will run).
pub fn verification(action: &ActionSpec, spec: &VerifySpec, incident: &Incident) -> String {
    if let VerifySpec::Prometheus {
        query,
        for_seconds,
        within_seconds,
        ..
    } = spec
    {
        return match super::prometheus::render(query, incident) {
            Ok(q) => format!(
                "Prometheus {}",
                prometheus_summary(&q, spec.threshold(), *for_seconds, *within_seconds)
            ),
            Err(e) => format!("Prometheus {} (cannot run: {e})", spec.summary()),
        };
    }
    let Some((check, _)) = check(action, spec) else {
        return spec.summary();
    };
    let plan = match super::plan(&check, incident, KUBECTL) {
        Ok(p) => p,
        Err(e) => return format!("{} (cannot run: {e})", spec.summary()),
    };
    match (spec, plan) {
        (VerifySpec::Http { expect_status, .. }, p @ super::Plan::Http { .. }) => {
            format!("{} answers {expect_status}", p.preview())
        }
        (VerifySpec::Command { expect_exit, .. }, p @ super::Plan::Command { .. }) => {
            format!("`{}` exits {expect_exit}", p.preview())
        }
        _ => spec.summary(),
    }
}
