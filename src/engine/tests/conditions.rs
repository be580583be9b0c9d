//! Playbook conditions (`when`): the §6.2 branch — low model confidence goes to a human, high
//! confidence switches to the fallback model on its own.

use super::*;

const BRANCHING: &str = r#"
[[rules]]
name = "ml"
match = { team = "ml" }
playbook = "model-output"

[[playbooks]]
id = "model-output"
title = "Model output failures"
[[playbooks.actions]]
id = "human-review"
title = "Route to human review"
when = "annotations.confidence < 0.5 or not exists(annotations.confidence)"
run = { type = "http", url = "http://127.0.0.1:1/review" }
[[playbooks.actions]]
id = "fallback-model"
title = "Switch to the fallback model"
when = "annotations.confidence >= 0.5"
auto = true
rollback = "primary-model"
run = { type = "http", url = "http://127.0.0.1:1/model" }
[[playbooks.actions]]
id = "primary-model"
title = "Switch back to the primary model"
run = { type = "http", url = "http://127.0.0.1:1/model" }
[[playbooks.actions]]
id = "page-ml"
title = "Page the ML on-call"
run = { type = "http", url = "http://127.0.0.1:1/page" }
"#;

fn opened(confidence: Option<&str>) -> Decision {
    let cfg = Config::from_toml(BRANCHING, &|_| None).unwrap();
    let mut a = alert("Model output invalid", "warning", AlertStatus::Firing);
    a.labels.insert("team".into(), "ml".into());
    if let Some(c) = confidence {
        a.annotations.insert("confidence".into(), c.into());
    }
    handle(None, Input::Alert(a), &cfg, ctx(0)).unwrap()
}

fn proposed(d: &Decision) -> Vec<&str> {
    let inc = d.incident.as_ref().unwrap();
    inc.actions.iter().map(|a| a.id.as_str()).collect()
}

#[test]
fn low_confidence_proposes_only_the_human_branch() {
    let d = opened(Some("0.3"));
    assert_eq!(proposed(&d), ["human-review", "page-ml"]);
    assert!(executes(&d).is_empty());
    let inc = d.incident.as_ref().unwrap();
    assert_eq!(inc.status, Status::Open);
    assert_eq!(
        inc.action("human-review").unwrap().status,
        ActionStatus::Proposed
    );
    // Not on the card either.
    let cfg = Config::from_toml(BRANCHING, &|_| None).unwrap();
    let c = card(inc, &cfg);
    assert!(c.actions.iter().all(|a| a.id != "fallback-model"));
}

#[test]
fn high_confidence_switches_to_the_fallback_on_its_own() {
    let d = opened(Some("0.8"));
    assert_eq!(proposed(&d), ["fallback-model", "page-ml"]);
    assert_eq!(executes(&d), ["fallback-model"]);
    let inc = d.incident.as_ref().unwrap();
    assert_eq!(inc.status, Status::Remediating);
    assert_eq!(
        inc.action("fallback-model").unwrap().status,
        ActionStatus::Approved
    );
}

#[test]
fn a_missing_or_unreadable_value_never_fails_the_alert() {
    // Missing: `>= 0.5` is false, and the human branch says so explicitly with `not exists`.
    let d = opened(None);
    assert_eq!(proposed(&d), ["human-review", "page-ml"]);
    // Not a number: both comparisons are false; only the unconditional action is left.
    let d = opened(Some("high"));
    assert_eq!(proposed(&d), ["page-ml"]);
    assert!(executes(&d).is_empty());
}
