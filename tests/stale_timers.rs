//! A timer that was disarmed, or armed again for a later time, must not act when its old time
//! comes. A flapping alert arms "resolve after the quiet period" at every clear and disarms it
//! at every re-fire; the timer task still holds the first clear's time. When that time came,
//! the incident resolved although its alert had been clear for less than the quiet period.
//! Driven through the real app by an injected clock (no sleeping): the timer task looks at the
//! clock again whenever a decision arms a timer, here a second alert's.

mod support;

use std::sync::{Arc, Mutex};

use chrono::{Duration, TimeZone, Utc};
use incidentd::domain::incident::IncidentId;
use incidentd::ports::Delivery;
use support::{alertmanager, ManualClock, TestApp};

const CONFIG: &str = r#"
[engine]
card_coalesce_seconds = 0
resolve_after_clear_seconds = 600
flap_window_seconds = 3600

[severity.P2]
detect_seconds = 86400
repair_seconds = 86400
"#;

async fn send(app: &TestApp, status: &str, name: &str) {
    let (s, body) = app
        .post_json(
            "/api/v1/alerts/alertmanager",
            &alertmanager(status, &[(name, "checkout", "warning", status)]),
        )
        .await;
    assert_eq!(s, 200, "{body}");
}

async fn status(app: &TestApp, id: &str) -> serde_json::Value {
    let (s, inc) = app.get(&format!("/api/v1/incidents/{id}")).await;
    assert_eq!(s, 200, "{inc}");
    inc
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flapping_alert_resolves_a_quiet_period_after_its_last_clear_not_its_first() {
    let dir = tempfile::tempdir().unwrap();
    let t0 = Utc.with_ymd_and_hms(2026, 12, 1, 9, 0, 0).unwrap();
    let clock = Arc::new(ManualClock(Mutex::new(t0)));
    let set = |secs: i64| *clock.0.lock().unwrap() = t0 + Duration::seconds(secs);
    let app = TestApp::start_with_clock(dir.path(), CONFIG, clock.clone()).await;

    send(&app, "firing", "CheckoutSlow").await; // INC-1
    set(10);
    send(&app, "resolved", "CheckoutSlow").await; // quiet period until 610
    set(20);
    send(&app, "firing", "CheckoutSlow").await; // fires again: no longer waiting
    set(30);
    send(&app, "resolved", "CheckoutSlow").await; // quiet period until 630

    // 615: the first clear's time has passed, the last one's has not. Another alert arms a
    // timer, which wakes the timer task at this time.
    set(615);
    send(&app, "firing", "DiskFull").await; // INC-2
    app.wait_chat(|d| {
        d.iter()
            .any(|r| r.incident == IncidentId(2) && matches!(r.body, Delivery::PostCard { .. }))
    })
    .await;
    // Any timer due by now has been handed to the engine: a third alert's decision is
    // committed after them (the timer task submits due timers before it looks for new ones).
    set(616);
    send(&app, "firing", "QueueBacklog").await; // INC-3
    app.wait_chat(|d| {
        d.iter()
            .any(|r| r.incident == IncidentId(3) && matches!(r.body, Delivery::PostCard { .. }))
    })
    .await;
    let inc = status(&app, "INC-1").await;
    assert_eq!(
        inc["incident"]["status"], "open",
        "INC-1 resolved at 615 s although its alert cleared at 30 s (quiet period 600 s): {inc}"
    );

    // 631: the last clear's quiet period is over; the next wake-up resolves it.
    set(631);
    send(&app, "firing", "CacheMiss").await; // INC-4
    app.wait_chat(|d| {
        d.iter().any(|r| {
            r.incident == IncidentId(1)
                && matches!(&r.body, Delivery::Note { text, .. } if text.contains("INC-1 resolved: the alert stayed clear"))
        })
    })
    .await;
    let inc = status(&app, "INC-1").await;
    assert_eq!(inc["incident"]["status"], "resolved", "{inc}");
    app.stop().await;
}
