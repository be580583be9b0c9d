//! The real Prometheus Alertmanager (Debian's `prometheus-alertmanager`, 0.25) posting with its
//! own `slack_configs` and `discord_configs` into alert channels of the fake Slack and the fake
//! Discord, which turn the posts into channel messages the real app receives (a Socket Mode
//! `bot_message` event; a gateway MESSAGE_CREATE with `webhook_id`) and parses as alerts:
//!
//! - a group of two pods firing is one incident whose card lists both;
//! - a person talking in the channel opens nothing;
//! - the group clears piecemeal, then fully: the `[RESOLVED]` message stops escalation (the
//!   detection target passes during the quiet period, and nobody is escalated to) and the
//!   incident resolves after the quiet period;
//! - a re-fire within the flap window reopens the same incident.
//!
//! Slack gets Alertmanager's default title with a text template from the Alertmanager
//! documentation's "ranging over all alerts" example, split into firing and resolved sections
//! (Alertmanager's default Slack text is empty); Discord gets Alertmanager's default templates.
//!
//! With `CI` set the tests fail when the binary is missing; elsewhere they say so and pass.

#[path = "support/fake_slack.rs"]
mod fake_slack;
mod support;

use serde_json::Value;
use support::alertmanager::{binary, Alertmanager};
use support::fake_discord;
use support::TestApp;

/// Quiet period and detection target: the detection target (6 s) passes while the group is
/// clear and waits for its quiet period (10 s), so a clear that did not stop escalation would
/// escalate; the firing steps before the clear take about 3 s (1 s group intervals).
const ENGINE: &str = r#"
[engine]
card_coalesce_seconds = 0
resolve_after_clear_seconds = 10
flap_window_seconds = 600

[severity.P2]
detect_seconds = 6
repair_seconds = 1800
approval = "optional"

[escalation]
oncall = ["console:alice"]
"#;

/// Alertmanager's Slack message text: each alert's summary, description and labels, firing
/// and resolved ones under their own heading (the docs' example, sectioned).
const SLACK_TEXT: &str = r#"        text: |-
          {{ if gt (len .Alerts.Firing) 0 }}*Firing*
          {{ range .Alerts.Firing }}*Alert:* {{ .Annotations.summary }} - `{{ .Labels.severity }}`
          *Description:* {{ .Annotations.description }}
          *Details:*
          {{ range .Labels.SortedPairs }} • *{{ .Name }}:* `{{ .Value }}`
          {{ end }}{{ end }}{{ end }}{{ if gt (len .Alerts.Resolved) 0 }}*Resolved*
          {{ range .Alerts.Resolved }}*Alert:* {{ .Annotations.summary }} - `{{ .Labels.severity }}`
          *Details:*
          {{ range .Labels.SortedPairs }} • *{{ .Name }}:* `{{ .Value }}`
          {{ end }}{{ end }}{{ end }}
"#;

async fn incidents(app: &TestApp) -> Vec<Value> {
    let (s, v) = app.get("/api/v1/incidents?status=all").await;
    assert_eq!(s, 200, "{v}");
    v["incidents"].as_array().cloned().unwrap_or_default()
}

