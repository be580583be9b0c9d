//! Discord end to end: the real app with serenity's real client against the fake Discord over
//! loopback sockets (REST and gateway WebSocket). Webhook-embed alerts open one thread with a
//! card, repeats edit it, thread replies reach the timeline, buttons and `/incident` go through
//! the policy, a gateway drop resumes without losing or duplicating events, 429s are honoured.

mod support;

use std::sync::Arc;

use incidentd::app::{run, Deps, PlaybookExecutor};
use incidentd::chat::discord::DiscordSurface;
use incidentd::config::Config;
use incidentd::ports::SystemClock;
use serde_json::Value;
use support::fake_discord::*;
use support::{alertmanager, fast_outbox};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

const APPROVERS: u64 = 700_000_000_000_000_001;
const ALICE: u64 = 600_000_000_000_000_001;
const BOB: u64 = 600_000_000_000_000_002;

struct Rig {
    fake: FakeDiscord,
    base: String,
    http: reqwest::Client,
    shutdown: Option<oneshot::Sender<()>>,
    handle: Option<JoinHandle<anyhow::Result<()>>>,
}

fn config(fake: &FakeDiscord) -> String {
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
title = "Restart"
run = {{ type = "command", argv = ["/bin/true"] }}

[policy.P1]
approvers = ["discord-role:{APPROVERS}"]

[discord]
api_url = "{}"
guild_ids = ["{GUILD}"]
alert_channels = ["{ALERTS}"]
incident_channel = "{INCIDENTS}"
"#,
        fake.base
    )
}

impl Rig {
    async fn start(dir: &std::path::Path) -> Rig {
        Self::start_with(dir, None).await
    }

    async fn start_with(dir: &std::path::Path, public_key: Option<String>) -> Rig {
        let rig = Self::launch(FakeDiscord::start().await, dir, public_key).await;
        // Ready: the gateway session is up, /incident is registered in the guild, and the
        // alert channel's history was looked at (the session's backfill).
        rig.fake
            .wait("READY, /incident registered, history read", |f| {
                (f.connected() && f.commands(GUILD).is_some() && history_reads(f) > 0).then_some(())
            })
            .await;
        rig
    }

    /// Starts the app against `fake` without waiting for the gateway.
    async fn launch(fake: FakeDiscord, dir: &std::path::Path, public_key: Option<String>) -> Rig {
        let env = |k: &str| match k {
            "DISCORD_TOKEN" => Some(TOKEN.to_string()),
            "DISCORD_PUBLIC_KEY" => public_key.clone(),
            _ => None,
        };
        let mut cfg = Config::from_toml(&config(&fake), &env).expect("test config");
        cfg.store.path = dir.join("store");
        let surface = Arc::new(DiscordSurface::new(cfg.discord.as_ref().unwrap()));
        let deps = Deps {
            clock: Arc::new(SystemClock),
            surfaces: vec![surface],
            sinks: vec![],
            outbox: fast_outbox(),
            executor: Arc::new(PlaybookExecutor::new("kubectl")),
            store: None,
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let (tx, rx) = oneshot::channel::<()>();
        let handle = tokio::spawn(run(cfg, listener, deps, async move {
            let _ = rx.await;
        }));
        Rig {
            fake,
            base,
            http: reqwest::Client::new(),
            shutdown: Some(tx),
            handle: Some(handle),
        }
    }

    /// Signals shutdown and requires `run` to finish within 10 s whatever the gateway is
    /// doing (a bound on correctness: a healthy bot stops in well under a second).
    async fn stop_within_bound(mut self) {
        let _ = self.shutdown.take().unwrap().send(());
        let handle = self.handle.take().unwrap();
        match tokio::time::timeout(std::time::Duration::from_secs(10), handle).await {
            Ok(r) => r.unwrap().unwrap(),
            Err(_) => panic!("run did not finish within 10 s of the shutdown signal"),
        }
    }

    async fn stop(mut self) {
        let _ = self.shutdown.take().unwrap().send(());
        self.handle.take().unwrap().await.unwrap().unwrap();
    }

    async fn get(&self, path: &str) -> Value {
        let r = self
            .http
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        r.json().await.unwrap()
    }

    /// Waits (bounded) until the incident's timeline satisfies `pred`.
    async fn wait_timeline(&self, id: &str, pred: impl Fn(&[Value]) -> bool) -> Vec<Value> {
        let what = format!("the timeline of {id}");
        eventually(&what, || async {
            let v = self.get(&format!("/api/v1/incidents/{id}")).await;
            let t = v["timeline"].as_array().cloned().unwrap_or_default();
            pred(&t).then_some(t)
        })
        .await
    }
}

fn am_description_on(instance: &str, service: &str) -> String {
    format!(
        "\nAlerts Firing:\nLabels:\n - alertname = HighErrorRate\n - instance = {instance}\n - service = {service}\n - severity = critical\n\
         Annotations:\n - runbook_url = https://runbooks.example.com/HighErrorRate\n - summary = Error rate above 5%\n\
         Source: http://prometheus:9090/graph?g0.expr=rate%28http_requests_total%5B5m%5D%29&g0.tab=1\n\n"
    )
}

/// Alertmanager's `discord_configs` post for one firing alert on `instance`.
fn alert(fake: &FakeDiscord, instance: &str) -> u64 {
    alert_on(fake, instance, "api")
}

/// The same for another service: another group, so another incident (alerts of one alertname
/// and service are one incident whatever the instance).
fn alert_on(fake: &FakeDiscord, instance: &str, service: &str) -> u64 {
    fake.post_webhook_alert(
        ALERTS,
        &format!("[FIRING:1] HighErrorRate ({instance} {service} critical)"),
        &am_description_on(instance, service),
    )
}

fn bot_cards(msgs: &[Msg]) -> Vec<Msg> {
    msgs.iter()
        .filter(|m| {
            m.author["id"].as_str().and_then(|s| s.parse::<u64>().ok()) == Some(BOT_ID)
                && m.embeds.as_array().is_some_and(|e| !e.is_empty())
        })
        .cloned()
        .collect()
}

fn field(card: &Msg, name: &str) -> String {
    card.embeds[0]["fields"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["name"] == name)
        .map(|f| f["value"].as_str().unwrap().to_string())
        .unwrap_or_default()
}

fn custom_ids(card: &Msg) -> Vec<String> {
    card.components
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|r| r["components"].as_array().unwrap().clone())
        .map(|b| b["custom_id"].as_str().unwrap().to_string())
        .collect()
}

