//! The neutral chat layer every surface uses: alert-channel messages, thread replies, buttons
//! and `/incident` commands, against the real engine and sled.

use std::sync::Arc;

use incidentd::chat::service::{ChatEvent, ChatService};
use incidentd::config::Config;
use incidentd::domain::alert::Platform;
use incidentd::domain::incident::{EventKind, IncidentId};
use incidentd::domain::policy::Actor;
use incidentd::engine::runner::Engine;
use incidentd::ingest::ChatAttachment;
use incidentd::ports::{ChatBody, Store, SystemClock, ThreadRef};
use incidentd::store::SledStore;

const CFG: &str = r#"
[[playbooks]]
id = "orch"
title = "Orchestration"
kinds = ["orchestration_failure"]
[[playbooks.actions]]
id = "restart"
title = "Restart agent"
run = { type = "command", argv = ["/bin/true"] }
[policy.P1]
approvers = ["slack:UAPPROVER"]
"#;

fn rig(dir: &std::path::Path) -> (ChatService, Arc<dyn Store>, std::thread::JoinHandle<()>) {
    let store: Arc<dyn Store> = Arc::new(SledStore::open(dir).unwrap());
    let cfg = Arc::new(Config::from_toml(CFG, &|_| None).unwrap());
    let (engine, _notes, writer) = Engine::start(
        store.clone(),
        cfg.clone(),
        Arc::new(SystemClock),
        vec!["slack".into()],
    )
    .unwrap();
    let svc = ChatService::new(
        engine,
        store.clone(),
        cfg,
        Arc::new(incidentd::app::PlaybookExecutor::new("kubectl")),
        Platform::Slack,
        "slack",
        ["CALERTS".to_string()],
    );
    (svc, store, writer)
}

fn user(id: &str) -> Actor {
    Actor::new(Platform::Slack, id)
}