/// Member statuses of the incident's group: (firing, resolved).
fn counts(inc: &Value) -> (usize, usize) {
    let members = inc["group"]["members"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    let firing = members.values().filter(|m| m["status"] == "firing").count();
    (firing, members.len() - firing)
}

/// `incidentd_chat_messages_ignored_total{platform}` as the app exposes it.
async fn ignored(app: &TestApp, platform: &str) -> u64 {
    let text = app
        .http
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let prefix = format!("incidentd_chat_messages_ignored_total{{platform=\"{platform}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .map_or(0, |v| v.trim().parse::<f64>().unwrap() as u64)
}

/// What both platforms share once Alertmanager posts into an alert channel: the lifecycle of
/// one group, checked on the app's read API; `card_text` reads the incident's card as the
/// platform shows it, `talk` makes a person write in the alert channel.
async fn lifecycle<C, T>(app: &TestApp, am: &Alertmanager, platform: &str, card_text: C, talk: T)
where
    C: Fn(&str) -> Option<String>,
    T: Fn(&str),
{
    // A group of two pods: one incident, its card listing both.
    am.post(&[("api-1", true), ("api-2", true)]).await;
    let inc = fake_discord::eventually("one incident with both pods", || async {
        let list = incidents(app).await;
        let one = list.first()?;
        (counts(one) == (2, 0)).then(|| one.clone())
    })
    .await;
    let id = inc["id"].as_str().unwrap().to_string();
    assert_eq!(incidents(app).await.len(), 1, "one incident for the group");
    assert_eq!(inc["source"], platform, "{inc}");
    assert_eq!(inc["severity"], "P2", "{inc}");
    assert!(
        inc["title"]
            .as_str()
            .unwrap()
            .contains("KubePodCrashLooping"),
        "{inc}"
    );
    let card = fake_discord::eventually("the card lists both pods", || async {
        card_text(&id).filter(|t| t.contains("pod=api-1") && t.contains("pod=api-2"))
    })
    .await;
    assert!(card.contains("2 firing"), "{card}");

    // A person talks in the alert channel: no incident.
    let before = ignored(app, platform).await;
    talk("anyone around? checkout looks slow to me");
    fake_discord::eventually("the person's message ignored", || async {
        (ignored(app, platform).await > before).then_some(())
    })
    .await;
    assert_eq!(incidents(app).await.len(), 1, "chatter opens nothing");

    // Piecemeal: one pod clears, the incident stays open.
    am.post(&[("api-1", false), ("api-2", true)]).await;
    let inc = fake_discord::eventually("api-1 cleared", || async {
        let list = incidents(app).await;
        let one = list.first()?;
        (counts(one) == (1, 1)).then(|| one.clone())
    })
    .await;
    assert_eq!(inc["status"], "open", "{inc}");
    fake_discord::eventually("the card shows the clear", || async {
        card_text(&id).filter(|t| t.contains("1 firing, 1 resolved"))
    })
    .await;

    // The other clears ([RESOLVED]): escalation stops; resolved after the quiet period.
    am.post(&[("api-1", false), ("api-2", false)]).await;
    let inc = fake_discord::eventually("resolved after the quiet period", || async {
        let list = incidents(app).await;
        let one = list.first()?;
        (one["status"] == "resolved").then(|| one.clone())
    })
    .await;
    assert_eq!(inc["id"], id.as_str());
    let (_, detail) = app.get(&format!("/api/v1/incidents/{id}")).await;
    let events = detail["timeline"].as_array().unwrap();
    let texts: Vec<String> = events
        .iter()
        .map(|e| e["text"].as_str().unwrap_or_default().to_lowercase())
        .collect();
    assert!(
        !texts.iter().any(|t| t.contains("escalat")),
        "nobody is escalated to: {texts:#?}"
    );
    let opened = chrono::DateTime::parse_from_rfc3339(inc["opened_at"].as_str().unwrap()).unwrap();
    let resolved =
        chrono::DateTime::parse_from_rfc3339(inc["resolved_at"].as_str().unwrap()).unwrap();
    assert!(
        resolved - opened >= chrono::Duration::seconds(10),
        "resolved after the quiet period: {inc}"
    );

    // A flap: one pod fires again and the same incident reopens.
    am.post(&[("api-1", true)]).await;
    let inc = fake_discord::eventually("the incident reopened", || async {
        let list = incidents(app).await;
        let one = list.first()?;
        (one["status"] != "resolved").then(|| one.clone())
    })
    .await;
    assert_eq!(inc["id"], id.as_str());
    assert_eq!(incidents(app).await.len(), 1, "no second incident");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alertmanager_slack_configs_into_a_slack_alert_channel() {
    use fake_slack::*;
    let Some(bin) = binary() else { return };
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeSlack::start().await;
    let config = format!(
        "{ENGINE}\n[slack]\nmode = \"socket\"\napi_url = \"{}\"\nalert_channels = [\"{ALERTS}\"]\nincident_channel = \"{INCIDENTS}\"\n",
        fake.api_url
    );
    let env = |k: &str| match k {
        "SLACK_BOT_TOKEN" => Some(BOT_TOKEN.to_string()),
        "SLACK_APP_TOKEN" => Some(APP_TOKEN.to_string()),
        _ => None,
    };
    let app = TestApp::start_with_chat(dir.path(), &config, &env).await;
    fake.wait_connected(1).await;
    let hook = fake.incoming_webhook(ALERTS);
    let receiver = format!(
        "    slack_configs:\n      - api_url: \"{hook}\"\n        channel: \"#alerts\"\n        send_resolved: true\n{SLACK_TEXT}"
    );
    let am = Alertmanager::start(&bin, dir.path(), &receiver).await;

    let card_text = |id: &str| {
        let card = fake.cards().into_iter().rfind(|c| {
            c.text.contains(id)
                || mrkdwn_texts(&Value::Array(c.blocks.clone()))
                    .iter()
                    .any(|t| t.contains(id))
        })?;
        Some(mrkdwn_texts(&Value::Array(card.blocks.clone())).join("\n"))
    };
    let talk = |text: &str| {
        fake.post_user_message(ALERTS, "UALICE", text, None);
    };
    lifecycle(&app, &am, "slack", card_text, talk).await;

    // Every post Alertmanager made was accepted like Slack accepts it, and became a message.
    let posts = fake.calls_of("incoming-webhook");
    assert!(posts.len() >= 4, "{posts:?}");
    assert!(
        posts.iter().all(|c| c.status == 200),
        "{posts:?}; {}",
        am.log()
    );
    assert!(posts[0].body["attachments"][0]["title"]
        .as_str()
        .unwrap()
        .starts_with("[FIRING:2] KubePodCrashLooping"));
    drop(am);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alertmanager_discord_configs_into_a_discord_alert_channel() {
    use fake_discord::*;
    let Some(bin) = binary() else { return };
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeDiscord::start().await;
    let config = format!(
        "{ENGINE}\n[discord]\napi_url = \"{}\"\nguild_ids = [\"{GUILD}\"]\nalert_channels = [\"{ALERTS}\"]\nincident_channel = \"{INCIDENTS}\"\n",
        fake.base
    );
    let env = |k: &str| (k == "DISCORD_TOKEN").then(|| TOKEN.to_string());
    let app = TestApp::start_with_chat(dir.path(), &config, &env).await;
    fake.wait("the gateway session", |f| f.connected().then_some(()))
        .await;
    let hook = fake.webhook_url(ALERTS);
    let receiver = format!(
        "    discord_configs:\n      - webhook_url: \"{hook}\"\n        send_resolved: true\n"
    );
    let am = Alertmanager::start(&bin, dir.path(), &receiver).await;

    let card_text = |id: &str| {
        let found = [ALERTS, INCIDENTS]
            .iter()
            .flat_map(|ch| fake.messages_in(*ch))
            .chain(fake.threads().keys().flat_map(|t| fake.messages_in(*t)))
            .filter(|m| m.webhook_id.is_none() && m.embeds.to_string().contains(id))
            .last()?;
        Some(found.embeds.to_string())
    };
    let talk = |text: &str| {
        fake.post_as_user(ALERTS, 600_000_000_000_000_001, "alice", text);
    };
    lifecycle(&app, &am, "discord", card_text, talk).await;

    // Alertmanager's posts were Execute Webhook calls the fake answered 204.
    let posts: Vec<Req> = fake
        .requests()
        .into_iter()
        .filter(|r| r.path.starts_with("/api/webhooks/"))
        .collect();
    assert!(posts.len() >= 4, "{posts:?}");
    assert!(
        posts.iter().all(|r| r.status == 204),
        "{posts:?}; {}",
        am.log()
    );
    drop(am);
    app.stop().await;
}

/// The fakes answer webhook posts as the platforms do, refusals included (what Alertmanager's
/// notifier sees and retries on).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fakes_answer_webhook_posts_like_the_platforms() {
    let http = reqwest::Client::new();
    let post = |url: String, body: String| {
        let http = http.clone();
        async move {
            let r = http
                .post(url)
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            (status, r.text().await.unwrap())
        }
    };

    // Slack incoming webhooks: 200 "ok", or a plain-text error code.
    let slack = fake_slack::FakeSlack::start().await;
    let hook = slack.incoming_webhook(fake_slack::ALERTS);
    assert_eq!(
        post(hook.clone(), r#"{"text":"[FIRING:1] X"}"#.into()).await,
        (200, "ok".into())
    );
    assert_eq!(
        post(hook.clone(), r#"{"text":""}"#.into()).await,
        (400, "no_text".into())
    );
    assert_eq!(
        post(hook.clone(), "not json".into()).await,
        (400, "invalid_payload".into())
    );
    let unknown = hook.replace("secret", "wrong");
    assert_eq!(
        post(unknown, r#"{"text":"x"}"#.into()).await,
        (404, "no_service".into())
    );
    let stored: Vec<_> = slack
        .messages()
        .into_iter()
        .filter(|m| m.channel == fake_slack::ALERTS)
        .collect();
    assert_eq!(stored.len(), 1, "only the accepted post is a message");
    assert_eq!(stored[0].raw["subtype"], "bot_message");
    assert!(stored[0].bot_id.is_some());

    // Discord Execute Webhook: 204, the message with ?wait=true, JSON errors otherwise.
    let discord = fake_discord::FakeDiscord::start().await;
    let url = discord.webhook_url(fake_discord::ALERTS);
    let embed = r#"{"embeds":[{"title":"[FIRING:1] X","description":"d","color":10038562}]}"#;
    let (s, body) = post(url.clone(), embed.into()).await;
    assert_eq!((s, body.as_str()), (204, ""));
    let (s, body) = post(format!("{url}?wait=true"), embed.into()).await;
    assert_eq!(s, 200);
    let msg: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(msg["channel_id"], fake_discord::ALERTS.to_string());
    assert!(msg["webhook_id"].is_string(), "{msg}");
    assert_eq!(msg["author"]["bot"], true);
    let (s, body) = post(url.clone(), r#"{"content":""}"#.into()).await;
    assert_eq!(s, 400, "{body}");
    assert!(body.contains("50006"), "{body}");
    let (s, body) = post(url.replace("hook-token", "bad-token"), embed.into()).await;
    assert_eq!(s, 401, "{body}");
    assert!(body.contains("50027"), "{body}");
    let too_long = serde_json::json!({ "embeds": [{ "title": "x".repeat(257) }] }).to_string();
    let (s, body) = post(url, too_long).await;
    assert_eq!(s, 400, "{body}");
    assert_eq!(
        discord
            .messages_in(fake_discord::ALERTS)
            .iter()
            .filter(|m| m.webhook_id.is_some())
            .count(),
        2,
        "only the accepted posts are messages"
    );
}
