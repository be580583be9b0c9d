//! The whole loop on every surface at once: the real app wired to the fake Slack (socket mode),
//! the fake Discord (REST + gateway) and the web console. One scripted incident — an
//! Alertmanager alert, an acknowledgement on Discord, a refused and an authorized approval on
//! Slack, a real child process restarting a fake service, a verification that passes — ends
//! with the post-incident report in the incident's thread on each platform, rendered natively
//! and within the platform limits the fakes enforce, and with `/metrics` counting the run.
//! A second test proves the fakes reject over-limit payloads the way the platforms do, so the
//! first one could fail. Waits are on conditions (support helpers), never sleeps.

#[path = "support/fake_slack.rs"]
mod fake_slack;
mod support;

use std::collections::BTreeMap;

use incidentd::app::{run, Deps};
use incidentd::config::Config;
use serde_json::{json, Value};
use support::fake_discord::{self, FakeDiscord};
use support::sse::Events;
use tokio::sync::oneshot;

/// A Discord role that may act on P1 incidents, and a member who has it.
const RESPONDERS: u64 = 700_000_000_000_000_001;
const BOB: u64 = 600_000_000_000_000_002;
const ALICE_TOKEN: &str = "alice-token-0123456789";

fn config(slack: &fake_slack::FakeSlack, discord: &FakeDiscord) -> String {
    let fx = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");
    format!(
        r#"
[engine]
card_coalesce_seconds = 0

[[playbooks]]
id = "api"
title = "API"
kinds = ["tool_api_failure"]
[[playbooks.actions]]
id = "restart"
title = "Restart the API"
run = {{ type = "command", argv = ["/bin/sh", "{fx}/restart.sh", "{{labels.state}}"] }}
verify = {{ type = "command", argv = ["/bin/sh", "{fx}/check.sh", "{{labels.state}}"], within_seconds = 5, interval_seconds = 1 }}

[policy.P1]
approvers = ["slack:UAPPROVER", "discord-role:{RESPONDERS}", "console:alice"]

[[console.users]]
name = "alice"
token_env = "ALICE_TOKEN"

[slack]
mode = "socket"
api_url = "{slack_api}"
alert_channels = ["{slack_alerts}"]
incident_channel = "{slack_incidents}"

[discord]
api_url = "{discord_api}"
guild_ids = ["{guild}"]
alert_channels = ["{discord_alerts}"]
incident_channel = "{discord_incidents}"
"#,
        slack_api = slack.api_url,
        slack_alerts = fake_slack::ALERTS,
        slack_incidents = fake_slack::INCIDENTS,
        discord_api = discord.base,
        guild = fake_discord::GUILD,
        discord_alerts = fake_discord::ALERTS,
        discord_incidents = fake_discord::INCIDENTS,
    )
}

/// An Alertmanager webhook for one critical HighErrorRate alert on `api`, whose fake service
/// keeps its state in `state` (the label the playbook's argv is templated from).
fn alert(state: &str) -> String {
    json!({
        "version": "4", "groupKey": "{}:{alertname=\"HighErrorRate\"}", "truncatedAlerts": 0,
        "status": "firing", "receiver": "incidentd", "groupLabels": {}, "commonLabels": {},
        "commonAnnotations": {}, "externalURL": "http://alertmanager:9093",
        "alerts": [{
            "status": "firing",
            "labels": { "alertname": "HighErrorRate", "service": "api", "severity": "critical", "state": state },
            "annotations": { "summary": "HighErrorRate on api", "description": "5xx above 5% for 10 minutes" },
            "startsAt": "2026-11-29T12:00:00Z", "endsAt": "0001-01-01T00:00:00Z",
            "generatorURL": "http://prometheus:9090/graph?g0.expr=x", "fingerprint": ""
        }]
    })
    .to_string()
}

/// `/metrics` as (name, labels) → value.
fn parse_metrics(text: &str) -> BTreeMap<(String, BTreeMap<String, String>), f64> {
    let mut out = BTreeMap::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let (series, value) = line.rsplit_once(' ').expect("name value");
        let (name, labels) = match series.split_once('{') {
            Some((n, rest)) => (n, rest.trim_end_matches('}')),
            None => (series, ""),
        };
        let labels: BTreeMap<String, String> = labels
            .split("\",")
            .filter(|p| !p.is_empty())
            .map(|p| {
                let (k, v) = p.split_once('=').expect("label=value");
                (k.to_string(), v.trim_matches('"').to_string())
            })
            .collect();
        out.insert((name.to_string(), labels), value.parse().expect("a number"));
    }
    out
}

