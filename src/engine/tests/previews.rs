//! What people see is what runs: cards and notes show commands, requests and verifications
//! templated for the incident exactly as the executor templates them.

use super::*;

const TEMPLATED: &str = r#"
[[playbooks]]
id = "api"
title = "API"
kinds = ["tool_api_failure"]
[[playbooks.actions]]
id = "restart"
title = "Restart"
run = { type = "command", argv = ["/usr/bin/systemctl", "restart", "{labels.service}"] }
verify = { type = "http", url = "http://127.0.0.1:9/health/{labels.service}?incident={incident.id}" }
[[playbooks.actions]]
id = "probe"
title = "Probe"
run = { type = "command", argv = ["/usr/bin/probe", "{labels.service}"] }
verify = { type = "command", argv = ["/usr/bin/check", "{labels.service}"], expect_exit = 0 }

[policy.P2]
approvers = ["slack:U1"]
"#;

fn templated() -> Config {
    Config::from_toml(TEMPLATED, &|_| None).unwrap()
}

fn incident_for(service: &str) -> Incident {
    let mut a = alert("Orders API 503 errors", "warning", AlertStatus::Firing);
    a.labels.insert("service".into(), service.into());
    handle(None, Input::Alert(a), &templated(), ctx(0))
        .unwrap()
        .incident
        .unwrap()
}

#[test]
fn the_card_shows_each_action_templated_for_the_incident() {
    let inc = incident_for("checkout");
    let c = card(&inc, &templated());
    let shown: Vec<(&str, &str)> = c
        .actions
        .iter()
        .map(|a| (a.id.as_str(), a.summary.as_str()))
        .collect();
    assert_eq!(
        shown,
        [
            ("restart", "/usr/bin/systemctl restart checkout"),
            ("probe", "/usr/bin/probe checkout"),
        ]
    );
}

#[test]
fn a_value_the_templating_refuses_shows_the_refusal_on_the_card() {
    let inc = incident_for("checkout; rm -rf /");
    let c = card(&inc, &templated());
    let restart = c.actions.iter().find(|a| a.id == "restart").unwrap();
    assert_eq!(
        restart.summary,
        "cannot run: {labels.service} = \"checkout; rm -rf /\" does not match the allowed pattern ^[A-Za-z0-9._:/=-]{1,128}$; refusing to run"
    );
}

#[test]
fn the_verification_note_shows_the_check_as_it_runs() {
    let cfg = templated();
    let inc = incident_for("checkout");
    let finish = |action: &str| {
        let d = handle(
            Some(inc.clone()),
            Input::ExecutionFinished {
                incident: inc.id,
                action: action.into(),
                key: format!("{}:{action}", inc.id),
                success: true,
                summary: "exit 0 in 1 ms".into(),
            },
            &cfg,
            ctx(5),
        )
        .unwrap();
        chats(&d)
            .into_iter()
            .find_map(|b| match b {
                ChatBody::Note { text, .. } => Some(text.clone()),
                _ => None,
            })
            .unwrap()
    };
    assert_eq!(
        finish("restart"),
        "✅ `restart` ran: exit 0 in 1 ms. Verifying: GET http://127.0.0.1:9/health/checkout?incident=INC-1 answers 200."
    );
    assert_eq!(
        finish("probe"),
        "✅ `probe` ran: exit 0 in 1 ms. Verifying: `/usr/bin/check checkout` exits 0."
    );
}