/// Waits for the card the bot posted in the thread started from `alert_msg`.
async fn card_in_thread(fake: &FakeDiscord, alert_msg: u64) -> Msg {
    fake.wait("the incident thread with its card", |f| {
        (f.threads().get(&alert_msg) == Some(&ALERTS))
            .then(|| bot_cards(&f.messages_in(alert_msg)).into_iter().next())
            .flatten()
    })
    .await
}

fn count(reqs: &[Req], method: &str, pred: impl Fn(&str) -> bool) -> usize {
    reqs.iter()
        .filter(|r| r.method == method && r.status == 200 && pred(&r.path))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_embed_alert_opens_one_thread_with_the_card_and_repeats_edit_it() {
    let dir = tempfile::tempdir().unwrap();
    let rig = Rig::start(dir.path()).await;
    let fake = &rig.fake;

    // /incident was registered with its subcommands within Discord's limits.
    let cmds = fake.commands(GUILD).unwrap();
    assert_eq!(cmds[0]["name"], "incident");
    let subs: Vec<&str> = cmds[0]["options"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["name"].as_str().unwrap())
        .collect();
    for s in [
        "help", "list", "status", "ack", "resolve", "approve", "reject", "note", "escalate",
        "reopen",
    ] {
        assert!(subs.contains(&s), "{s} missing from {subs:?}");
    }

    let a = alert(fake, "10.0.3.7:8080");
    let card = card_in_thread(fake, a).await;
    let e = &card.embeds[0];
    assert!(
        e["title"]
            .as_str()
            .unwrap()
            .starts_with("INC-1 · P1 — HighErrorRate"),
        "{e}"
    );
    assert_eq!(e["color"], 0xE74C3C);
    assert!(field(&card, "Status").contains("Open"));
    assert!(field(&card, "Alerts").starts_with("1×"));
    assert!(field(&card, "Links").contains("https://runbooks.example.com/HighErrorRate"));
    assert!(field(&card, "Recommended actions").contains("restart"));
    assert_eq!(
        custom_ids(&card),
        [
            "ack:INC-1",
            "approve:INC-1:restart",
            "reject:INC-1:restart",
            "preview:INC-1:restart",
            "escalate:INC-1",
            "resolve:INC-1"
        ]
    );

    // Alertmanager's repeat_interval: the same alert twice more → the card is edited in place.
    alert(fake, "10.0.3.7:8080");
    alert(fake, "10.0.3.7:8080");
    let edited = fake
        .wait("the card edited to 3 alerts", |f| {
            f.message(card.id)
                .filter(|m| field(m, "Alerts").starts_with("3×"))
        })
        .await;
    assert!(edited.edits >= 1);

    // A person's reply in the thread lands in the incident's timeline (thread → incident).
    fake.post_as_user(a, ALICE, "alice", "rolled back the canary by hand");
    rig.wait_timeline("INC-1", |t| {
        t.iter().any(|e| {
            e["kind"]["text"].as_str() == Some("rolled back the canary by hand")
                || e.to_string().contains("rolled back the canary by hand")
        })
    })
    .await;

    // Exactly one thread and one card; no more than the one thread start was ever asked for.
    let reqs = fake.requests();
    assert_eq!(fake.threads().len(), 1);
    assert_eq!(bot_cards(&fake.messages_in(a)).len(), 1);
    assert_eq!(count(&reqs, "POST", |p| p.ends_with("/threads")), 1);
    assert!(
        count(&reqs, "PATCH", |p| p
            .ends_with(&format!("/channels/{a}/messages/{}", card.id)))
            >= 1
    );
    // The bot saw its own messages echoed on the gateway and ignored them: no second incident.
    let list = rig.get("/api/v1/incidents").await;
    assert_eq!(list["incidents"].as_array().unwrap().len(), 1);
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_webhook_alert_gets_its_card_and_thread_in_the_incident_channel() {
    let dir = tempfile::tempdir().unwrap();
    let rig = Rig::start(dir.path()).await;
    let fake = &rig.fake;
    let body = alertmanager("firing", &[("HighErrorRate", "api", "critical", "firing")]);
    let r = rig
        .http
        .post(format!("{}/api/v1/alerts/alertmanager", rig.base))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // The card is a root message in the incident channel and the thread starts from it.
    let card = fake
        .wait("a card in the incident channel", |f| {
            bot_cards(&f.messages_in(INCIDENTS)).into_iter().next()
        })
        .await;
    fake.wait("the thread from the card", |f| {
        (f.threads().get(&card.id) == Some(&INCIDENTS)).then_some(())
    })
    .await;
    // The bot records the thread when Discord's answer arrives, a moment after the fake made
    // it; a person replies after seeing it, so the test waits for the delivery to be recorded.
    eventually("the card's delivery recorded", || async {
        let m = rig
            .http
            .get(format!("{}/metrics", rig.base))
            .send()
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        m.lines()
            .any(|l| l.starts_with("incidentd_outbox_depth ") && l.ends_with(" 0"))
            .then_some(())
    })
    .await;
    // Replies in that thread reach the timeline.
    fake.post_as_user(card.id, BOB, "bob", "looking into it");
    rig.wait_timeline("INC-1", |t| {
        t.iter().any(|e| e.to_string().contains("looking into it"))
    })
    .await;
    // Acknowledge by button: the card in the incident channel is edited and loses its button.
    // Acknowledging is for responders (the policy's approvers): Bob has the role.
    fake.click(card.id, "ack:INC-1", BOB, &[APPROVERS]);
    let acked = fake
        .wait("the card edited as acknowledged", |f| {
            f.message(card.id)
                .filter(|m| field(m, "Status").contains("Acknowledged"))
        })
        .await;
    assert!(!custom_ids(&acked).contains(&"ack:INC-1".to_string()));
    // The acknowledgement note went to the thread.
    fake.wait("the ack note in the thread", |f| {
        f.messages_in(card.id)
            .into_iter()
            .find(|m| m.content.contains("Acknowledged by user"))
    })
    .await;
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approver_role_click_approves_once_and_non_approver_is_refused_privately() {
    let dir = tempfile::tempdir().unwrap();
    let rig = Rig::start(dir.path()).await;
    let fake = &rig.fake;
    let a = alert(fake, "10.0.3.7:8080");
    let card = card_in_thread(fake, a).await;

    // Bob has no approver role: a deferred update, then a private refusal; nothing changes.
    let t = fake.click(card.id, "approve:INC-1:restart", BOB, &[]);
    let refusal = fake
        .wait("the refusal follow-up", |f| {
            f.interaction_requests(&t)
                .into_iter()
                .find(|r| r.method == "POST" && r.path.starts_with("/api/v10/webhooks/"))
        })
        .await;
    assert_eq!(
        refusal.body["flags"], 64,
        "refusals are ephemeral: {}",
        refusal.body
    );
    let reqs = fake.interaction_requests(&t);
    assert_eq!(reqs[0].body["type"], 6, "the click is deferred first");
    assert!(reqs[0].at <= refusal.at);

    // Alice has the approver role: approved, run once, card and thread show it.
    let t1 = fake.click(card.id, "approve:INC-1:restart", ALICE, &[APPROVERS]);
    let t2 = fake.click(card.id, "approve:INC-1:restart", ALICE, &[APPROVERS]);
    fake.wait("the action succeeded note", |f| {
        f.messages_in(a)
            .into_iter()
            .find(|m| m.content.contains("`restart` succeeded"))
    })
    .await;
    let done = fake
        .wait("the card showing the action done", |f| {
            f.message(card.id)
                .filter(|m| field(m, "Recommended actions").contains("succeeded"))
        })
        .await;
    assert!(!custom_ids(&done).iter().any(|c| c.starts_with("approve:")));
    for t in [&t1, &t2] {
        fake.wait("the approver's clicks deferred", |f| {
            f.interaction_requests(t)
                .into_iter()
                .find(|r| r.path.ends_with("/callback") && r.body["type"] == 6)
        })
        .await;
    }
    // Double click: one execution, one success note.
    let runs = fake
        .messages_in(a)
        .iter()
        .filter(|m| m.content.contains("`restart` succeeded"))
        .count();
    assert_eq!(runs, 1);
    let timeline = rig.get("/api/v1/incidents/INC-1").await["timeline"].clone();
    let refused = timeline
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e.to_string().contains(&BOB.to_string()))
        .count();
    assert!(refused >= 1, "the refusal is audited: {timeline:#}");
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incident_command_reads_privately_and_acts_publicly() {
    let dir = tempfile::tempdir().unwrap();
    let rig = Rig::start(dir.path()).await;
    let fake = &rig.fake;
    let a = alert(fake, "10.0.3.7:8080");
    let card = card_in_thread(fake, a).await;

    let answer = |t: String| async move {
        let reqs = fake
            .wait("the /incident answer", |f| {
                let r = f.interaction_requests(&t);
                r.iter()
                    .any(|r| {
                        r.method == "PATCH" || (r.method == "POST" && r.path.contains("/webhooks/"))
                    })
                    .then_some(r)
            })
            .await;
        let defer = reqs
            .iter()
            .find(|r| r.path.ends_with("/callback"))
            .unwrap()
            .clone();
        let last = reqs.last().unwrap().clone();
        (defer, last)
    };

    let (defer, list) = answer(fake.command(INCIDENTS, BOB, &[], "list", &[])).await;
    assert_eq!(defer.body["type"], 5);
    assert_eq!(defer.body["data"]["flags"], 64, "list is private");
    assert!(
        list.body["content"].as_str().unwrap().contains("INC-1"),
        "{}",
        list.body
    );

    let (defer, status) =
        answer(fake.command(INCIDENTS, BOB, &[], "status", &[("id", "INC-1")])).await;
    assert_eq!(defer.body["data"]["flags"], 64);
    let text = status.body["content"].as_str().unwrap();
    assert!(
        text.contains("INC-1") && text.contains("Status: Open"),
        "{text}"
    );

    let (_, missing) =
        answer(fake.command(INCIDENTS, BOB, &[], "status", &[("id", "INC-99")])).await;
    assert!(missing.body["content"]
        .as_str()
        .unwrap()
        .contains("does not exist"));

    // A state change is answered publicly, and the card follows.
    let (defer, ack) =
        answer(fake.command(INCIDENTS, BOB, &[APPROVERS], "ack", &[("id", "INC-1")])).await;
    assert_ne!(
        defer.body["data"]["flags"], 64,
        "ack is public: {}",
        defer.body
    );
    assert_eq!(ack.method, "PATCH");
    assert!(ack.body["content"]
        .as_str()
        .unwrap()
        .contains("INC-1 acknowledged"));
    fake.wait("the card acknowledged", |f| {
        f.message(card.id)
            .filter(|m| field(m, "Status").contains("Acknowledged"))
    })
    .await;

    // Refused mutation (Bob may not approve): the public placeholder goes, a private answer comes.
    let t = fake.command(
        INCIDENTS,
        BOB,
        &[],
        "approve",
        &[("id", "INC-1"), ("action", "restart")],
    );
    let (_, refusal) = answer(t.clone()).await;
    assert_eq!(refusal.method, "POST");
    assert_eq!(refusal.body["flags"], 64);
    assert!(fake
        .interaction_requests(&t)
        .iter()
        .any(|r| r.method == "DELETE"));
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_drop_resumes_without_losing_or_duplicating_events() {
    let dir = tempfile::tempdir().unwrap();
    let rig = Rig::start(dir.path()).await;
    let fake = &rig.fake;
    let a = alert(fake, "10.0.3.7:8080");
    card_in_thread(fake, a).await;
    // The session is alive: heartbeats are sent and acknowledged (op 1 → op 11).
    fake.wait("a heartbeat", |f| (f.heartbeats() >= 1).then_some(()))
        .await;

    // The network drops; while the bot is away, a new alert, a repeat and a reply happen.
    fake.drop_gateway();
    let b = alert_on(fake, "10.0.3.8:8080", "search");
    alert(fake, "10.0.3.7:8080");
    fake.post_as_user(a, ALICE, "alice", "paging the db team");

    fake.wait("a RESUME", |f| {
        (f.resumes() >= 1 && f.connected()).then_some(())
    })
    .await;
    card_in_thread(fake, b).await;
    let card_a = bot_cards(&fake.messages_in(a)).remove(0);
    fake.wait("the repeat counted", |f| {
        f.message(card_a.id)
            .filter(|m| field(m, "Alerts").starts_with("2×"))
    })
    .await;
    let t = rig
        .wait_timeline("INC-1", |t| {
            t.iter()
                .any(|e| e.to_string().contains("paging the db team"))
        })
        .await;
    assert_eq!(
        t.iter()
            .filter(|e| e.to_string().contains("paging the db team"))
            .count(),
        1,
        "the reply is in the timeline once"
    );
    assert_eq!(fake.identifies(), 1, "resumed, not re-identified");
    assert_eq!(fake.threads().len(), 2);
    assert_eq!(bot_cards(&fake.messages_in(a)).len(), 1);
    assert_eq!(bot_cards(&fake.messages_in(b)).len(), 1);
    let list = rig.get("/api/v1/incidents").await;
    assert_eq!(list["incidents"].as_array().unwrap().len(), 2);
    let inc1 = rig.get("/api/v1/incidents/INC-1").await;
    assert_eq!(
        inc1["incident"]["alert_count"], 2,
        "the repeat counted once"
    );
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limits_wait_for_retry_after_and_deliver_once() {
    let dir = tempfile::tempdir().unwrap();
    let rig = Rig::start(dir.path()).await;
    let fake = &rig.fake;
    fake.rate_limit_next(2, 0.3);
    let a = alert(fake, "10.0.3.7:8080");
    card_in_thread(fake, a).await;
    let reqs: Vec<Req> = fake
        .requests()
        .into_iter()
        .filter(|r| r.path.starts_with("/api/v10/channels/"))
        .collect();
    let limited: Vec<&Req> = reqs.iter().filter(|r| r.status == 429).collect();
    assert_eq!(limited.len(), 2);
    // Nothing was sent to Discord before retry_after had passed since the last 429.
    for w in reqs.windows(2) {
        if w[0].status == 429 {
            let gap = w[1].at.duration_since(w[0].at);
            assert!(
                gap >= std::time::Duration::from_millis(300),
                "retried after {gap:?}"
            );
        }
    }
    assert_eq!(fake.threads().len(), 1);
    assert_eq!(bot_cards(&fake.messages_in(a)).len(), 1);
    rig.stop().await;
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_interactions_endpoint_verifies_signatures_and_defers() {
    use ed25519_dalek::{Signer, SigningKey};
    let key = SigningKey::from_bytes(&[7u8; 32]);
    let forger = SigningKey::from_bytes(&[8u8; 32]);
    let dir = tempfile::tempdir().unwrap();
    let rig = Rig::start_with(dir.path(), Some(hex(&key.verifying_key().to_bytes()))).await;
    let fake = &rig.fake;
    let post = |k: &SigningKey, ts: String, body: String| {
        let sig = hex(&k
            .sign(&[ts.as_bytes(), body.as_bytes()].concat())
            .to_bytes());
        let req = rig
            .http
            .post(format!("{}/discord/interactions", rig.base))
            .header("content-type", "application/json")
            .header("x-signature-ed25519", sig)
            .header("x-signature-timestamp", ts)
            .body(body);
        async move {
            let r = req.send().await.unwrap();
            let status = r.status().as_u16();
            (status, r.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    let now = || chrono::Utc::now().timestamp().to_string();
    let ping = r#"{"type":1,"id":"1","application_id":"1","token":"t","version":1}"#.to_string();

    assert_eq!(
        post(&key, now(), ping.clone()).await,
        (200, serde_json::json!({ "type": 1 }))
    );
    assert_eq!(post(&forger, now(), ping.clone()).await.0, 401, "forged");
    let stale = (chrono::Utc::now().timestamp() - 600).to_string();
    assert_eq!(post(&key, stale, ping.clone()).await.0, 401, "stale");

    // A click by HTTP: deferred in the response, then the same handling as over the gateway.
    let a = alert(fake, "10.0.3.7:8080");
    let card = card_in_thread(fake, a).await;
    let (token, body) = fake.click_payload(card.id, "approve:INC-1:restart", BOB, &[]);
    let (status, answer) = post(&key, now(), body.to_string()).await;
    assert_eq!(
        (status, answer["type"].clone()),
        (200, serde_json::json!(6))
    );
    let refusal = fake
        .wait("the refusal follow-up", |f| {
            f.interaction_requests(&token)
                .into_iter()
                .find(|r| r.method == "POST" && r.path.starts_with("/api/v10/webhooks/"))
        })
        .await;
    assert_eq!(refusal.body["flags"], 64);
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alert_message_deleted_before_threading_falls_back_to_the_incident_channel() {
    let dir = tempfile::tempdir().unwrap();
    let rig = Rig::start(dir.path()).await;
    let fake = &rig.fake;
    // Hold the bot's first call back (429) while the alert message disappears.
    fake.rate_limit_next(1, 0.2);
    let a = alert(fake, "10.0.3.7:8080");
    fake.delete_message(a);
    let card = fake
        .wait("a card in the incident channel", |f| {
            bot_cards(&f.messages_in(INCIDENTS)).into_iter().next()
        })
        .await;
    fake.wait("the thread from the card", |f| {
        (f.threads().get(&card.id) == Some(&INCIDENTS)).then_some(())
    })
    .await;
    assert!(fake
        .requests()
        .iter()
        .any(|r| r.status == 404
            && r.path == format!("/api/v10/channels/{ALERTS}/messages/{a}/threads")));
    // Its card is edited where it lives.
    alert(fake, "10.0.3.7:8080");
    fake.wait("the card edited in the incident channel", |f| {
        f.message(card.id)
            .filter(|m| field(m, "Alerts").starts_with("2×"))
    })
    .await;
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_errors_are_retried_and_delivered_once() {
    let dir = tempfile::tempdir().unwrap();
    let rig = Rig::start(dir.path()).await;
    let fake = &rig.fake;
    fake.fail_next(3, 502);
    let a = alert(fake, "10.0.3.7:8080");
    card_in_thread(fake, a).await;
    let reqs = fake.requests();
    assert_eq!(reqs.iter().filter(|r| r.status == 502).count(), 3);
    assert_eq!(fake.threads().len(), 1);
    assert_eq!(bot_cards(&fake.messages_in(a)).len(), 1);
    rig.stop().await;
}

#[tokio::test]
async fn the_fake_rejects_what_discord_rejects() {
    let fake = FakeDiscord::start().await;
    let http = reqwest::Client::new();
    let post = |auth: &str, body: Value| {
        http.post(format!(
            "{}/api/v10/channels/{INCIDENTS}/messages",
            fake.base
        ))
        .header("authorization", auth.to_string())
        .json(&body)
        .send()
    };
    let bot = format!("Bot {TOKEN}");
    let r = post("Bot wrong", serde_json::json!({ "content": "hi" }))
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = post(&bot, serde_json::json!({ "content": "x".repeat(2001) }))
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(r.json::<Value>().await.unwrap()["code"], 50035);
    let big = serde_json::json!({ "embeds": [{ "title": "t", "description": "d".repeat(4000),
        "fields": [{ "name": "n", "value": "v".repeat(1024) }, { "name": "n", "value": "v".repeat(1024) }] }] });
    let r = post(&bot, big).await.unwrap();
    assert_eq!(r.status(), 400, "total embed text over 6000");
    let six_rows: Vec<Value> = (0..6)
        .map(|i| serde_json::json!({ "type": 1, "components": [{ "type": 2, "style": 1, "label": "b", "custom_id": format!("b{i}") }] }))
        .collect();
    let r = post(
        &bot,
        serde_json::json!({ "content": "c", "components": six_rows }),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 400, "more than 5 rows");
    let r = post(
        &bot,
        serde_json::json!({ "content": "ok", "nonce": "n1", "enforce_nonce": true }),
    )
    .await
    .unwrap();
    let first: Value = r.json().await.unwrap();
    let again: Value = post(
        &bot,
        serde_json::json!({ "content": "ok", "nonce": "n1", "enforce_nonce": true }),
    )
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    assert_eq!(first["id"], again["id"], "nonce dedupe");
    fake.rate_limit_next(1, 0.5);
    let r = post(&bot, serde_json::json!({ "content": "x" }))
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    assert_eq!(r.json::<Value>().await.unwrap()["retry_after"], 0.5);
}

/// Every `/incident` subcommand of the text language exists on Discord too; a long report
/// answers privately in several messages within Discord's limits; and the report posted into
/// the thread on resolution has each part exactly once, in order, although Discord stored two
/// created messages whose answers were lost (the retry reuses each part's nonce).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_reports_stay_within_discord_limits_and_lost_answers_do_not_double_parts() {
    let dir = tempfile::tempdir().unwrap();
    let rig = Rig::start(dir.path()).await;
    let fake = &rig.fake;
    let a = alert(fake, "10.0.9.9:8080");
    card_in_thread(fake, a).await;
    // Forty long follow-ups (open to everyone), some owners given without the `@`.
    for i in 0..40 {
        let owner = format!("owner{i}");
        let text = format!("item {i:02} {}", "w".repeat(900));
        fake.command(
            INCIDENTS,
            BOB,
            &[],
            "followup",
            &[("id", "INC-1"), ("text", &text), ("owner", &owner)],
        );
    }
    let timeline = rig
        .wait_timeline("INC-1", |t| {
            t.iter().filter(|e| e["type"] == "follow_up_added").count() == 40
        })
        .await;
    // Commands run concurrently, so in any order; each owner option became its item's owner.
    let mut owners: Vec<&str> = timeline
        .iter()
        .filter(|e| e["type"] == "follow_up_added")
        .map(|e| e["owner"].as_str().unwrap_or(""))
        .collect();
    owners.sort_unstable();
    let mut want: Vec<String> = (0..40).map(|i| format!("@owner{i}")).collect();
    want.sort_unstable();
    assert_eq!(owners, want);

    // `/incident report` answers privately, in at most five messages of at most 2000 chars.
    let token = fake.command(INCIDENTS, BOB, &[], "report", &[("id", "INC-1")]);
    let answers = fake
        .wait("the whole report answer", |f| {
            let reqs: Vec<Req> = f
                .interaction_requests(&token)
                .into_iter()
                .filter(|r| r.path.contains("/webhooks/"))
                .collect();
            reqs.iter()
                .any(|r| {
                    r.body["content"]
                        .as_str()
                        .is_some_and(|c| c.ends_with("longer than Discord shows in one answer)"))
                })
                .then_some(reqs)
        })
        .await;
    assert_eq!(answers.len(), 5, "one edit and four follow-ups");
    assert!(
        answers.iter().all(|r| r.status == 200),
        "within Discord's limits"
    );
    assert_eq!(answers[0].method, "PATCH");
    assert!(answers[1..]
        .iter()
        .all(|r| r.method == "POST" && r.body["flags"] == 64));
    let text: String = answers
        .iter()
        .map(|r| r.body["content"].as_str().unwrap().to_string())
        .collect();
    // The follow-ups were added concurrently, so which ones fit before the cut varies.
    assert!(
        text.contains("# Post-incident report: INC-1") && text.contains("## Improvements"),
        "{text}"
    );
    assert!(text.contains("item ") && text.contains("@owner"), "{text}");

    // Resolution, once the forty notes are out: Discord stores the next two created messages
    // (the resolution's first messages) but loses the answers.
    fake.wait("the forty follow-up notes in the thread", |f| {
        (f.messages_in(a)
            .iter()
            .filter(|m| m.content.contains("item "))
            .count()
            == 40)
            .then_some(())
    })
    .await;
    fake.lose_answers(2);
    fake.command(
        INCIDENTS,
        ALICE,
        &[APPROVERS],
        "resolve",
        &[("id", "INC-1"), ("note", "fixed upstream")],
    );
    let footer = |m: &Msg| {
        m.embeds[0]["footer"]["text"]
            .as_str()
            .unwrap_or("")
            .to_string()
    };
    let part_of = |m: &Msg| -> Option<(usize, usize)> {
        let f = footer(m);
        // "incidentd · post-incident report · part 2 of 3 · Markdown: …"
        let rest = f.split(" · part ").nth(1)?;
        let (i, rest) = rest.split_once(" of ")?;
        let n: String = rest.chars().take_while(char::is_ascii_digit).collect();
        Some((i.parse().ok()?, n.parse().ok()?))
    };
    let parts = fake
        .wait("the report's last part in the thread", |f| {
            let parts: Vec<Msg> = bot_cards(&f.messages_in(a))
                .into_iter()
                .filter(|m| part_of(m).is_some())
                .collect();
            parts
                .iter()
                .any(|m| part_of(m).is_some_and(|(i, n)| i == n))
                .then_some(parts)
        })
        .await;
    let lost: Vec<Req> = fake
        .requests()
        .into_iter()
        .filter(|r| r.method == "POST" && r.path.ends_with("/messages") && r.status == 500)
        .collect();
    assert_eq!(lost.len(), 2, "the answers really were lost");
    assert!(
        lost.iter().any(|r| r.body["embeds"][0]["footer"]["text"]
            .as_str()
            .is_some_and(|f| f.contains(" · part "))),
        "a report part's answer was among them: {:?}",
        lost.iter().map(|r| &r.body["content"]).collect::<Vec<_>>()
    );
    let n = parts.len();
    assert!(n > 1, "a long report needs several messages");
    for (i, m) in parts.iter().enumerate() {
        assert_eq!(
            part_of(m),
            Some((i + 1, n)),
            "every part in its place, once"
        );
    }
    // Nothing else was doubled either: one resolution note.
    let notes = fake
        .messages_in(a)
        .iter()
        .filter(|m| m.content.contains("fixed upstream"))
        .count();
    assert!(notes <= 1, "{notes} resolution notes");
    rig.stop().await;
}

/// The answer (the edit of the deferred response) to the `/incident` with this token.
async fn command_answer(fake: &FakeDiscord, token: String) -> Req {
    fake.wait("the /incident answer", |f| {
        let r = f.interaction_requests(&token);
        r.iter()
            .find(|r| r.method == "PATCH" || (r.method == "POST" && r.path.contains("/webhooks/")))
            .cloned()
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn people_chatter_opens_nothing_but_a_mention_does() {
    let dir = tempfile::tempdir().unwrap();
    let rig = Rig::start(dir.path()).await;
    let fake = &rig.fake;
    let chatter = fake.post_as_user(
        ALERTS,
        ALICE,
        "alice",
        "anyone around? checkout looks slow to me",
    );
    // Handled (events are handled concurrently, so wait for it) and ignored: nothing opened.
    eventually("the chatter counted as ignored", || async {
        let m = rig
            .http
            .get(format!("{}/metrics", rig.base))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        m.contains("incidentd_chat_messages_ignored_total{platform=\"discord\"} 1")
            .then_some(())
    })
    .await;
    let list = rig.get("/api/v1/incidents?status=all").await;
    assert_eq!(list["incidents"], serde_json::json!([]), "{list}");
    // Asked by name: exactly one incident.
    let asked = fake.post_as_user(ALERTS, BOB, "bob", &format!("<@{BOT_ID}> checkout is down"));
    let card = card_in_thread(fake, asked).await;
    assert!(
        card.embeds[0]["title"]
            .as_str()
            .unwrap()
            .starts_with("INC-1 · P"),
        "{}",
        card.embeds[0]
    );
    let list = rig.get("/api/v1/incidents?status=all").await;
    let incidents = list["incidents"].as_array().unwrap();
    assert_eq!(incidents.len(), 1, "{list}");
    assert_eq!(incidents[0]["title"], "checkout is down");
    assert_eq!(incidents[0]["origin"]["message_id"], asked.to_string());
    assert_eq!(
        incidents[0]["annotations"]["reported_by"],
        format!("discord:{BOB}")
    );
    // The chatter got no thread, and the bot wrote nothing in the alert channel itself.
    assert!(!fake.threads().contains_key(&chatter));
    assert!(fake.requests().iter().all(
        |r| !(r.method == "POST" && r.path.ends_with(&format!("/channels/{ALERTS}/messages")))
    ));
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incident_new_opens_one_incident() {
    let dir = tempfile::tempdir().unwrap();
    let rig = Rig::start(dir.path()).await;
    let fake = &rig.fake;
    let cmds = fake.commands(GUILD).unwrap();
    let new = cmds[0]["options"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["name"] == "new")
        .expect("/incident new is registered")
        .clone();
    assert_eq!(new["options"][0]["name"], "title");
    assert_eq!(new["options"][0]["required"], true);

    let token = fake.command(INCIDENTS, BOB, &[], "new", &[("title", "Checkout slow")]);
    let answer = command_answer(fake, token).await;
    assert!(
        answer.body["content"].as_str().unwrap().contains("INC-1"),
        "{}",
        answer.body
    );
    let card = fake
        .wait("a card in the incident channel", |f| {
            bot_cards(&f.messages_in(INCIDENTS)).into_iter().next()
        })
        .await;
    assert!(
        card.embeds[0]["title"]
            .as_str()
            .unwrap()
            .contains("Checkout slow"),
        "{}",
        card.embeds[0]
    );
    let list = rig.get("/api/v1/incidents?status=all").await;
    let incidents = list["incidents"].as_array().unwrap();
    assert_eq!(incidents.len(), 1, "{list}");
    assert_eq!(
        incidents[0]["annotations"]["reported_by"],
        format!("discord:{BOB}")
    );
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_completes_when_the_gateway_is_healthy() {
    let dir = tempfile::tempdir().unwrap();
    let rig = Rig::start(dir.path()).await;
    assert_eq!(rig.readyz().await, (200, "ready".to_string()));
    assert!(rig
        .metrics_text()
        .await
        .contains("incidentd_chat_connected{platform=\"discord\"} 1\n"));
    rig.stop_within_bound().await;
}

impl Rig {
    /// `/readyz` status and body.
    async fn readyz(&self) -> (u16, String) {
        let r = self
            .http
            .get(format!("{}/readyz", self.base))
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    }

    async fn metrics_text(&self) -> String {
        let r = self.http.get(format!("{}/metrics", self.base)).send();
        r.await.unwrap().text().await.unwrap()
    }
}

/// The gateway closed with `code` on IDENTIFY: serenity gives up. The app says why (not
/// ready, with the fix), exposes the gauge, and still stops.
async fn gateway_refused_with(code: u16, fix: &str) {
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeDiscord::start().await;
    fake.close_identify_with(code);
    let rig = Rig::launch(fake, dir.path(), None).await;
    let body = eventually("/readyz reports the refused gateway", || async {
        let (status, body) = rig.readyz().await;
        (status == 503).then_some(body)
    })
    .await;
    assert!(body.starts_with("discord connection down since "), "{body}");
    assert!(body.contains(fix), "{body}");
    assert!(rig
        .metrics_text()
        .await
        .contains("incidentd_chat_connected{platform=\"discord\"} 0\n"));
    rig.stop_within_bound().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_4014_is_not_ready_names_the_intent_fix_and_still_stops() {
    gateway_refused_with(
        4014,
        "enable the Message Content intent for the bot in the Discord Developer Portal → your app → Bot → Privileged Gateway Intents",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_4004_is_not_ready_names_the_token_fix_and_still_stops() {
    gateway_refused_with(4004, "the bot token is wrong; set DISCORD_TOKEN").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_completes_after_an_invalid_session_restarts_the_shard() {
    let dir = tempfile::tempdir().unwrap();
    let rig = Rig::start(dir.path()).await;
    rig.fake.invalidate_session();
    // serenity restarts its shard and identifies again.
    rig.fake
        .wait("a second IDENTIFY after op 9", |f| {
            (f.identifies() >= 2 && f.connected()).then_some(())
        })
        .await;
    rig.stop_within_bound().await;
}

/// Every message, interaction response and follow-up the bot sent that carries text: its
/// `allowed_mentions` must exist and parse nothing (`everyone`, `roles`, `users`).
fn assert_no_ping_can_happen(fake: &FakeDiscord) {
    let mut checked = 0;
    for r in fake.requests() {
        if !matches!(r.method.as_str(), "POST" | "PATCH") {
            continue;
        }
        // An interaction response keeps its message in `data`.
        let msg = if r.path.ends_with("/callback") {
            &r.body["data"]
        } else {
            &r.body
        };
        let has_text = msg.get("content").is_some() || msg.get("embeds").is_some();
        let is_message_defer = r.path.ends_with("/callback") && r.body["type"] == 5;
        if !has_text && !is_message_defer {
            continue;
        }
        checked += 1;
        let am = &msg["allowed_mentions"];
        assert!(
            am.is_object(),
            "{} {} has no allowed_mentions: {}",
            r.method,
            r.path,
            r.body
        );
        let parse = am["parse"].as_array().cloned().unwrap_or_default();
        for p in ["everyone", "roles", "users"] {
            assert!(
                !parse.contains(&serde_json::json!(p)),
                "{} {} parses {p}: {}",
                r.method,
                r.path,
                r.body
            );
        }
    }
    assert!(checked > 10, "only {checked} payloads checked");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echoed_text_and_alert_fields_never_ping() {
    let dir = tempfile::tempdir().unwrap();
    let rig = Rig::start(dir.path()).await;
    let fake = &rig.fake;
    let evil = format!("@everyone @here <!channel> <@&{APPROVERS}> <@{ALICE}>");
    // An alert whose title, description and labels carry mentions.
    let a = fake.post_webhook_alert(
        ALERTS,
        &format!("[FIRING:1] HighErrorRate {evil}"),
        &format!(
            "\nAlerts Firing:\nLabels:\n - alertname = HighErrorRate\n - team = {evil}\n - severity = critical\n\
             Annotations:\n - summary = {evil}\n"
        ),
    );
    card_in_thread(fake, a).await;
    let approver = &[APPROVERS];
    let role = format!("<@&{APPROVERS}>");
    let cmds: Vec<(&str, Vec<(&str, &str)>)> = vec![
        ("assign", vec![("id", "INC-1"), ("owner", "@everyone")]),
        ("assign", vec![("id", "INC-1"), ("owner", &evil)]),
        ("assign", vec![("id", "INC-1"), ("owner", &role)]),
        ("note", vec![("id", "INC-1"), ("text", &evil)]),
        (
            "rootcause",
            vec![
                ("id", "INC-1"),
                ("category", "configuration"),
                ("text", &evil),
            ],
        ),
        (
            "followup",
            vec![("id", "INC-1"), ("text", &evil), ("owner", "@here")],
        ),
        ("resolve", vec![("id", "INC-1"), ("note", &evil)]),
        ("new", vec![("title", &evil)]),
    ];
    for (sub, opts) in &cmds {
        let token = fake.command(INCIDENTS, BOB, approver, sub, opts);
        let answer = command_answer(fake, token).await;
        let text = answer.body["content"].as_str().unwrap_or("");
        // A role mention stays a role mention, not `@<@&…>`.
        assert!(!text.contains("@<@"), "{sub}: {text}");
    }
    // The new incident's card.
    fake.wait("the card of INC-2", |f| {
        f.requests()
            .iter()
            .any(|r| {
                r.body["embeds"][0]["title"]
                    .as_str()
                    .is_some_and(|t| t.starts_with("INC-2"))
            })
            .then_some(())
    })
    .await;
    assert_no_ping_can_happen(fake);
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn help_and_stats_use_discord_bold() {
    let dir = tempfile::tempdir().unwrap();
    let rig = Rig::start(dir.path()).await;
    let fake = &rig.fake;
    for (sub, bold) in [
        ("help", "**/incident** commands:"),
        ("stats", "**Incident stats, last 7 days**"),
    ] {
        let answer = command_answer(fake, fake.command(INCIDENTS, BOB, &[], sub, &[])).await;
        let text = answer.body["content"].as_str().unwrap();
        assert!(text.starts_with(bold), "{sub}: {text}");
    }
    rig.stop().await;
}

/// Every incident (any status): (service label, alert count).
async fn incident_counts(rig: &Rig) -> Vec<(String, u64)> {
    let v = rig.get("/api/v1/incidents?status=all").await;
    let mut out: Vec<(String, u64)> = v["incidents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            (
                i["labels"]["service"].as_str().unwrap_or("").to_string(),
                i["alert_count"].as_u64().unwrap(),
            )
        })
        .collect();
    out.sort();
    out
}

fn history_reads(fake: &FakeDiscord) -> usize {
    fake.requests()
        .iter()
        .filter(|r| {
            r.method == "GET"
                && r.path.ends_with(&format!("/channels/{ALERTS}/messages"))
                && r.status == 200
        })
        .count()
}

/// Issue 14, item 7: an alert posted while the gateway identifies again after op 9 (no session
/// to deliver it to) is read back from the alert channel's history after the new READY, once.
/// A second fresh session reads nothing twice; after a restart, the stored bookmark brings
/// back only what was posted while incidentd was down.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_posted_before_a_new_ready_are_read_back_from_history_once() {
    let dir = tempfile::tempdir().unwrap();
    let rig = Rig::start(dir.path()).await;
    alert_on(&rig.fake, "a-1", "api");
    eventually("the live alert's incident", || async {
        (incident_counts(&rig).await == [("api".to_string(), 1)]).then_some(())
    })
    .await;

    rig.fake.invalidate_session();
    let missed = alert_on(&rig.fake, "b-1", "billing");
    assert_eq!(
        rig.fake.dispatched_at(missed),
        None,
        "no session: the gateway did not deliver it"
    );
    eventually("the missed alert read back after the new READY", || async {
        (rig.fake.identifies() >= 2
            && incident_counts(&rig).await == [("api".to_string(), 1), ("billing".to_string(), 1)])
        .then_some(())
    })
    .await;

    // Another fresh session: the history after the bookmark is empty; nothing counts twice.
    let reads = history_reads(&rig.fake);
    rig.fake.invalidate_session();
    rig.fake
        .wait("a third session's history read", |f| {
            (f.identifies() >= 3 && history_reads(f) > reads).then_some(())
        })
        .await;
    assert_eq!(
        incident_counts(&rig).await,
        [("api".to_string(), 1), ("billing".to_string(), 1)]
    );
    let fake = rig.fake.clone();
    rig.stop().await;

    // Posted while incidentd is down; the bookmark was stored.
    alert_on(&fake, "c-1", "checkout");
    let rig = Rig::launch(fake, dir.path(), None).await;
    eventually(
        "the alert posted while down, read back after the restart",
        || async {
            (incident_counts(&rig).await
                == [
                    ("api".to_string(), 1),
                    ("billing".to_string(), 1),
                    ("checkout".to_string(), 1),
                ])
            .then_some(())
        },
    )
    .await;
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn followups_are_set_by_subcommands_and_the_reports_buttons() {
    let dir = tempfile::tempdir().unwrap();
    let rig = Rig::start(dir.path()).await;
    let fake = &rig.fake;
    let a = alert(fake, "10.0.3.7:8080");
    card_in_thread(fake, a).await;
    let text = |r: &Req| r.body["content"].as_str().unwrap_or_default().to_string();

    // Anyone may add one: type and owner are options; the owner is a mention.
    let owner = format!("<@{BOB}>");
    let t = fake.command(
        INCIDENTS,
        BOB,
        &[],
        "followup",
        &[
            ("id", "INC-1"),
            ("text", "add an error-budget alert"),
            ("owner", owner.as_str()),
            ("type", "process"),
        ],
    );
    assert!(text(&command_answer(fake, t).await).contains("Follow-up added to INC-1"));
    let t = fake.command(INCIDENTS, ALICE, &[], "followup-list", &[("id", "INC-1")]);
    let list = command_answer(fake, t).await;
    assert_eq!(list.body["flags"], 64, "listing is private: {}", list.body);
    assert!(
        text(&list).contains("#1 add an error-budget alert")
            && text(&list).contains("(process, open, due"),
        "{}",
        list.body
    );
    // Resolving posts the report, its last message with the follow-ups' buttons.
    let t = fake.command(
        INCIDENTS,
        ALICE,
        &[APPROVERS],
        "resolve",
        &[("id", "INC-1")],
    );
    assert!(text(&command_answer(fake, t).await).contains("INC-1 resolved"));
    let report = fake
        .wait("the report with buttons", |f| {
            f.messages_in(a).into_iter().find(|m| {
                m.components.as_array().is_some_and(|c| !c.is_empty())
                    && custom_ids(m).iter().any(|c| c == "fu-add:INC-1")
            })
        })
        .await;
    assert_eq!(custom_ids(&report), ["fu-add:INC-1", "fu-done:INC-1:1"]);
    assert!(
        report.embeds.to_string().contains("Improvements"),
        "{}",
        report.embeds
    );
    // "Add follow-up" answers privately with how.
    let t = fake.click(report.id, "fu-add:INC-1", ALICE, &[]);
    let hint = fake
        .wait("the add hint", |f| {
            f.interaction_requests(&t)
                .into_iter()
                .find(|r| r.method == "POST" && r.path.starts_with("/api/v10/webhooks/"))
        })
        .await;
    assert_eq!(hint.body["flags"], 64);
    assert!(
        text(&hint).contains("/incident followup add INC-1"),
        "{}",
        hint.body
    );
    // "Done" by neither owner nor responder: refused privately.
    let t = fake.click(report.id, "fu-done:INC-1:1", ALICE, &[]);
    let refusal = fake
        .wait("the refusal", |f| {
            f.interaction_requests(&t)
                .into_iter()
                .find(|r| r.method == "POST" && r.path.starts_with("/api/v10/webhooks/"))
        })
        .await;
    assert!(
        text(&refusal).contains("not a responder"),
        "{}",
        refusal.body
    );
    // By its owner: done, noted in the thread without pinging anyone.
    fake.click(report.id, "fu-done:INC-1:1", BOB, &[]);
    let note = fake
        .wait("the done note", |f| {
            f.messages_in(a)
                .into_iter()
                .find(|m| m.content.contains("Follow-up #1 of INC-1 done by"))
        })
        .await;
    assert!(
        note.content.contains("followup verify INC-1 1"),
        "{}",
        note.content
    );
    // Verifying takes a responder.
    let t = fake.command(
        INCIDENTS,
        BOB,
        &[],
        "followup-verify",
        &[("id", "INC-1"), ("number", "1")],
    );
    assert!(text(&command_answer(fake, t).await).contains("not a responder"));
    let t = fake.command(
        INCIDENTS,
        ALICE,
        &[APPROVERS],
        "followup-verify",
        &[("id", "INC-1"), ("number", "1")],
    );
    assert!(text(&command_answer(fake, t).await).contains("Follow-up #1 of INC-1 is verified"));
    let t = fake.command(INCIDENTS, BOB, &[], "followups", &[("which", "overdue")]);
    assert!(text(&command_answer(fake, t).await).contains("No overdue follow-ups"));
    rig.stop().await;
}