fn metric(
    m: &BTreeMap<(String, BTreeMap<String, String>), f64>,
    name: &str,
    labels: &[(&str, &str)],
) -> f64 {
    let want: BTreeMap<String, String> = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    *m.get(&(name.to_string(), want))
        .unwrap_or_else(|| panic!("no series {name}{labels:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scripted_incident_ends_with_its_report_in_every_thread_and_counted_in_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    let slack = fake_slack::FakeSlack::start().await;
    let discord = FakeDiscord::start().await;
    let env = |k: &str| match k {
        "SLACK_BOT_TOKEN" => Some(fake_slack::BOT_TOKEN.to_string()),
        "SLACK_APP_TOKEN" => Some(fake_slack::APP_TOKEN.to_string()),
        "DISCORD_TOKEN" => Some(fake_discord::TOKEN.to_string()),
        "ALICE_TOKEN" => Some(ALICE_TOKEN.to_string()),
        _ => None,
    };
    let mut cfg = Config::from_toml(&config(&slack, &discord), &env).expect("test config");
    cfg.store.path = dir.path().join("store");
    // The production wiring (console, Slack, Discord), with a quick outbox retry.
    let mut deps = Deps::from_config(&cfg).expect("deps");
    assert_eq!(deps.surfaces.len(), 3, "console, Slack and Discord");
    deps.outbox = support::fast_outbox();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = oneshot::channel::<()>();
    let app = tokio::spawn(run(cfg, listener, deps, async move {
        let _ = stopped.await;
    }));
    slack.wait_connected(1).await;
    discord
        .wait("READY and /incident registered", |f| {
            (f.connected() && f.commands(fake_discord::GUILD).is_some()).then_some(())
        })
        .await;
    let http = reqwest::Client::new();
    let api = |path: String| {
        let http = http.clone();
        async move {
            let r = http.get(path).send().await.unwrap();
            assert_eq!(r.status(), 200);
            r.json::<Value>().await.unwrap()
        }
    };

    // The console, logged in, watching its live stream from before the alert.
    let browser = reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let r = browser
        .post(format!("{base}/console/login"))
        .form(&[("token", ALICE_TOKEN)])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    let mut events = Events::open(&browser, &format!("{base}/console/events")).await;

    // 1. The alert arrives.
    let r = http
        .post(format!("{base}/api/v1/alerts/alertmanager"))
        .header("content-type", "application/json")
        .body(alert(state.path().to_str().unwrap()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    slack
        .wait("the Slack card", |f| !f.cards().is_empty())
        .await;
    let slack_card = slack.cards().remove(0);
    assert_eq!(slack_card.channel, fake_slack::INCIDENTS);
    let discord_card = discord
        .wait("the Discord card and its thread", |f| {
            let card = f
                .messages_in(fake_discord::INCIDENTS)
                .into_iter()
                .find(|m| m.embeds.as_array().is_some_and(|e| !e.is_empty()))?;
            f.threads().contains_key(&card.id).then_some(card)
        })
        .await;
    events
        .wait("card", |v| v["incident"] == "INC-1" && v["new"] == true)
        .await;

    // 2. A responder acknowledges on Discord.
    discord.click(discord_card.id, "ack:INC-1", BOB, &[RESPONDERS]);
    fake_discord::eventually("the acknowledgement", || async {
        let d = api(format!("{base}/api/v1/incidents/INC-1")).await;
        d["incident"]["acknowledged_at"].is_string().then_some(())
    })
    .await;

    // 3. On Slack, someone outside the policy is refused; the approver's click runs the action.
    slack.click("UEVE", &slack_card, "approve:INC-1:restart");
    slack
        .wait("the refusal", |f| {
            f.ephemerals().iter().any(|e| e["user"] == "UEVE")
        })
        .await;
    slack.click("UAPPROVER", &slack_card, "approve:INC-1:restart");

    // 4. The real script restarts the fake service, the check passes, the incident resolves.
    let detail = fake_discord::eventually("the incident to resolve", || async {
        let d = api(format!("{base}/api/v1/incidents/INC-1")).await;
        (d["incident"]["status"] == "resolved").then_some(d)
    })
    .await;
    assert!(
        state.path().join("restarted").exists(),
        "the script really ran"
    );
    let timeline = serde_json::to_string(&detail["timeline"]).unwrap();
    assert!(timeline.contains("\"verified\""), "{timeline}");
    let inc = &detail["incident"];
    assert_eq!(inc["severity"], "P1");
    assert_eq!(inc["kind"], "tool_api_failure");
    let approver = inc["actions"][0]["approvals"][0]["name"]
        .as_str()
        .expect("the approver's name")
        .to_string();
    let acker = inc["acknowledged_by"]["name"]
        .as_str()
        .expect("the acknowledger's name")
        .to_string();

    // 5a. Slack: the report is threaded under the card, as Block Kit within the limits.
    let card_ts = slack_card.ts.clone();
    slack
        .wait("the report in the Slack thread", |f| {
            f.messages().iter().any(|m| {
                m.thread_ts.as_deref() == Some(card_ts.as_str())
                    && m.metadata["event_payload"]["kind"] == "report"
            })
        })
        .await;
    let reports: Vec<fake_slack::FakeMessage> = slack
        .messages()
        .into_iter()
        .filter(|m| m.metadata["event_payload"]["kind"] == "report")
        .collect();
    assert_eq!(
        reports.len(),
        1,
        "a small report is one message, posted once"
    );
    let report = &reports[0];
    assert_eq!(report.channel, fake_slack::INCIDENTS);
    assert_eq!(report.thread_ts.as_deref(), Some(card_ts.as_str()));
    fake_slack::check_blocks(&report.blocks).expect("within Block Kit limits");
    assert!(report.blocks.len() <= 50);
    assert!(!report.text.is_empty() && report.text.chars().count() <= 4000);
    assert!(report.text.contains("INC-1"), "{}", report.text);
    assert_eq!(report.blocks[0]["type"], "header");
    let title = inc["title"].as_str().unwrap().to_string();
    assert!(report.blocks[0]["text"]["text"]
        .as_str()
        .unwrap()
        .ends_with(&format!("INC-1 · Post-incident report — {title}")));
    let blocks = serde_json::to_string(&report.blocks).unwrap();
    for want in [
        "*Severity*\\nP1".to_string(),
        "*Kind*\\nTool/API failure".to_string(),
        "*Status*\\nResolved".to_string(),
        format!("by {acker}"),
        "*Scope*\\nservice=api".to_string(),
        "*Alerts received*\\n1".to_string(),
        "*Root cause*\\n*".to_string(),
        "*Actions taken*".to_string(),
        format!("`restart` Restart the API — *Succeeded*, approved/decided by {approver}: exit 0"),
        "verified".to_string(),
        "*Improvements*".to_string(),
        "*Timeline*".to_string(),
    ] {
        assert!(blocks.contains(&want), "missing {want} in {blocks}");
    }
    let posted = slack
        .calls_of("chat.postMessage")
        .into_iter()
        .filter(|c| c.body.to_string().contains("Post-incident report"))
        .collect::<Vec<_>>();
    assert_eq!(posted.len(), 1);
    assert_eq!(posted[0].body["thread_ts"], card_ts.as_str());
    assert_eq!(posted[0].error, None);

    // 5b. Discord: embeds in the incident's thread, within the limits.
    let thread = discord_card.id;
    let message = discord
        .wait("the report in the Discord thread", |f| {
            f.messages_in(thread).into_iter().find(|m| {
                m.embeds[0]["title"]
                    .as_str()
                    .is_some_and(|t| t.starts_with("Post-incident report: INC-1"))
            })
        })
        .await;
    let req = discord
        .requests()
        .into_iter()
        .find(|r| {
            r.method == "POST"
                && r.path.ends_with(&format!("/channels/{thread}/messages"))
                && r.body.to_string().contains("Post-incident report")
        })
        .expect("the report request");
    assert_eq!(req.status, 200);
    fake_discord::check_message(&req.body).expect("within Discord's limits");
    assert_eq!(req.body["allowed_mentions"]["parse"], json!([]));
    let embed = &message.embeds[0];
    let field = |name: &str| -> String {
        embed["fields"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["name"] == name)
            .unwrap_or_else(|| panic!("no field {name} in {embed}"))["value"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert_eq!(field("Severity"), "P1");
    assert_eq!(field("Kind"), "Tool/API failure");
    assert_eq!(field("Status"), "Resolved");
    assert!(field("Acknowledged").ends_with(&format!("by {acker}")));
    assert!(field("Root cause").starts_with("**"));
    assert!(field("Actions taken").contains(&format!(
        "`restart` Restart the API — **Succeeded**, approved/decided by {approver}: exit 0"
    )));
    assert!(field("Timeline").contains("verified"));
    assert_eq!(
        embed["title"],
        format!("Post-incident report: INC-1 — {title}")
    );
    assert_eq!(embed["description"], inc["description"]);
    assert!(embed["description"]
        .as_str()
        .unwrap()
        .contains("5xx above 5% for 10 minutes"));
    let reports = discord
        .messages_in(thread)
        .into_iter()
        .filter(|m| {
            m.embeds[0]["title"]
                .as_str()
                .is_some_and(|t| t.starts_with("Post-incident report"))
        })
        .count();
    assert_eq!(reports, 1, "posted once");

    // 5c. The console: live, as a reply in the thread, and on the incident page.
    let reply = events
        .wait("reply", |v| {
            v["incident"] == "INC-1" && v["html"].as_str().unwrap().contains("report-card")
        })
        .await;
    let html = reply["html"].as_str().unwrap();
    for want in [
        &format!("Post-incident report: INC-1 — {title}"),
        "<dt>Severity</dt><dd>P1</dd>",
        "<h4>Root cause</h4>",
        &format!("<code>restart</code> Restart the API — <strong>Succeeded</strong>, approved/decided by {approver}: exit 0"),
    ] {
        assert!(html.contains(want), "missing {want} in {html}");
    }
    let page = browser
        .get(format!("{base}/console/incidents/INC-1"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let thread_html = page
        .split(r#"<ol class="replies" id="replies-INC-1""#)
        .nth(1)
        .and_then(|s| s.split("</ol>").next())
        .expect("the incident's thread on the page");
    assert!(
        thread_html.contains(r#"<section class="report-card""#),
        "the report is in the thread: {thread_html}"
    );

    // 6. The metrics of this run.
    let text = http
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let m = parse_metrics(&text);
    let sev_kind = [("severity", "P1"), ("kind", "tool_api_failure")];
    assert_eq!(
        metric(
            &m,
            "incidentd_alerts_received_total",
            &[("source", "alertmanager"), ("status", "firing")]
        ),
        1.0
    );
    assert_eq!(
        metric(&m, "incidentd_incidents_opened_total", &sev_kind),
        1.0
    );
    assert_eq!(
        metric(&m, "incidentd_incidents_resolved_total", &sev_kind),
        1.0
    );
    assert_eq!(
        metric(&m, "incidentd_approvals_total", &[("outcome", "approved")]),
        1.0
    );
    assert_eq!(
        metric(&m, "incidentd_approvals_total", &[("outcome", "refused")]),
        1.0
    );
    assert_eq!(
        metric(
            &m,
            "incidentd_executions_total",
            &[("executor", "command"), ("outcome", "succeeded")]
        ),
        1.0
    );
    assert!(!text.contains("outcome=\"failed\""), "{text}");
    assert_eq!(
        metric(
            &m,
            "incidentd_time_to_resolve_seconds_count",
            &[("severity", "P1")]
        ),
        1.0
    );
    assert_eq!(
        metric(
            &m,
            "incidentd_time_to_acknowledge_seconds_count",
            &[("severity", "P1")]
        ),
        1.0
    );
    for sink in ["slack", "discord", "console"] {
        assert!(
            metric(
                &m,
                "incidentd_chat_deliveries_total",
                &[("sink", sink), ("result", "ok")]
            ) >= 4.0,
            "card, notes and the report went to {sink}"
        );
    }

    stop.send(()).unwrap();
    app.await.unwrap().unwrap();
}

/// A report big enough for several messages, built from the public types.
fn huge_report() -> incidentd::domain::report::Report {
    use incidentd::domain::report::*;
    let t = chrono::Utc::now();
    Report {
        incident: incidentd::domain::incident::IncidentId(1),
        title: "x".repeat(500),
        severity: incidentd::domain::severity::Severity::P1,
        kind: "tool_api_failure".into(),
        kind_name: "Tool/API failure".into(),
        status: incidentd::domain::incident::Status::Resolved,
        started_at: None,
        detected_at: t,
        acknowledged_at: None,
        acknowledged_by: None,
        mitigated_at: None,
        resolved_at: Some(t),
        resolved_by: None,
        durations: Durations::default(),
        alert_count: 1,
        scope: vec![],
        recurrence: None,
        description: Some("d".repeat(10_000)),
        root_cause: None,
        evidence: vec![],
        actions: vec![],
        followups: (0..40)
            .map(|i| ReportFollowUp {
                text: format!("follow-up {i} {}", "f".repeat(300)),
                owner: None,
                ..Default::default()
            })
            .collect(),
        timeline: (0..300)
            .map(|i| ReportEntry {
                at: t,
                actor: "x".into(),
                text: format!("event {i} {}", "e".repeat(150)),
            })
            .collect(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fakes_reject_over_limit_payloads_like_the_platforms_and_accept_our_reports() {
    let slack = fake_slack::FakeSlack::start().await;
    slack.set_rate(None);
    let discord = FakeDiscord::start().await;
    let http = reqwest::Client::new();
    let post_slack = |body: Value| {
        let http = http.clone();
        let url = format!("{}/chat.postMessage", slack.api_url);
        async move {
            let r = http
                .post(url)
                .bearer_auth(fake_slack::BOT_TOKEN)
                .json(&body)
                .send()
                .await
                .unwrap();
            r.json::<Value>().await.unwrap()
        }
    };
    let section =
        |text: String| json!({ "type": "section", "text": { "type": "mrkdwn", "text": text } });
    let ch = fake_slack::INCIDENTS;
    for (what, body, error) in [
        (
            "51 blocks",
            json!({ "channel": ch, "text": "t", "blocks": vec![section("s".into()); 51] }),
            "invalid_blocks",
        ),
        (
            "section text of 3001",
            json!({ "channel": ch, "text": "t", "blocks": [section("s".repeat(3001))] }),
            "invalid_blocks",
        ),
        (
            "11 fields",
            json!({ "channel": ch, "text": "t", "blocks": [{ "type": "section", "fields": vec![json!({ "type": "mrkdwn", "text": "f" }); 11] }] }),
            "invalid_blocks",
        ),
        (
            "a field of 2001",
            json!({ "channel": ch, "text": "t", "blocks": [{ "type": "section", "fields": [{ "type": "mrkdwn", "text": "f".repeat(2001) }] }] }),
            "invalid_blocks",
        ),
        (
            "header of 151",
            json!({ "channel": ch, "text": "t", "blocks": [{ "type": "header", "text": { "type": "plain_text", "text": "h".repeat(151) } }] }),
            "invalid_blocks",
        ),
        (
            "text of 40001",
            json!({ "channel": ch, "text": "t".repeat(40_001) }),
            "msg_too_long",
        ),
    ] {
        let v = post_slack(body).await;
        assert_eq!(v["ok"], false, "{what}: {v}");
        assert_eq!(v["error"], error, "{what}");
    }
    assert!(
        slack.messages().is_empty(),
        "nothing over the limits was stored"
    );
    // Exactly at the limits is fine.
    let v = post_slack(
        json!({ "channel": ch, "text": "t", "blocks": vec![section("s".repeat(3000)); 50] }),
    )
    .await;
    assert_eq!(v["ok"], true, "{v}");

    // What the bot renders for a huge report passes the fake Slack, message by message.
    let report = huge_report();
    let messages = incidentd::chat::slack::render::report_messages(&report, "incidentd:slack:1");
    assert!(messages.len() > 1);
    for m in &messages {
        let v = post_slack(json!({ "channel": ch, "text": m.text, "blocks": m.blocks })).await;
        assert_eq!(v["ok"], true, "{v}");
    }

    let post_discord = |body: Value| {
        let http = http.clone();
        let url = format!(
            "{}/api/v10/channels/{}/messages",
            discord.base,
            fake_discord::INCIDENTS
        );
        async move {
            let r = http
                .post(url)
                .header("authorization", format!("Bot {}", fake_discord::TOKEN))
                .json(&body)
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        }
    };
    let embed = |fields: usize, value: usize| json!({ "title": "t", "fields": (0..fields).map(|i| json!({ "name": format!("f{i}"), "value": "v".repeat(value) })).collect::<Vec<_>>() });
    for (what, body) in [
        (
            "title of 257",
            json!({ "embeds": [{ "title": "t".repeat(257) }] }),
        ),
        (
            "description of 4097",
            json!({ "embeds": [{ "description": "d".repeat(4097) }] }),
        ),
        ("26 fields", json!({ "embeds": [embed(26, 1)] })),
        (
            "a field value of 1025",
            json!({ "embeds": [embed(1, 1025)] }),
        ),
        (
            "6001 characters over two embeds",
            json!({ "embeds": [embed(3, 1000), embed(3, 1000)] }),
        ),
        ("11 embeds", json!({ "embeds": vec![embed(1, 1); 11] })),
        (
            "footer of 2049",
            json!({ "embeds": [{ "title": "t", "footer": { "text": "f".repeat(2049) } }] }),
        ),
        ("content of 2001", json!({ "content": "c".repeat(2001) })),
    ] {
        let (status, v) = post_discord(body).await;
        assert_eq!(status, 400, "{what}: {v}");
        assert_eq!(v["code"], 50035, "{what}: {v}");
    }
    assert!(discord.messages_in(fake_discord::INCIDENTS).is_empty());
    let messages = incidentd::chat::discord::render::report_messages(&report);
    assert!(messages.len() > 1);
    for m in messages {
        let (status, v) = post_discord(m).await;
        assert_eq!(status, 200, "{v}");
    }
}

/// "part i of n" of a report message (from its closing context), if it is one.
fn part_of(m: &fake_slack::FakeMessage) -> Option<(usize, usize)> {
    if m.metadata["event_payload"]["kind"] != "report" {
        return None;
    }
    let context = m.blocks.last()?["elements"][0]["text"].as_str()?;
    let rest = context.split("part ").nth(1)?;
    let (i, rest) = rest.split_once(" of ")?;
    let n = rest.split(' ').next()?;
    Some((i.parse().ok()?, n.parse().ok()?))
}

/// A report too long for one Slack message is posted as several, in order, in the thread; when
/// Slack stores parts but their answers are lost (HTTP 500), the retried delivery finds them in
/// the thread and posts only the rest: every part exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_report_is_threaded_in_order_and_lost_answers_do_not_double_parts() {
    let dir = tempfile::tempdir().unwrap();
    let slack = fake_slack::FakeSlack::start().await;
    slack.set_rate(None);
    let text = format!(
        r#"
[engine]
card_coalesce_seconds = 0

[policy.P1]
approvers = ["slack:UAPPROVER"]

[slack]
mode = "socket"
api_url = "{}"
alert_channels = ["{}"]
incident_channel = "{}"
"#,
        slack.api_url,
        fake_slack::ALERTS,
        fake_slack::INCIDENTS
    );
    let env = |k: &str| match k {
        "SLACK_BOT_TOKEN" => Some(fake_slack::BOT_TOKEN.to_string()),
        "SLACK_APP_TOKEN" => Some(fake_slack::APP_TOKEN.to_string()),
        _ => None,
    };
    let mut cfg = Config::from_toml(&text, &env).expect("test config");
    cfg.store.path = dir.path().join("store");
    let mut deps = Deps::from_config(&cfg).expect("deps");
    deps.outbox = support::fast_outbox();
    // Slack only, unpaced: this test is about order and idempotency, not pacing.
    deps.sinks.clear();
    deps.surfaces = vec![std::sync::Arc::new(
        incidentd::chat::slack::SlackSurface::new(cfg.slack.as_ref().unwrap(), false)
            .with_post_pace(None),
    )];
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = oneshot::channel::<()>();
    let app = tokio::spawn(run(cfg, listener, deps, async move {
        let _ = stopped.await;
    }));
    slack.wait_connected(1).await;
    let r = reqwest::Client::new()
        .post(format!("{base}/api/v1/alerts/alertmanager"))
        .header("content-type", "application/json")
        .body(alert("/nonexistent"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    slack.wait("the card", |f| !f.cards().is_empty()).await;
    let card = slack.cards().remove(0);
    // Forty long follow-ups: the report's follow-ups and timeline need several messages.
    for i in 0..40 {
        slack
            .command(
                "UAPPROVER",
                &format!("followup INC-1 item {i:02} {} @owner{i}", "w".repeat(900)),
            )
            .await;
    }
    let root = card.ts.clone();
    slack
        .wait("the forty follow-up notes", |f| {
            f.messages()
                .iter()
                .filter(|m| m.thread_ts.as_deref() == Some(root.as_str()) && m.text.contains("📌"))
                .count()
                == 40
        })
        .await;
    // `/incident report` answers privately with far more than Slack's recommended 4 000
    // characters (the fake checks Slack's 40 000), follow-ups in the order they were added.
    let answer = slack.command("UAPPROVER", "report INC-1").await;
    assert_eq!(answer["response_type"], "ephemeral");
    let text = answer["text"].as_str().unwrap();
    assert!(text.chars().count() > 30_000, "{} characters", text.len());
    let at = |item: &str| text.find(item).unwrap_or_else(|| panic!("{item} missing"));
    assert!(at("item 00") < at("item 20") && at("item 20") < at("item 30"));
    // A busy war-room thread: more replies than one page of conversations.replies (1 000), so
    // the retry must page through the thread to find the parts already posted.
    slack.add_messages(fake_slack::INCIDENTS, Some(&card.ts), 1200);
    // Slack stores the report's first two parts but their answers are lost.
    slack.lose_answers_of("report", 2);
    slack
        .command("UAPPROVER", "resolve INC-1 fixed upstream")
        .await;
    let root = card.ts.clone();
    slack
        .wait("the report's last part", |f| {
            f.messages().iter().any(|m| {
                m.thread_ts.as_deref() == Some(root.as_str())
                    && part_of(m).is_some_and(|(i, n)| i == n)
            })
        })
        .await;
    let parts: Vec<fake_slack::FakeMessage> = slack
        .messages()
        .into_iter()
        .filter(|m| m.metadata["event_payload"]["kind"] == "report")
        .collect();
    assert!(parts.len() > 1, "a long report needs several messages");
    // The answers really were lost: the same entry was posted again after a 500.
    let lost: Vec<_> = slack
        .calls_of("chat.postMessage")
        .into_iter()
        .filter(|c| c.status == 500)
        .collect();
    assert_eq!(lost.len(), 2);
    assert!(lost
        .iter()
        .all(|c| c.body["metadata"]["event_payload"]["kind"] == "report"));
    // The report follows the note that resolved the incident.
    let thread: Vec<_> = slack
        .messages()
        .into_iter()
        .filter(|m| m.thread_ts.as_deref() == Some(root.as_str()))
        .collect();
    let resolved_at = thread
        .iter()
        .position(|m| m.text.contains("Resolved by"))
        .expect("the resolving note");
    let first_part = thread
        .iter()
        .position(|m| m.metadata["event_payload"]["kind"] == "report")
        .unwrap();
    assert!(resolved_at < first_part, "the note, then the report");
    let n = parts.len();
    for (i, m) in parts.iter().enumerate() {
        assert_eq!(
            m.thread_ts.as_deref(),
            Some(card.ts.as_str()),
            "in the thread"
        );
        fake_slack::check_blocks(&m.blocks).expect("within Block Kit limits");
        assert_eq!(
            part_of(m),
            Some((i + 1, n)),
            "every part in its place, once"
        );
    }
    let all = parts
        .iter()
        .map(|m| serde_json::to_string(&m.blocks).unwrap())
        .collect::<String>();
    assert!(parts[0].blocks[0]["type"] == "header");
    for i in 0..40 {
        assert!(
            all.contains(&format!("item {i:02} ")),
            "follow-up {i} is in the report"
        );
    }
    stop.send(()).unwrap();
    app.await.unwrap().unwrap();
}
