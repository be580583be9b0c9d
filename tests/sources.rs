//! One incident per fingerprint across sources: the same alert arriving by webhook and as a
//! message in an alert channel updates one incident. Runs the real engine on a real sled store.

use std::sync::Arc;

use incidentd::config::Config;
use incidentd::domain::alert::{AlertStatus, Platform};
use incidentd::engine::runner::Engine;
use incidentd::engine::Input;
use incidentd::ingest::{decode_alertmanager, parse_chat_message, ChatEmbed, ChatMessage};
use incidentd::ports::{Store, SystemClock};
use incidentd::store::SledStore;

fn webhook(status: &str) -> Vec<u8> {
    serde_json::json!({
        "version": "4", "status": status, "receiver": "incidentd", "groupKey": "k",
        "groupLabels": {}, "commonLabels": {}, "commonAnnotations": {}, "externalURL": "http://am:9093",
        "alerts": [{
            "status": status,
            "labels": { "alertname": "HighErrorRate", "service": "api", "severity": "critical" },
            "annotations": { "summary": "Error rate above 5%" },
            "startsAt": "2026-11-29T12:00:00Z", "endsAt": "0001-01-01T00:00:00Z",
            "generatorURL": "http://prometheus:9090/graph", "fingerprint": "d2a8e3c1b0f4a5b6"
        }]
    })
    .to_string()
    .into_bytes()
}

/// What Alertmanager's default `discord_configs` template posts for the same alert.
fn discord_message(prefix: &str, id: &str) -> ChatMessage {
    ChatMessage {
        platform: Platform::Discord,
        channel: "1100".into(),
        message_id: id.into(),
        text: String::new(),
        attachments: vec![],
        embeds: vec![ChatEmbed {
            title: Some(format!("{prefix} HighErrorRate (api critical)")),
            url: Some("http://am:9093/#/alerts".into()),
            description: Some(
                "Alerts Firing:\nLabels:\n - alertname = HighErrorRate\n - service = api\n - severity = critical\nAnnotations:\n - summary = Error rate above 5%\nSource: http://prometheus:9090/graph\n"
                    .into(),
            ),
            color: Some(0xe01e5a),
            fields: vec![],
        }],
        from_bot: true,
        ..Default::default()
    }
}

#[tokio::test]
async fn webhook_and_chat_message_of_the_same_alert_share_one_incident() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(SledStore::open(dir.path()).unwrap());
    let cfg = Arc::new(Config::builtin());
    let (engine, _notes, _writer) = Engine::start(
        store.clone(),
        cfg,
        Arc::new(SystemClock),
        vec!["console".into()],
    )
    .unwrap();

    let hook = decode_alertmanager(&webhook("firing")).unwrap().remove(0);
    let chat = parse_chat_message(&discord_message("[FIRING:1]", "m1")).expect("an alert");
    assert_eq!(chat.fingerprint, hook.fingerprint);

    let first = engine.submit_one(Input::Alert(hook)).await.unwrap();
    assert!(first.created);
    let second = engine.submit_one(Input::Alert(chat)).await.unwrap();
    assert!(!second.created);
    assert_eq!(second.incident, first.incident);
    let inc = store
        .get_incident(first.incident.unwrap())
        .unwrap()
        .unwrap();
    assert_eq!(inc.alert_count, 2);

    // The chat message saying it resolved clears the same incident.
    let resolved = parse_chat_message(&discord_message("[RESOLVED]", "m2")).unwrap();
    assert_eq!(resolved.status, AlertStatus::Resolved);
    let r = engine.submit_one(Input::Alert(resolved)).await.unwrap();
    assert_eq!(r.incident, first.incident);
    let inc = store
        .get_incident(first.incident.unwrap())
        .unwrap()
        .unwrap();
    assert_eq!(inc.alert_status, AlertStatus::Resolved);
    // The store has exactly one incident.
    let all = store
        .list_incidents(&incidentd::ports::IncidentFilter::default())
        .unwrap();
    assert_eq!(all.len(), 1);
}

/// A store written before incidents were groups keeps its open incidents under the alert's
/// fingerprint: a repeat of that alert still updates it, and its clear still clears it.
#[tokio::test]
async fn an_incident_opened_before_grouping_still_gets_its_repeats_and_clear() {
    let dir = tempfile::tempdir().unwrap();
    let hook = decode_alertmanager(&webhook("firing")).unwrap().remove(0);
    {
        let store = SledStore::open(dir.path()).unwrap();
        // As the previous version stored it: no `group`, keyed by the alert's fingerprint.
        let legacy: incidentd::domain::incident::Incident =
            serde_json::from_value(serde_json::json!({
                "id": 1, "fingerprint": hook.fingerprint, "title": "HighErrorRate (api)",
                "source": "alertmanager", "severity": "P1", "kind": "unclassified",
                "status": "open", "alert_status": "firing", "labels": hook.labels,
                "annotations": {}, "links": [], "opened_at": "2026-11-29T12:00:00Z",
                "last_seen_at": "2026-11-29T12:00:00Z", "alert_count": 1, "timeline_len": 0
            }))
            .unwrap();
        assert!(legacy.group.is_none());
        store
            .commit(&incidentd::ports::WriteSet {
                incidents: vec![legacy],
                fingerprints: vec![(
                    hook.fingerprint.clone(),
                    Some(incidentd::domain::incident::IncidentId(1)),
                )],
                next_id: Some(2),
                ..Default::default()
            })
            .unwrap();
        store.flush().unwrap();
    }
    let store: Arc<dyn Store> = Arc::new(SledStore::open(dir.path()).unwrap());
    let (engine, _notes, _writer) = Engine::start(
        store.clone(),
        Arc::new(Config::builtin()),
        Arc::new(SystemClock),
        vec!["console".into()],
    )
    .unwrap();
    let r = engine.submit_one(Input::Alert(hook)).await.unwrap();
    assert!(!r.created);
    assert_eq!(r.incident.map(|i| i.0), Some(1));
    let resolved = decode_alertmanager(&webhook("resolved")).unwrap().remove(0);
    let r = engine.submit_one(Input::Alert(resolved)).await.unwrap();
    assert_eq!(r.incident.map(|i| i.0), Some(1));
    let inc = store
        .get_incident(incidentd::domain::incident::IncidentId(1))
        .unwrap()
        .unwrap();
    assert_eq!(inc.alert_count, 2);
    assert_eq!(inc.alert_status, AlertStatus::Resolved);
}
