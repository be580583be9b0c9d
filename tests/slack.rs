//! The Slack surface end to end: the real app with slack-morphism's client talking to a fake
//! Slack over real sockets (Web API over HTTP, Socket Mode over WebSocket, signed Events API
//! requests into the app). Tests wait on conditions with bounded timeouts, never on sleeps.

#[path = "support/fake_slack.rs"]
mod fake_slack;
mod support;

use fake_slack::*;
use incidentd::app::{run, Deps};
use incidentd::config::Config;
use serde_json::{json, Value};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

const CFG: &str = r#"
[engine]
card_coalesce_seconds = 1

[[playbooks]]
id = "orch"
title = "Orchestration"
kinds = ["orchestration_failure"]
[[playbooks.actions]]
id = "restart"
title = "Restart agent"
run = { type = "command", argv = ["/bin/true"] }
"#;

const POLICY: &str = "[policy.P1]\napprovers = [\"slack:UAPPROVER\"]\n";

struct Rig {
    fake: FakeSlack,
    base: String,
    http: reqwest::Client,
    shutdown: Option<oneshot::Sender<()>>,
    handle: Option<JoinHandle<anyhow::Result<()>>>,
    _dir: tempfile::TempDir,
}

impl Rig {
    async fn start(mode: &str) -> Rig {
        Rig::launch(
            mode,
            FakeSlack::start().await,
            tempfile::tempdir().unwrap(),
            POLICY,
        )
        .await
    }

    /// The app on `dir`'s store against `fake` (a restart reuses both).
    async fn launch(mode: &str, fake: FakeSlack, dir: tempfile::TempDir, policy: &str) -> Rig {
        Rig::launch_with(mode, fake, dir, policy, true, BOT_TOKEN).await
    }

    /// `paced`: the bot's own chat.postMessage pacing (off only to measure latency).
    /// `bot_token`: another than the fake's is refused, and the socket is then not awaited.
    async fn launch_with(
        mode: &str,
        fake: FakeSlack,
        dir: tempfile::TempDir,
        policy: &str,
        paced: bool,
        bot_token: &str,
    ) -> Rig {
        let connected = fake.connections();
        let text = format!(
            "{CFG}\n{policy}\n[slack]\nmode = \"{mode}\"\napi_url = \"{}\"\nalert_channels = [\"{ALERTS}\", \"{INCIDENTS}\"]\nincident_channel = \"{INCIDENTS}\"\n",
            fake.api_url
        );
        let env = |k: &str| match k {
            "SLACK_BOT_TOKEN" => Some(bot_token.to_string()),
            "SLACK_APP_TOKEN" => Some(APP_TOKEN.to_string()),
            "SLACK_SIGNING_SECRET" => Some(SIGNING_SECRET.to_string()),
            _ => None,
        };
        let mut cfg = Config::from_toml(&text, &env).expect("test config");
        cfg.store.path = dir.path().join("store");
        // The production wiring, minus the console sink, with a quick outbox retry.
        let mut deps = Deps::from_config(&cfg).expect("deps");
        deps.surfaces
            .retain(|s| s.platform() == incidentd::domain::alert::Platform::Slack);
        assert_eq!(deps.surfaces.len(), 1, "[slack] enables the Slack surface");
        deps.sinks.clear();
        deps.outbox = support::fast_outbox();
        if !paced {
            deps.surfaces = vec![std::sync::Arc::new(
                incidentd::chat::slack::SlackSurface::new(cfg.slack.as_ref().unwrap(), false)
                    .with_post_pace(None),
            )];
        }
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        if mode == "http" {
            fake.use_http(&base);
        }
        let (tx, rx) = oneshot::channel::<()>();
        let handle = tokio::spawn(run(cfg, listener, deps, async move {
            let _ = rx.await;
        }));
        if mode == "socket" && bot_token == BOT_TOKEN {
            fake.wait_connected(connected + 1).await;
        }
        Rig {
            fake,
            base,
            http: reqwest::Client::new(),
            shutdown: Some(tx),
            handle: Some(handle),
            _dir: dir,
        }
    }

    async fn get(&self, path: &str) -> Value {
        let r = self
            .http
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{path}");
        r.json().await.unwrap()
    }

    async fn incidents(&self) -> Vec<Value> {
        self.get("/api/v1/incidents?status=all").await["incidents"]
            .as_array()
            .unwrap()
            .clone()
    }

    async fn stop(self) {
        self.stop_keep().await;
    }

    /// Stops the app, keeping the fake and the store for a restart.
    async fn stop_keep(mut self) -> (FakeSlack, tempfile::TempDir) {
        self.shutdown.take().unwrap().send(()).unwrap();
        self.handle.take().unwrap().await.unwrap().unwrap();
        (self.fake, self._dir)
    }

    /// Alertmanager posts the AgentDeadlock alert (P1, orchestration failure) into #alerts.
    fn alert(&self, firing: bool) -> String {
        self.fake.post_bot_message(
            ALERTS,
            "Alertmanager",
            am_attachments("AgentDeadlock", "planner", "critical", firing),
        )
    }

    /// Waits for the card threaded under `alert_ts` and returns it.
    async fn card_under(&self, alert_ts: &str) -> FakeMessage {
        let ts = alert_ts.to_string();
        self.fake
            .wait("the card in the alert's thread", |f| {
                f.cards()
                    .iter()
                    .any(|c| c.thread_ts.as_deref() == Some(&ts))
            })
            .await;
        self.fake
            .cards()
            .into_iter()
            .find(|c| c.thread_ts.as_deref() == Some(alert_ts))
            .unwrap()
    }
}