/// What Alertmanager's `slack_configs` posts into an alert channel.
fn am_message(channel: &str, ts: &str, title: &str) -> ChatEvent {
    ChatEvent::Message {
        channel: channel.into(),
        message_id: ts.into(),
        thread_id: None,
        author: user("BALERTMANAGER"),
        from_bot: true,
        bot_user: Some("UINCIDENTD".into()),
        text: String::new(),
        attachments: vec![ChatAttachment {
            title: Some(title.into()),
            title_link: Some("http://am:9093/#/alerts".into()),
            text: Some("*Alert:* Planner agent deadlock - `critical`\n*Description:* planner stuck in a retry loop\n*Details:*\n• *alertname:* `AgentDeadlock`\n• *service:* `planner`\n• *severity:* `critical`".into()),
            color: Some("danger".into()),
            ..Default::default()
        }],
        embeds: vec![],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alert_channel_messages_open_and_update_one_incident() {
    let dir = tempfile::tempdir().unwrap();
    let (svc, store, _w) = rig(dir.path());
    assert_eq!(
        svc.handle(am_message(
            "CALERTS",
            "1.1",
            "[FIRING:1] AgentDeadlock (planner critical)"
        ))
        .await,
        None
    );
    assert_eq!(
        svc.handle(am_message(
            "CALERTS",
            "1.2",
            "[FIRING:1] AgentDeadlock (planner critical)"
        ))
        .await,
        None
    );
    // The same message elsewhere is not an alert.
    svc.handle(am_message("CRANDOM", "1.3", "[FIRING:1] Other (x)"))
        .await;
    let all = store.list_incidents(&Default::default()).unwrap();
    assert_eq!(all.len(), 1);
    let inc = &all[0];
    assert_eq!(inc.alert_count, 2);
    assert_eq!(inc.kind, "orchestration_failure");
    assert_eq!(inc.severity.as_str(), "P1");
    let origin = inc.origin.as_ref().unwrap();
    assert_eq!(
        (origin.channel.as_str(), origin.message_id.as_str()),
        ("CALERTS", "1.1")
    );
    // Resolved message clears it.
    svc.handle(am_message(
        "CALERTS",
        "1.4",
        "[RESOLVED] AgentDeadlock (planner critical)",
    ))
    .await;
    let inc = store.get_incident(inc.id).unwrap().unwrap();
    assert_eq!(
        inc.alert_status,
        incidentd::domain::alert::AlertStatus::Resolved
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thread_replies_buttons_and_commands() {
    let dir = tempfile::tempdir().unwrap();
    let (svc, store, _w) = rig(dir.path());
    svc.handle(am_message(
        "CALERTS",
        "1.1",
        "[FIRING:1] AgentDeadlock (planner critical)",
    ))
    .await;
    let id = IncidentId(1);
    // The outbox posted the card as a thread under the alert message.
    let card = store.outbox_pending("slack", 10).unwrap().remove(0);
    // Stored as "post the card as the incident is when it leaves".
    assert_eq!(card.body, ChatBody::RenderCard { post: true });
    let thread = ThreadRef {
        channel: "CALERTS".into(),
        message_id: "1.1".into(),
    };
    store.outbox_complete(&card, Some(&thread)).unwrap();

    // A human reply in the thread lands on the timeline; a bot's does not.
    let reply = |author: &str, from_bot: bool, text: &str| ChatEvent::Message {
        channel: "CALERTS".into(),
        message_id: format!("2.{}", text.len()),
        thread_id: Some("1.1".into()),
        author: user(author),
        from_bot,
        bot_user: Some("UINCIDENTD".into()),
        text: text.into(),
        attachments: vec![],
        embeds: vec![],
    };
    assert_eq!(
        svc.handle(reply("UBOB", false, "deploy 42 looks bad"))
            .await,
        None
    );
    assert_eq!(svc.handle(reply("BOTHER", true, "beep")).await, None);
    let notes: Vec<String> = store
        .timeline(id)
        .unwrap()
        .into_iter()
        .filter_map(|e| match e.kind {
            EventKind::Note { text } => Some(text),
            _ => None,
        })
        .collect();
    assert_eq!(notes, ["deploy 42 looks bad"]);

    // A non-approver's click: refused, privately, and recorded.
    let click = |who: &str, action: &str| ChatEvent::Button {
        actor: user(who),
        action_id: action.into(),
    };
    let r = svc
        .handle(click("UEVE", "approve:INC-1:restart"))
        .await
        .unwrap();
    assert!(r.ephemeral);
    assert!(r.text.contains("not an authorized approver"), "{}", r.text);
    assert!(store
        .timeline(id)
        .unwrap()
        .iter()
        .any(|e| matches!(e.kind, EventKind::ApprovalRefused { .. })));
    // The approver's click counts.
    let r = svc
        .handle(click("UAPPROVER", "approve:INC-1:restart"))
        .await
        .unwrap();
    assert!(
        r.text.contains("queued") || r.text.contains("recorded"),
        "{}",
        r.text
    );
    assert!(store.execution("INC-1:restart").unwrap().is_some());
    // A double click is refused.
    let r = svc
        .handle(click("UAPPROVER", "approve:INC-1:restart"))
        .await
        .unwrap();
    assert!(
        r.ephemeral && r.text.contains("already been decided"),
        "{}",
        r.text
    );
    // Preview is read-only.
    let r = svc
        .handle(click("UEVE", "preview:INC-1:restart"))
        .await
        .unwrap();
    assert!(r.ephemeral);
    assert!(r.text.contains("Runs: `/bin/true`"), "{}", r.text);
    assert!(r.text.contains("from: slack:UAPPROVER"), "{}", r.text);
    let r = svc.handle(click("UEVE", "nonsense")).await.unwrap();
    assert!(r.ephemeral && r.text.contains("not one of ours"));

    // Commands.
    let cmd = |text: &str| ChatEvent::Command {
        actor: user("UBOB"),
        text: text.into(),
    };
    let r = svc.handle(cmd("list")).await.unwrap();
    assert!(r.ephemeral && r.text.contains("`INC-1` P1"), "{}", r.text);
    let r = svc.handle(cmd("status INC-1")).await.unwrap();
    assert!(
        r.text.contains("Orchestration failure") && r.text.contains("repair < 15 min"),
        "{}",
        r.text
    );
    let r = svc.handle(cmd("status INC-7")).await.unwrap();
    assert_eq!(r.text, "INC-7 does not exist");
    // UBOB is not a responder for P1: refused, privately.
    let r = svc.handle(cmd("ack INC-1")).await.unwrap();
    assert!(
        r.ephemeral && r.text.contains("not a responder for P1"),
        "{}",
        r.text
    );
    let cmd = |text: &str| ChatEvent::Command {
        actor: user("UAPPROVER"),
        text: text.into(),
    };
    let r = svc.handle(cmd("ack INC-1")).await.unwrap();
    assert!(!r.ephemeral, "state changed: the answer is public");
    assert_eq!(r.text, "INC-1 acknowledged.");
    let r = svc.handle(cmd("ack INC-1")).await.unwrap();
    assert!(r.ephemeral && r.text.contains("already acknowledged"));
    let r = svc.handle(cmd("frobnicate")).await.unwrap();
    assert!(r.ephemeral && r.text.contains("/incident help"));
    let r = svc
        .handle(cmd("resolve INC-1 fixed by restart"))
        .await
        .unwrap();
    assert_eq!(r.text, "INC-1 resolved.");
    let r = svc.handle(cmd("list")).await.unwrap();
    assert!(r.text.contains("No open incidents"));
    let r = svc.handle(cmd("timeline INC-1")).await.unwrap();
    assert!(
        r.text.contains("Acknowledged by slack:UAPPROVER"),
        "{}",
        r.text
    );
    assert!(
        r.text.contains("slack:UBOB: deploy 42 looks bad"),
        "{}",
        r.text
    );
    let r = svc.handle(cmd("report INC-1")).await.unwrap();
    assert!(
        r.text.starts_with("# Post-incident report: INC-1"),
        "{}",
        r.text
    );
    assert!(r.text.contains("## Root cause"));
    let r = svc.handle(cmd("stats 30d")).await.unwrap();
    assert!(
        r.text.contains("last 30 days") && r.text.contains("1 incidents"),
        "{}",
        r.text
    );
}