fn card_text(c: &FakeMessage) -> String {
    serde_json::to_string(&c.blocks).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alert_message_opens_one_thread_and_repeats_edit_the_card() {
    let rig = Rig::start("socket").await;
    let first = rig.alert(true);
    let card = rig.card_under(&first).await;
    let text = card_text(&card);
    assert!(text.contains("INC-1 P1"), "{text}");
    assert!(text.contains("Orchestration failure"), "{text}");
    assert!(text.contains("Restart agent"), "{text}");
    assert!(
        text.contains("\"action_id\":\"approve:INC-1:restart\""),
        "{text}"
    );
    assert!(text.contains("\"action_id\":\"ack:INC-1\""), "{text}");
    assert_eq!(card.channel, ALERTS);
    // The idempotency key travels in the message metadata.
    assert_eq!(card.metadata["event_type"], "incidentd");
    assert!(card.metadata["event_payload"]["key"]
        .as_str()
        .unwrap()
        .starts_with("incidentd:slack:"));

    // Alertmanager repeats the alert: the card is edited, no second thread, no new card.
    rig.alert(true);
    rig.alert(true);
    let ts = card.ts.clone();
    rig.fake
        .wait("the card edited to three alerts", |f| {
            f.messages()
                .iter()
                .any(|m| m.ts == ts && card_text(m).contains("seen 3×"))
        })
        .await;
    assert_eq!(rig.fake.cards().len(), 1, "one card");
    assert!(rig
        .fake
        .calls_of("chat.update")
        .iter()
        .all(|c| c.body["ts"] == card.ts.as_str() && c.error.is_none()));
    // The same alert outside the alert channels is just chatter.
    rig.fake.post_bot_message(
        RANDOM,
        "Alertmanager",
        am_attachments("DiskFull", "db", "critical", true),
    );
    rig.fake
        .wait("every envelope acked", |f| {
            f.envelopes().iter().all(|e| e.ack.is_some())
        })
        .await;
    let incidents = rig.incidents().await;
    assert_eq!(incidents.len(), 1, "the bot's own messages are not alerts");
    assert_eq!(incidents[0]["alert_count"], 3);

    // Every envelope (including the echoes of the bot's own posts) was acknowledged once handled.
    rig.fake
        .wait("every envelope acked", |f| {
            f.envelopes().iter().all(|e| e.ack.is_some())
        })
        .await;
    // The bot authenticated with the bot token; the socket with the app token.
    assert!(rig
        .fake
        .calls_of("auth.test")
        .iter()
        .all(|c| c.error.is_none()));
    assert!(!rig.fake.calls_of("apps.connections.open").is_empty());
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approver_click_runs_the_approval_path_and_others_are_refused_privately() {
    let rig = Rig::start("socket").await;
    let alert = rig.alert(true);
    let card = rig.card_under(&alert).await;

    // Someone who is not an approver: refused, privately, and on the timeline.
    let click = rig.fake.click("UEVE", &card, "approve:INC-1:restart");
    rig.fake
        .wait("the refusal", |f| {
            f.ephemerals().iter().any(|e| e["user"] == "UEVE")
        })
        .await;
    let refusal = rig
        .fake
        .ephemerals()
        .into_iter()
        .find(|e| e["user"] == "UEVE")
        .unwrap();
    assert!(
        refusal["text"]
            .as_str()
            .unwrap()
            .contains("not an authorized approver"),
        "{refusal}"
    );
    assert_eq!(refusal["channel"], ALERTS);
    assert_eq!(refusal["thread_ts"], alert.as_str());
    rig.fake
        .wait("the click's ack", |f| {
            f.envelopes()
                .iter()
                .any(|e| e.id == click && e.ack.is_some())
        })
        .await;
    let detail = rig.get("/api/v1/incidents/INC-1").await;
    assert!(
        detail["timeline"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["type"] == "approval_refused"),
        "{detail}"
    );
    assert!(detail["executions"].as_array().unwrap().is_empty());

    // The approver: approval recorded, execution queued and run, notes in the thread.
    rig.fake.click("UAPPROVER", &card, "approve:INC-1:restart");
    let a = alert.clone();
    rig.fake
        .wait("the approval note", |f| {
            f.messages().iter().any(|m| {
                m.thread_ts.as_deref() == Some(&a) && m.text.contains("approved `restart`")
            })
        })
        .await;
    let exec = eventually("the execution to finish", || async {
        let d = rig.get("/api/v1/incidents/INC-1").await;
        let x = d["executions"].as_array()?.first()?.clone();
        (x["status"] == "succeeded").then_some(x)
    })
    .await;
    assert_eq!(exec["action"], "restart");
    rig.fake
        .wait("the approver's answer", |f| {
            f.ephemerals().iter().any(|e| e["user"] == "UAPPROVER")
        })
        .await;
    // A double click does not run it twice.
    rig.fake.click("UAPPROVER", &card, "approve:INC-1:restart");
    rig.fake
        .wait("the double click's answer", |f| {
            f.ephemerals()
                .iter()
                .filter(|e| e["user"] == "UAPPROVER")
                .count()
                == 2
        })
        .await;
    let d = rig.get("/api/v1/incidents/INC-1").await;
    assert_eq!(d["executions"].as_array().unwrap().len(), 1);
    // The decided action's buttons disappear from the card.
    let ts = card.ts.clone();
    rig.fake
        .wait("the card without approve buttons", |f| {
            f.messages()
                .iter()
                .any(|m| m.ts == ts && m.edits > 0 && !card_text(m).contains("approve:INC-1"))
        })
        .await;
    // A human's words in the thread land on the timeline.
    rig.fake
        .post_user_message(ALERTS, "UBOB", "deploy 42 looks bad", Some(&alert));
    eventually("the thread note on the timeline", || async {
        let d = rig.get("/api/v1/incidents/INC-1").await;
        d["timeline"]
            .as_array()?
            .iter()
            .any(|e| {
                e["type"] == "note"
                    && e["text"]
                        .as_str()
                        .is_some_and(|t| t.contains("deploy 42 looks bad"))
            })
            .then_some(())
    })
    .await;
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incident_command_answers_status_list_and_help() {
    let rig = Rig::start("socket").await;
    let r = rig.fake.command("UBOB", "list").await;
    assert_eq!(r["response_type"], "ephemeral");
    assert!(
        r["text"].as_str().unwrap().contains("No open incidents"),
        "{r}"
    );
    let alert = rig.alert(true);
    rig.card_under(&alert).await;
    let r = rig.fake.command("UBOB", "list").await;
    assert!(r["text"].as_str().unwrap().contains("`INC-1` P1"), "{r}");
    let r = rig.fake.command("UBOB", "status INC-1").await;
    let t = r["text"].as_str().unwrap();
    assert!(
        t.contains("INC-1") && t.contains("Orchestration failure"),
        "{t}"
    );
    assert_eq!(r["response_type"], "ephemeral");
    let r = rig.fake.command("UBOB", "status INC-9").await;
    assert_eq!(r["text"], "INC-9 does not exist");
    let r = rig.fake.command("UBOB", "frobnicate").await;
    assert!(
        r["text"].as_str().unwrap().contains("/incident help"),
        "{r}"
    );
    // Acknowledging is for responders (the policy's approvers): refused privately for Bob.
    let r = rig.fake.command("UBOB", "ack INC-1").await;
    assert_eq!(r["response_type"], "ephemeral");
    assert!(
        r["text"].as_str().unwrap().contains("not a responder"),
        "{r}"
    );
    // A state change answers in the channel and notes the thread.
    let r = rig.fake.command("UAPPROVER", "ack INC-1").await;
    assert_eq!(r["response_type"], "in_channel");
    assert_eq!(r["text"], "INC-1 acknowledged.");
    let a = alert.clone();
    rig.fake
        .wait("the ack note", |f| {
            f.messages()
                .iter()
                .any(|m| m.thread_ts.as_deref() == Some(&a) && m.text.contains("Acknowledged by"))
        })
        .await;
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_events_mode_checks_signatures_and_dedupes_retries() {
    let rig = Rig::start("http").await;
    let http = reqwest::Client::new();
    let url = format!("{}/slack/events", rig.base);

    // Slack's endpoint check.
    let challenge =
        json!({ "type": "url_verification", "token": "x", "challenge": "c-123" }).to_string();
    let (s, body) = signed_post(&http, &url, "application/json", challenge.clone(), None).await;
    assert_eq!(s, 200);
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["challenge"],
        "c-123"
    );

    // Forged and stale requests: 401, nothing recorded, nothing sent to Slack.
    let event = |id: &str, ts: &str| {
        json!({
            "type": "event_callback", "team_id": "T1", "api_app_id": "A1", "event_id": id, "event_time": 1,
            "event": { "type": "message", "subtype": "bot_message", "channel": ALERTS, "bot_id": "BAM",
                       "username": "Alertmanager", "text": "", "ts": ts,
                       "attachments": am_attachments("AgentDeadlock", "planner", "critical", true) }
        })
        .to_string()
    };
    let now = chrono::Utc::now().timestamp();
    let forged = signed_post(
        &http,
        &url,
        "application/json",
        event("EvF", "1.1"),
        Some((now, "wrong-secret")),
    )
    .await;
    assert_eq!(forged.0, 401);
    let stale = signed_post(
        &http,
        &url,
        "application/json",
        event("EvS", "1.2"),
        Some((now - 301, SIGNING_SECRET)),
    )
    .await;
    assert_eq!(stale.0, 401);
    let unsigned = http
        .post(&url)
        .body(event("EvU", "1.3"))
        .send()
        .await
        .unwrap();
    assert_eq!(unsigned.status(), 401);
    let cmd = rig.fake.command_http(&rig.base, "UBOB", "ack INC-1").await;
    assert_eq!(cmd.0, 200, "a good signature on a command");
    let forged_cmd = signed_post(
        &http,
        &format!("{}/slack/commands", rig.base),
        "application/x-www-form-urlencoded",
        form(&[
            ("command", "/incident".into()),
            ("text", "list".into()),
            ("user_id", "UBOB".into()),
        ]),
        Some((now, "wrong-secret")),
    )
    .await;
    assert_eq!(forged_cmd.0, 401);
    assert!(rig.incidents().await.is_empty(), "nothing recorded");
    assert!(
        rig.fake.calls_of("chat.postMessage").is_empty(),
        "nothing posted"
    );

    // A valid event from the alert channel opens the incident and its thread.
    let alert = rig.fake.post_bot_message(
        ALERTS,
        "Alertmanager",
        am_attachments("AgentDeadlock", "planner", "critical", true),
    );
    let card = rig.card_under(&alert).await;
    assert!(card_text(&card).contains("INC-1 P1"));
    // Another post of the alert, which Slack retries (X-Slack-Retry-Num): answered, not
    // counted twice. (A message is one message: its ts is its own.)
    let retry = event("EvRetry", "1700000000.000300");
    for n in 0..2 {
        let r = http
            .post(&url)
            .header("content-type", "application/json")
            .header("x-slack-retry-num", n.to_string())
            .header("x-slack-retry-reason", "http_timeout")
            .header("x-slack-request-timestamp", now.to_string())
            .header(
                "x-slack-signature",
                incidentd::chat::slack::signature::sign(
                    SIGNING_SECRET,
                    &now.to_string(),
                    retry.as_bytes(),
                ),
            )
            .body(retry.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    let incidents = rig.incidents().await;
    assert_eq!(incidents.len(), 1);
    assert_eq!(
        incidents[0]["alert_count"], 2,
        "the first delivery of EvRetry counts, its retry does not"
    );

    // Commands and button clicks over HTTP.
    let (s, r) = rig
        .fake
        .command_http(&rig.base, "UBOB", "status INC-1")
        .await;
    assert_eq!(s, 200);
    assert!(
        r["text"]
            .as_str()
            .unwrap()
            .contains("Orchestration failure"),
        "{r}"
    );
    let payload = rig.fake.click_payload(
        "UEVE",
        ALERTS,
        &card.ts,
        Some(&alert),
        "approve:INC-1:restart",
    );
    let (s, _) = signed_post(
        &http,
        &format!("{}/slack/interactions", rig.base),
        "application/x-www-form-urlencoded",
        form(&[("payload", payload.to_string())]),
        None,
    )
    .await;
    assert_eq!(s, 200);
    rig.fake
        .wait("the ephemeral refusal", |f| {
            f.ephemerals().iter().any(|e| e["user"] == "UEVE")
        })
        .await;
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn socket_drop_mid_incident_loses_no_event_and_duplicates_no_message() {
    let rig = Rig::start("socket").await;
    let alert = rig.alert(true);
    let card = rig.card_under(&alert).await;

    // The network drops the socket; Slack queues what happens meanwhile.
    rig.fake.drop_socket();
    rig.alert(true);
    rig.fake
        .post_user_message(ALERTS, "UBOB", "looking into it", Some(&alert));
    // The app reconnects by itself and gets the queued envelopes.
    rig.fake.wait_connected(2).await;
    rig.fake
        .wait("every envelope acked after the reconnect", |f| {
            f.envelopes().iter().all(|e| e.ack.is_some())
        })
        .await;
    // Slack may redeliver an envelope whose ack it did not see: it must not count twice.
    let first = rig
        .fake
        .envelopes()
        .into_iter()
        .find(|e| e.payload["event"]["ts"] == alert.as_str())
        .unwrap();
    rig.fake.redeliver_event(first.payload.clone());
    // A disconnect envelope (connection refresh) is followed by a fresh connection.
    rig.fake.send_disconnect();
    rig.fake.wait_connected(3).await;
    rig.alert(true);
    let ts = card.ts.clone();
    rig.fake
        .wait("the card edited to three alerts", |f| {
            f.messages()
                .iter()
                .any(|m| m.ts == ts && card_text(m).contains("seen 3×"))
        })
        .await;
    rig.fake
        .wait("every envelope acked", |f| {
            f.envelopes().iter().all(|e| e.ack.is_some())
        })
        .await;
    let incidents = rig.incidents().await;
    assert_eq!(incidents.len(), 1);
    assert_eq!(incidents[0]["alert_count"], 3);
    assert_eq!(rig.fake.cards().len(), 1, "no duplicate card");
    let d = rig.get("/api/v1/incidents/INC-1").await;
    let notes: Vec<&Value> = d["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"] == "note")
        .collect();
    assert_eq!(notes.len(), 1, "{notes:?}");
    // No message was posted twice: every outbox key appears once.
    let keys: Vec<String> = rig
        .fake
        .messages()
        .iter()
        .filter_map(|m| {
            m.metadata["event_payload"]["key"]
                .as_str()
                .map(String::from)
        })
        .collect();
    let unique: std::collections::HashSet<&String> = keys.iter().collect();
    assert_eq!(keys.len(), unique.len(), "{keys:?}");
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limit_storm_delays_but_loses_nothing() {
    let rig = Rig::start("socket").await;
    rig.fake.storm(3);
    let names = ["AgentDeadlock", "QueueStuck", "PlannerCrash", "WorkerOOM"];
    let mut alerts = Vec::new();
    for n in names {
        alerts.push(rig.fake.post_bot_message(
            ALERTS,
            "Alertmanager",
            am_attachments(n, "planner", "critical", true),
        ));
    }
    for a in &alerts {
        rig.card_under(a).await;
    }
    let posts = rig.fake.calls_of("chat.postMessage");
    assert!(
        posts.iter().filter(|c| c.status == 429).count() >= 3,
        "the storm happened"
    );
    assert_eq!(
        rig.fake.cards().len(),
        names.len(),
        "one card each, none lost, none doubled"
    );
    assert_eq!(rig.incidents().await.len(), names.len());
    rig.stop().await;
}

/// The bot's own latency: alert message envelope sent → its thread reply (chat.postMessage)
/// seen at the fake, one alert at a time. Prints p50/p99; asserts only that every alert got
/// its card (no wall-clock assertions).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latency_alert_message_to_thread_reply() {
    let fake = FakeSlack::start().await;
    fake.set_rate(None);
    let rig = Rig::launch_with(
        "socket",
        fake,
        tempfile::tempdir().unwrap(),
        POLICY,
        false,
        BOT_TOKEN,
    )
    .await;
    let n = 200;
    let mut samples = Vec::with_capacity(n);
    for i in 0..n {
        let ts = rig.fake.post_bot_message(
            ALERTS,
            "Alertmanager",
            am_attachments(&format!("Latency{i}"), "planner", "critical", true),
        );
        rig.card_under(&ts).await;
        // The message is stored before the call is recorded: wait for the record too.
        let t = ts.clone();
        rig.fake
            .wait("the post recorded", |f| {
                f.calls_of("chat.postMessage")
                    .iter()
                    .any(|c| c.body["thread_ts"] == t.as_str() && c.status == 200)
            })
            .await;
        let sent = rig
            .fake
            .envelopes()
            .into_iter()
            .find(|e| e.payload["event"]["ts"] == ts.as_str())
            .unwrap()
            .sent_at;
        let posted = rig
            .fake
            .calls_of("chat.postMessage")
            .into_iter()
            .find(|c| c.body["thread_ts"] == ts.as_str() && c.status == 200)
            .unwrap()
            .at;
        samples.push(posted.duration_since(sent));
    }
    rig.fake
        .wait("every envelope acked", |f| {
            f.envelopes().iter().all(|e| e.ack.is_some())
        })
        .await;
    let mut acks: Vec<_> = rig
        .fake
        .envelopes()
        .iter()
        .map(|e| e.acked_at.unwrap().duration_since(e.sent_at))
        .collect();
    samples.sort();
    acks.sort();
    let p = |v: &[std::time::Duration], q: f64| {
        v[((v.len() as f64 * q).ceil() as usize).saturating_sub(1)]
    };
    println!(
        "slack latency, alert message → thread reply, n={n}: p50 {:?}, p99 {:?}, max {:?}",
        p(&samples, 0.50),
        p(&samples, 0.99),
        samples[samples.len() - 1]
    );
    println!(
        "slack socket envelope → ack, n={}: p50 {:?}, p99 {:?}, max {:?}",
        acks.len(),
        p(&acks, 0.50),
        p(&acks, 0.99),
        acks[acks.len() - 1]
    );
    assert_eq!(rig.fake.cards().len(), n);
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_incidents_thread_in_the_incident_channel_and_edits_survive_a_restart() {
    let rig = Rig::start("socket").await;
    let body = support::alertmanager("firing", &[("HighErrorRate", "api", "critical", "firing")]);
    let r = rig
        .http
        .post(format!("{}/api/v1/alerts/alertmanager", rig.base))
        .header("content-type", "application/json")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    rig.fake
        .wait("the card in the incident channel", |f| {
            f.cards()
                .iter()
                .any(|c| c.channel == INCIDENTS && c.thread_ts.is_none())
        })
        .await;
    let card = rig.fake.cards().remove(0);
    assert!(card_text(&card).contains("INC-1"));
    // The incident channel is also an alert channel here: the bot's own card, echoed back by
    // Slack, must not be read as an alert.
    rig.fake
        .wait("every envelope acked", |f| {
            f.envelopes().iter().all(|e| e.ack.is_some()) && !f.envelopes().is_empty()
        })
        .await;
    assert_eq!(rig.incidents().await.len(), 1);

    // Restart: the new process does not remember the card's ts and finds it by its block id.
    let (fake, dir) = rig.stop_keep().await;
    let rig = Rig::launch("socket", fake, dir, POLICY).await;
    let r = rig
        .http
        .post(format!("{}/api/v1/alerts/alertmanager", rig.base))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let ts = card.ts.clone();
    rig.fake
        .wait("the card edited after the restart", |f| {
            f.messages()
                .iter()
                .any(|m| m.ts == ts && card_text(m).contains("seen 2×"))
        })
        .await;
    // Found again by its block id: in its thread (conversations.replies) or, when the first
    // process stopped before the post's completion was stored and the new one re-delivered
    // the post, among the channel's messages (conversations.history). Never posted twice.
    assert!(
        !rig.fake.calls_of("conversations.replies").is_empty()
            || !rig.fake.calls_of("conversations.history").is_empty()
    );
    assert_eq!(rig.fake.cards().len(), 1);
    // A reply in that thread is recorded on the incident's timeline.
    rig.fake
        .post_user_message(INCIDENTS, "UBOB", "rolling back", Some(&card.ts));
    eventually("the thread note on the timeline", || async {
        let d = rig.get("/api/v1/incidents/INC-1").await;
        d["timeline"]
            .as_array()?
            .iter()
            .any(|e| e["type"] == "note")
            .then_some(())
    })
    .await;
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approvers_named_by_user_group() {
    let fake = FakeSlack::start().await;
    fake.add_usergroup("SONCALL", &["UCAROL", "UDAN"]);
    fake.add_usergroup("SOTHER", &["UEVE"]);
    let policy = "[policy.P1]\napprovers = [\"slack-group:SONCALL\"]\n";
    let rig = Rig::launch("socket", fake, tempfile::tempdir().unwrap(), policy).await;
    let alert = rig.alert(true);
    let card = rig.card_under(&alert).await;
    rig.fake.click("UEVE", &card, "approve:INC-1:restart");
    rig.fake
        .wait("the refusal", |f| {
            f.ephemerals().iter().any(|e| e["user"] == "UEVE")
        })
        .await;
    rig.fake.click("UCAROL", &card, "approve:INC-1:restart");
    let a = alert.clone();
    rig.fake
        .wait("the approval note", |f| {
            f.messages().iter().any(|m| {
                m.thread_ts.as_deref() == Some(&a) && m.text.contains("approved `restart`")
            })
        })
        .await;
    // One membership lookup serves both clicks.
    assert_eq!(rig.fake.calls_of("usergroups.list").len(), 1);
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn posts_are_paced_under_slacks_per_channel_limit() {
    // The fake allows a burst of 3 then 1 chat.postMessage per second per channel, like Slack.
    let rig = Rig::start("socket").await;
    let mut alerts = Vec::new();
    for i in 0..6 {
        alerts.push(rig.fake.post_bot_message(
            ALERTS,
            "Alertmanager",
            am_attachments(&format!("Paced{i}"), "planner", "critical", true),
        ));
    }
    for a in &alerts {
        rig.card_under(a).await;
    }
    let posts = rig.fake.calls_of("chat.postMessage");
    assert!(
        posts.iter().all(|c| c.status == 200),
        "the bot paced itself: no 429"
    );
    assert_eq!(rig.fake.cards().len(), 6);
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_fall_back_to_response_url_where_the_bot_cannot_post() {
    let rig = Rig::start("socket").await;
    let alert = rig.alert(true);
    rig.card_under(&alert).await;
    // A click from a channel the bot is not in: chat.postEphemeral says channel_not_found.
    let p = rig
        .fake
        .click_payload("UEVE", "CGONE", "1.1", None, "approve:INC-1:restart");
    rig.fake.click_raw(p);
    rig.fake
        .wait("the answer through response_url", |f| {
            !f.responses().is_empty()
        })
        .await;
    let r = rig.fake.responses().remove(0);
    assert_eq!(r["response_type"], "ephemeral");
    assert_eq!(r["replace_original"], false);
    assert!(
        r["text"]
            .as_str()
            .unwrap()
            .contains("not an authorized approver"),
        "{r}"
    );
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_posted_as_blocks_are_read_too() {
    let rig = Rig::start("socket").await;
    let blocks = json!([
        { "type": "header", "text": { "type": "plain_text", "text": "[FIRING:1] AgentDeadlock (planner critical)" } },
        { "type": "section", "text": { "type": "mrkdwn",
          "text": "*Alert:* Planner agent deadlock - `critical`\n*Details:*\n• *alertname:* `AgentDeadlock`\n• *service:* `planner`\n• *severity:* `critical`" } }
    ]);
    let ts = rig.fake.post_bot_blocks(ALERTS, "Grafana", blocks);
    let card = rig.card_under(&ts).await;
    assert!(
        card_text(&card).contains("INC-1 P1"),
        "{}",
        card_text(&card)
    );
    let incidents = rig.incidents().await;
    assert_eq!(incidents.len(), 1);
    assert_eq!(incidents[0]["kind"], "orchestration_failure");
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_answer_does_not_double_the_card() {
    let rig = Rig::start("socket").await;
    // Slack stores the card but its answer is lost: the outbox retries the same entry.
    rig.fake.lose_answers(1);
    let alert = rig.alert(true);
    let card = rig.card_under(&alert).await;
    // Then a webhook-born incident, whose card is a root message in the incident channel.
    rig.fake.lose_answers(1);
    let body = support::alertmanager("firing", &[("HighErrorRate", "api", "critical", "firing")]);
    let r = rig
        .http
        .post(format!("{}/api/v1/alerts/alertmanager", rig.base))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    rig.fake
        .wait("the webhook card", |f| {
            f.cards().iter().any(|c| c.channel == INCIDENTS)
        })
        .await;
    // The retries found the cards instead of posting them again...
    eventually("both lookups", || async {
        let replies = rig.fake.calls_of("conversations.replies").len();
        let history = rig.fake.calls_of("conversations.history").len();
        (replies >= 1 && history >= 1).then_some(())
    })
    .await;
    assert_eq!(rig.fake.cards().len(), 2, "no doubled card");
    // ...and the threads work: a repeat edits the first card.
    rig.alert(true);
    let ts = card.ts.clone();
    rig.fake
        .wait("the card edited", |f| {
            f.messages()
                .iter()
                .any(|m| m.ts == ts && card_text(m).contains("seen 2×"))
        })
        .await;
    assert_eq!(rig.fake.cards().len(), 2);
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_card_posted_before_a_restart_is_found_in_a_busy_channel() {
    // The first process posts a webhook incident's card in the incident channel, Slack stores
    // it but the answer is lost, and the process stops. 1 500 messages follow in the channel
    // (a storm of alert posts): the new process must find the card beyond the first pages of
    // conversations.history (newest first) instead of posting a second one.
    let rig = Rig::start("socket").await;
    rig.fake.lose_answers_of("card", 1000);
    let body = support::alertmanager("firing", &[("HighErrorRate", "api", "critical", "firing")]);
    let post = |rig: &Rig| {
        rig.http
            .post(format!("{}/api/v1/alerts/alertmanager", rig.base))
            .header("content-type", "application/json")
            .body(body.clone())
            .send()
    };
    assert_eq!(post(&rig).await.unwrap().status(), 200);
    rig.fake
        .wait("the card stored", |f| {
            f.cards().iter().any(|c| c.channel == INCIDENTS)
        })
        .await;
    let card = rig.fake.cards().remove(0);
    let (fake, dir) = rig.stop_keep().await;
    fake.lose_answers(0);
    fake.add_messages(INCIDENTS, None, 1500);
    let rig = Rig::launch("socket", fake, dir, POLICY).await;
    assert_eq!(post(&rig).await.unwrap().status(), 200);
    rig.fake
        .wait("a card edited with the repeat", |f| {
            f.cards().iter().any(|m| card_text(m).contains("seen 2×"))
        })
        .await;
    let cards = rig.fake.cards();
    assert_eq!(cards.len(), 1, "the card posted once");
    assert_eq!(cards[0].ts, card.ts, "the first card edited");
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_answer_does_not_double_a_note() {
    let rig = Rig::start("socket").await;
    let alert = rig.alert(true);
    rig.card_under(&alert).await;
    // Slack stores the ack note but its answer is lost: the outbox retries the same entry.
    rig.fake.lose_answers_of("note", 1);
    let r = rig.fake.command("UAPPROVER", "ack INC-1").await;
    assert_eq!(r["text"], "INC-1 acknowledged.");
    // A later note of the same incident leaves after the retried one (per-incident order).
    later_note(&rig, &alert).await;
    let acks: Vec<_> = rig
        .fake
        .messages()
        .into_iter()
        .filter(|m| m.thread_ts.as_deref() == Some(&alert) && m.text.contains("Acknowledged by"))
        .collect();
    assert_eq!(acks.len(), 1, "the note posted once: {acks:?}");
    assert_eq!(
        acks[0].metadata["event_payload"]["kind"], "note",
        "posted with its idempotency key: {:?}",
        acks[0].metadata
    );
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_note_sent_before_a_restart_is_not_posted_again() {
    note_sent_before_a_restart_is_posted_once(0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_note_sent_before_a_restart_is_not_posted_again_in_a_long_thread() {
    // 1 200 replies before the note: Slack pages `conversations.replies` (at most 1 000 a
    // page), so the note is on the second page.
    note_sent_before_a_restart_is_posted_once(1200).await;
}

async fn note_sent_before_a_restart_is_posted_once(chatter: usize) {
    // A leader killed after Slack stored its note but before it recorded the result (here: the
    // answer lost, then a stop before the retry): the next process finds the note by the
    // idempotency key in its metadata instead of posting it again (as Discord's nonce does).
    let rig = Rig::start("socket").await;
    let alert = rig.alert(true);
    rig.card_under(&alert).await;
    rig.fake.add_messages(ALERTS, Some(&alert), chatter);
    rig.fake.lose_answers_of("note", 1000);
    rig.fake.command("UAPPROVER", "ack INC-1").await;
    let a = alert.clone();
    let acked = move |f: &FakeSlack| {
        f.messages()
            .iter()
            .filter(|m| m.thread_ts.as_deref() == Some(&a) && m.text.contains("Acknowledged by"))
            .count()
    };
    rig.fake
        .wait("the ack note stored", |f| acked(f) == 1)
        .await;
    let (fake, dir) = rig.stop_keep().await;
    fake.lose_answers(0);
    let rig = Rig::launch("socket", fake, dir, POLICY).await;
    later_note(&rig, &alert).await;
    assert_eq!(acked(&rig.fake), 1, "the ack note posted once");
    assert!(
        rig.fake
            .calls_of("conversations.replies")
            .iter()
            .any(|c| c.body["include_all_metadata"] == "true"),
        "looked up with the metadata"
    );
    rig.stop().await;
}

/// A note ("later") on INC-1, waited for in the thread under `alert`: notes of one incident
/// leave in order, so every earlier note of it has been delivered (or given up) by then.
async fn later_note(rig: &Rig, alert: &str) {
    rig.fake.command("UAPPROVER", "note INC-1 later").await;
    rig.fake
        .wait("the later note", |f| {
            f.messages()
                .iter()
                .any(|m| m.thread_ts.as_deref() == Some(alert) && m.text.contains("later"))
        })
        .await;
}

/// Waits until the envelope carrying the message `ts` was acknowledged, that is handled.
async fn wait_handled(rig: &Rig, ts: &str) {
    rig.fake
        .wait("the message's envelope acked", |f| {
            f.envelopes()
                .iter()
                .any(|e| e.payload["event"]["ts"] == ts && e.ack.is_some())
        })
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn people_chatter_opens_nothing_but_a_mention_or_a_pasted_alert_does() {
    let rig = Rig::start("socket").await;
    let chatter = rig.fake.post_user_message(
        ALERTS,
        "UBOB",
        "anyone around? checkout looks slow to me",
        None,
    );
    wait_handled(&rig, &chatter).await;
    assert!(
        rig.incidents().await.is_empty(),
        "chatter opened an incident"
    );
    assert!(
        rig.fake.calls_of("chat.postMessage").is_empty(),
        "the bot answered chatter"
    );

    // Asked by name: one incident titled with the rest of the text, threaded under the message.
    let asked = rig.fake.post_user_message(
        ALERTS,
        "UBOB",
        &format!("<@{BOT_USER}> checkout is down"),
        None,
    );
    let card = rig.card_under(&asked).await;
    assert!(card_text(&card).contains("INC-1"), "{}", card_text(&card));
    let incidents = rig.incidents().await;
    assert_eq!(incidents.len(), 1, "{incidents:?}");
    assert_eq!(incidents[0]["title"], "checkout is down");
    assert_eq!(incidents[0]["annotations"]["reported_by"], "slack:UBOB");

    // A person pasting what Alertmanager posts is an alert too.
    let pasted = rig.fake.post_user_message(
        ALERTS,
        "UALICE",
        "[FIRING:1] AgentDeadlock (planner critical)",
        None,
    );
    rig.card_under(&pasted).await;
    let incidents = rig.incidents().await;
    assert_eq!(incidents.len(), 2, "{incidents:?}");
    assert_eq!(rig.fake.cards().len(), 2);
    assert!(rig
        .fake
        .messages()
        .iter()
        .all(|m| m.thread_ts.as_deref() != Some(chatter.as_str())));
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incident_new_opens_one_incident_with_the_person_as_reporter() {
    let rig = Rig::start("socket").await;
    let r = rig.fake.command("UBOB", "new Checkout slow").await;
    assert_eq!(r["response_type"], "in_channel", "{r}");
    assert!(r["text"].as_str().unwrap().contains("INC-1"), "{r}");
    // No message to thread under: the card starts a thread in the incident channel.
    rig.fake
        .wait("the card in the incident channel", |f| {
            f.cards().iter().any(|c| c.channel == INCIDENTS)
        })
        .await;
    let incidents = rig.incidents().await;
    assert_eq!(incidents.len(), 1, "{incidents:?}");
    assert_eq!(incidents[0]["title"], "Checkout slow");
    assert_eq!(incidents[0]["annotations"]["reported_by"], "slack:UBOB");
    // Asking again for the same thing counts on the open incident.
    let r = rig.fake.command("UALICE", "new checkout  slow").await;
    assert!(r["text"].as_str().unwrap().contains("INC-1"), "{r}");
    assert_eq!(rig.incidents().await.len(), 1);
    let r = rig.fake.command("UBOB", "new").await;
    assert_eq!(r["response_type"], "ephemeral");
    assert!(r["text"].as_str().unwrap().contains("needs a title"), "{r}");
    rig.stop().await;
}

/// No mrkdwn the bot sent (`text` and mrkdwn blocks; `plain_text` pings no one) carries an
/// unescaped broadcast or a mention it did not mean.
fn assert_no_broadcast(fake: &FakeSlack) {
    for m in fake.messages() {
        if m.user.as_deref() != Some(BOT_USER) {
            continue;
        }
        let all = format!("{} {:?}", m.text, mrkdwn_texts(&json!(m.blocks)));
        for bad in [
            "<!channel>",
            "<!here>",
            "<!everyone>",
            "<@UALICE>",
            "<!subteam^S1>",
        ] {
            assert!(!all.contains(bad), "{bad} in {all}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn card_mrkdwn_is_escaped_once_and_cut_on_entity_boundaries() {
    let rig = Rig::start("socket").await;
    let evil = "<!channel> <!here> <!everyone> <@UALICE> <!subteam^S1> @channel";
    let body = serde_json::json!({
        "title": format!("EvilAlert & <tag> {evil}"),
        "severity": "critical",
        "description": "<<a".repeat(4000),
        "labels": { "team": evil },
    });
    let r = rig
        .http
        .post(format!("{}/api/v1/alerts", rig.base))
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    rig.fake.wait("the card", |f| !f.cards().is_empty()).await;
    let card = rig.fake.cards().remove(0);
    let texts = mrkdwn_texts(&serde_json::json!(card.blocks));
    assert!(
        texts.iter().any(|t| t.contains("detect &lt; ")),
        "{texts:?}"
    );
    for t in &texts {
        if let Err(e) = check_mrkdwn(t) {
            panic!("{e}: {t}");
        }
    }
    assert_no_broadcast(&rig.fake);
    rig.stop().await;
}

/// Least privilege: the manifest grants exactly the bot scopes the client's Web API calls
/// (`WEB_API_SCOPES`, checked against the spec) and its features need.
#[test]
fn manifest_scopes_are_exactly_what_the_code_uses() {
    use incidentd::chat::slack::{FEATURE_SCOPES, WEB_API_SCOPES};
    use std::collections::BTreeSet;
    for (method, scopes) in WEB_API_SCOPES {
        let Some(spec) = spec_scopes(method) else {
            // Not in the Web API spec: Socket Mode's method, with the app-level token.
            assert_eq!(*method, "apps.connections.open");
            continue;
        };
        let listed: BTreeSet<String> = scopes.iter().map(|s| s.to_string()).collect();
        assert!(
            listed.iter().all(|s| spec.contains(s)),
            "{method}: {listed:?} not among the spec's {spec:?}"
        );
        assert_eq!(
            listed.is_empty(),
            spec.is_empty(),
            "{method}: the spec wants {spec:?}"
        );
    }
    let used: BTreeSet<String> = WEB_API_SCOPES
        .iter()
        .flat_map(|(_, s)| s.iter())
        .chain(FEATURE_SCOPES)
        .map(|s| s.to_string())
        .collect();
    let granted: BTreeSet<String> = manifest_bot_scopes().into_iter().collect();
    assert_eq!(
        granted, used,
        "deploy/slack-app-manifest.yml bot scopes vs the code's"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echoed_command_text_never_pings() {
    let rig = Rig::start("socket").await;
    let alert = rig.alert(true);
    rig.card_under(&alert).await;
    let evil = "<!channel> <!here> <!everyone> <@UALICE> <!subteam^S1>";
    for cmd in [
        format!("assign INC-1 {evil}"),
        format!("note INC-1 {evil}"),
        format!("rootcause INC-1 configuration {evil}"),
        format!("followup INC-1 {evil} @bob"),
        format!("resolve INC-1 {evil}"),
        format!("new {evil}"),
    ] {
        let r = rig.fake.command("UAPPROVER", &cmd).await;
        let text = r["text"].as_str().unwrap_or("");
        for bad in [
            "<!channel>",
            "<!here>",
            "<!everyone>",
            "<@UALICE>",
            "<!subteam^S1>",
        ] {
            assert!(!text.contains(bad), "{cmd}: {text}");
        }
    }
    // The notes the commands left in the thread, and the second incident's card.
    rig.fake
        .wait("the resolve note", |f| {
            f.messages()
                .iter()
                .any(|m| m.thread_ts.as_deref() == Some(&alert) && m.text.contains("Resolved"))
        })
        .await;
    rig.fake
        .wait("the new card", |f| f.cards().len() >= 2)
        .await;
    assert_no_broadcast(&rig.fake);
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_bot_token_is_not_ready_and_names_the_fix() {
    let fake = FakeSlack::start().await;
    let dir = tempfile::tempdir().unwrap();
    let rig = Rig::launch_with("socket", fake, dir, POLICY, true, "xoxb-wrong").await;
    let body = support::fake_discord::eventually("/readyz reports the refused token", || async {
        let r = rig
            .http
            .get(format!("{}/readyz", rig.base))
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        let body = r.text().await.unwrap();
        (status == 503).then_some(body)
    })
    .await;
    assert!(body.starts_with("slack connection down since "), "{body}");
    assert!(body.contains("set SLACK_BOT_TOKEN"), "{body}");
    let metrics = rig.http.get(format!("{}/metrics", rig.base)).send();
    let metrics = metrics.await.unwrap().text().await.unwrap();
    assert!(
        metrics.contains("incidentd_chat_connected{platform=\"slack\"} 0\n"),
        "{metrics}"
    );
    rig.stop().await;
}

/// Every incident's (alertname, alert count), sorted.
async fn alert_counts(rig: &Rig) -> Vec<(String, u64)> {
    let mut out: Vec<(String, u64)> = rig
        .incidents()
        .await
        .iter()
        .map(|i| {
            (
                i["labels"]["alertname"].as_str().unwrap_or("").to_string(),
                i["alert_count"].as_u64().unwrap(),
            )
        })
        .collect();
    out.sort();
    out
}

fn counts(names: &[&str]) -> Vec<(String, u64)> {
    names.iter().map(|n| (n.to_string(), 1)).collect()
}

/// Issue 14, item 7 (Slack): an alert posted during a socket outage longer than Slack's
/// redelivery (its event is never delivered) is read back from the alert channel's history
/// after the reconnect, once. A later reconnect reads nothing twice; after a restart, the
/// stored bookmark brings back what was posted while incidentd was down, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_lost_in_a_socket_outage_are_read_back_from_history_once() {
    let rig = Rig::start("socket").await;
    let first = rig.alert(true);
    rig.card_under(&first).await;

    rig.fake.drop_socket();
    rig.fake.lose_events(true);
    rig.fake.post_bot_message(
        ALERTS,
        "Alertmanager",
        am_attachments("QueueBacklog", "billing", "warning", true),
    );
    rig.fake.lose_events(false);
    eventually("the lost alert read back after the reconnect", || async {
        (alert_counts(&rig).await == counts(&["AgentDeadlock", "QueueBacklog"])).then_some(())
    })
    .await;

    // A connection refresh reads the history again: nothing counts twice.
    let reads = rig.fake.calls_of("conversations.history").len();
    rig.fake.send_disconnect();
    rig.fake
        .wait("both alert channels read after the refresh", |f| {
            f.calls_of("conversations.history").len() >= reads + 2
        })
        .await;
    assert_eq!(
        alert_counts(&rig).await,
        counts(&["AgentDeadlock", "QueueBacklog"])
    );

    // Posted while incidentd is down (and Slack gave up redelivering it).
    let (fake, dir) = rig.stop_keep().await;
    fake.lose_events(true);
    fake.post_bot_message(
        ALERTS,
        "Alertmanager",
        am_attachments("DiskFull", "storage", "warning", true),
    );
    fake.lose_events(false);
    let rig = Rig::launch("socket", fake, dir, POLICY).await;
    eventually("the alert posted while down, read back", || async {
        (alert_counts(&rig).await == counts(&["AgentDeadlock", "DiskFull", "QueueBacklog"]))
            .then_some(())
    })
    .await;
    rig.stop().await;
}

/// The `action_id`s of a message's buttons.
fn button_ids(m: &FakeMessage) -> Vec<String> {
    m.blocks
        .iter()
        .filter(|b| b["type"] == "actions")
        .flat_map(|b| b["elements"].as_array().cloned().unwrap_or_default())
        .filter_map(|e| e["action_id"].as_str().map(String::from))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn followups_are_set_by_subcommands_and_the_reports_buttons() {
    let rig = Rig::start("socket").await;
    let alert = rig.alert(true);
    rig.card_under(&alert).await;
    // Anyone may add one; the type and a mentioned owner come from the text.
    let r = rig
        .fake
        .command(
            "UBOB",
            "followup add INC-1 process: add a deadlock alert <@UBOB>",
        )
        .await;
    assert_eq!(r["text"], "Follow-up added to INC-1.", "{r}");
    let a = alert.clone();
    rig.fake
        .wait("the follow-up note", |f| {
            f.messages().iter().any(|m| {
                m.thread_ts.as_deref() == Some(&a) && m.text.contains("Follow-up #1 for INC-1")
            })
        })
        .await;
    let r = rig.fake.command("UEVE", "followup list INC-1").await;
    assert_eq!(r["response_type"], "ephemeral");
    let t = r["text"].as_str().unwrap();
    assert!(
        t.contains("#1 add a deadlock alert — &lt;@UBOB&gt; (process, open, due"),
        "{t}"
    );
    // Resolving posts the report with the follow-ups' buttons.
    let r = rig.fake.command("UAPPROVER", "resolve INC-1").await;
    assert_eq!(r["text"], "INC-1 resolved.", "{r}");
    rig.fake
        .wait("the report with buttons", |f| {
            f.messages()
                .iter()
                .any(|m| m.text.starts_with("📋 INC-1") && !button_ids(m).is_empty())
        })
        .await;
    let report = rig
        .fake
        .messages()
        .into_iter()
        .find(|m| m.text.starts_with("📋 INC-1") && !button_ids(m).is_empty())
        .unwrap();
    assert_eq!(button_ids(&report), ["fu-add:INC-1", "fu-done:INC-1:1"]);
    let all = card_text(&report);
    assert!(all.contains("*Improvements*"), "{all}");
    assert!(all.contains("☐ #1 add a deadlock alert"), "{all}");
    // "Add follow-up" says how, privately.
    rig.fake.click("UEVE", &report, "fu-add:INC-1");
    rig.fake
        .wait("the add hint", |f| {
            f.ephemerals().iter().any(|e| {
                e["user"] == "UEVE"
                    && e["text"]
                        .as_str()
                        .is_some_and(|t| t.contains("/incident followup add INC-1"))
            })
        })
        .await;
    // "Done" by someone who neither owns it nor responds: refused privately and recorded.
    rig.fake.click("UEVE", &report, "fu-done:INC-1:1");
    rig.fake
        .wait("the refusal", |f| {
            f.ephemerals().iter().any(|e| {
                e["user"] == "UEVE"
                    && e["text"]
                        .as_str()
                        .is_some_and(|t| t.contains("not a responder"))
            })
        })
        .await;
    // By its owner: done.
    rig.fake.click("UBOB", &report, "fu-done:INC-1:1");
    let a = alert.clone();
    rig.fake
        .wait("the done note", |f| {
            f.messages().iter().any(|m| {
                m.thread_ts.as_deref() == Some(&a)
                    && m.text.contains("Follow-up #1 of INC-1 done by")
            })
        })
        .await;
    let r = rig.fake.command("UBOB", "followups mine").await;
    let t = r["text"].as_str().unwrap();
    assert!(t.contains("`INC-1` ☑ #1") && t.contains("verify by"), "{t}");
    // Verifying takes a responder.
    let r = rig.fake.command("UBOB", "followup verify INC-1 1").await;
    assert!(
        r["text"].as_str().unwrap().contains("not a responder"),
        "{r}"
    );
    let r = rig
        .fake
        .command("UAPPROVER", "followup verify INC-1 1")
        .await;
    assert_eq!(r["text"], "Follow-up #1 of INC-1 is verified.", "{r}");
    let r = rig.fake.command("UBOB", "followups").await;
    assert_eq!(r["text"], "No follow-ups to do. 🎉", "{r}");
    let d = rig.get("/api/v1/incidents/INC-1").await;
    let types: Vec<&str> = d["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["type"].as_str())
        .filter(|t| t.starts_with("follow_up") || *t == "refused")
        .collect();
    assert_eq!(
        types,
        [
            "follow_up_added",
            "refused",
            "follow_up_changed",
            "refused",
            "follow_up_changed"
        ],
        "{d}"
    );
    // The numbers: one follow-up, done and verified on time; nothing overdue.
    let st = rig.get("/api/v1/stats?days=7").await;
    assert_eq!(st["followup_completion"]["numerator"], 1, "{st}");
    assert_eq!(st["followup_completion"]["denominator"], 1, "{st}");
    assert_eq!(st["followups_overdue"], 0, "{st}");
    let metrics = rig
        .http
        .get(format!("{}/metrics", rig.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("incidentd_followup_completion_ratio 1.0")
            && metrics.contains("incidentd_followups_overdue 0.0"),
        "{metrics}"
    );
    rig.stop().await;
}

/// A tracker's "create issue" endpoint on loopback: records each body; answers 201 with the
/// issue's `html_url`, or 500 when the title asks for it.
async fn tracker() -> (String, std::sync::Arc<std::sync::Mutex<Vec<Value>>>) {
    use axum::{extract::State, http::StatusCode, routing::post, Json, Router};
    type Seen = std::sync::Arc<std::sync::Mutex<Vec<Value>>>;
    let seen: Seen = Default::default();
    let app = Router::new()
        .route(
            "/repos/acme/api/issues",
            post(
                |State(seen): State<Seen>, Json(body): Json<Value>| async move {
                    let n = {
                        let mut s = seen.lock().unwrap();
                        s.push(body.clone());
                        s.len()
                    };
                    if body["title"].as_str().unwrap_or("").contains("fail") {
                        return (StatusCode::INTERNAL_SERVER_ERROR, Json(json!({})));
                    }
                    let url = format!("https://tracker.example/acme/api/issues/{n}");
                    (
                        StatusCode::CREATED,
                        Json(json!({ "number": n, "html_url": url })),
                    )
                },
            ),
        )
        .with_state(seen.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (base, seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_followup_is_exported_once_and_keeps_its_link() {
    let (base, seen) = tracker().await;
    let export = format!(
        "{POLICY}\n[followups.export]\nid = \"tracker\"\ntitle = \"Create a tracker issue\"\n\
         allowed_pattern = '(?s).{{1,300}}'\ntimeout_seconds = 5\n\
         run = {{ type = \"http\", method = \"POST\", url = \"{base}/repos/acme/api/issues\", expect_status = 201, \
         body = {{ title = \"{{incident.id}} follow-up #{{followup.number}}: {{followup.text}}\", labels = [\"{{followup.kind}}\", \"incident\"] }} }}\n"
    );
    let rig = Rig::launch(
        "socket",
        FakeSlack::start().await,
        tempfile::tempdir().unwrap(),
        &export,
    )
    .await;
    let alert = rig.alert(true);
    rig.card_under(&alert).await;
    rig.fake
        .command(
            "UBOB",
            "followup add INC-1 process: add a deadlock alert @bob",
        )
        .await;
    let a = alert.clone();
    rig.fake
        .wait("the export's link in the thread", |f| {
            f.messages().iter().any(|m| {
                m.thread_ts.as_deref() == Some(&a)
                    && m.text
                        .contains("tracked at https://tracker.example/acme/api/issues/1")
            })
        })
        .await;
    {
        let s = seen.lock().unwrap();
        assert_eq!(s.len(), 1);
        assert_eq!(s[0]["title"], "INC-1 follow-up #1: add a deadlock alert");
        assert_eq!(s[0]["labels"], json!(["process", "incident"]));
    }
    let d = rig.get("/api/v1/incidents/INC-1").await;
    assert_eq!(
        d["incident"]["followups"][0]["link"], "https://tracker.example/acme/api/issues/1",
        "{d}"
    );
    let x = &d["executions"].as_array().unwrap()[0];
    assert_eq!(x["key"], "INC-1:followup-export:1");
    assert_eq!(x["status"], "succeeded");
    // A failing export is reported and not retried; the follow-up stays, without a link.
    rig.fake
        .command("UBOB", "followup add INC-1 this will fail")
        .await;
    let a = alert.clone();
    rig.fake
        .wait("the export failure note", |f| {
            f.messages().iter().any(|m| {
                m.thread_ts.as_deref() == Some(&a) && m.text.contains("could not be exported")
            })
        })
        .await;
    let r = rig.fake.command("UBOB", "followup list INC-1").await;
    let t = r["text"].as_str().unwrap();
    assert!(
        t.contains("#1 add a deadlock alert") && t.contains("tracker.example/acme/api/issues/1"),
        "{t}"
    );
    let d = rig.get("/api/v1/incidents/INC-1").await;
    assert!(d["incident"]["followups"][1]["link"].is_null(), "{d}");
    let statuses: Vec<&str> = d["executions"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|x| x["status"].as_str())
        .collect();
    assert_eq!(statuses.len(), 2, "one execution per follow-up: {d}");
    assert!(statuses.contains(&"failed"), "{d}");
    // Each follow-up was sent exactly once (no retry of the 500, no resend of #1).
    assert_eq!(seen.lock().unwrap().len(), 2);
    rig.stop().await;
}
