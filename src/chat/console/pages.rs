//! The console's HTML, rendered on the server with maud (compiled templates; every interpolated
//! value is HTML-escaped). Pages use real forms and buttons, so they work with the keyboard and
//! without JavaScript; `console.js` only adds live updates and in-place answers.

use chrono::{DateTime, Utc};
use maud::{html, Markup, DOCTYPE};

use super::stats::{bar_chart, human_duration, Stats};
use super::{ChannelMessage, ThreadItem, ALERT_CHANNEL};
use crate::domain::alert::AlertStatus;
use crate::domain::card::{ButtonAction, ButtonStyle, IncidentCard};
use crate::domain::incident::{Incident, TimelineEvent, ALL_STATUSES};
use crate::domain::report::Report;
use crate::domain::severity::{human_seconds, ALL};
use crate::ports::{Execution, ExecutionStatus};

/// Which top-level page is shown (for the navigation's `aria-current`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Nav {
    Alerts,
    Incidents,
    Stats,
}

/// The logged-in user, as pages need it.
pub struct Viewer<'a> {
    pub user: &'a str,
    pub csrf: &'a str,
}

fn ts(t: DateTime<Utc>) -> Markup {
    html! { time datetime=(t.to_rfc3339()) { (t.format("%Y-%m-%d %H:%M:%S UTC")) } }
}

/// Chat text: `code` spans as in Slack, everything else as text.
pub fn rich(text: &str) -> Markup {
    html! {
        @for (i, part) in text.split('`').enumerate() {
            @if i % 2 == 1 { code { (part) } } @else { (part) }
        }
    }
}

/// Only web links are clickable: a `javascript:` or `data:` link from an alert stays text.
fn web_url(url: &str) -> Option<&str> {
    let lower = url.trim().to_ascii_lowercase();
    (lower.starts_with("https://") || lower.starts_with("http://")).then_some(url.trim())
}

pub fn layout(title: &str, viewer: Option<&Viewer>, nav: Option<Nav>, body: Markup) -> Markup {
    let item = |n: Nav, href: &str, label: &str| {
        html! {
            li { a href=(href) aria-current=[(nav == Some(n)).then_some("page")] { (label) } }
        }
    };
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                @if let Some(v) = viewer { meta name="csrf-token" content=(v.csrf); }
                title { (title) " · incidentd" }
                link rel="stylesheet" href="/console/assets/console.css";
                script src="/console/assets/console.js" defer {}
            }
            body {
                a.skip href="#main" { "Skip to content" }
                header.top {
                    span.brand { "incidentd" }
                    @if let Some(v) = viewer {
                        nav aria-label="Console" {
                            ul {
                                (item(Nav::Alerts, "/console/alerts", "Alert channel"))
                                (item(Nav::Incidents, "/console/incidents", "Incidents"))
                                (item(Nav::Stats, "/console/stats", "Stats"))
                            }
                        }
                        form.logout method="post" action="/console/logout" {
                            input type="hidden" name="csrf" value=(v.csrf);
                            span.who { "Signed in as " strong { (v.user) } }
                            " "
                            button.btn type="submit" { "Log out" }
                        }
                    }
                }
                main #main tabindex="-1" { (body) }
            }
        }
    }
}

pub fn login(error: Option<&str>) -> Markup {
    layout(
        "Log in",
        None,
        None,
        html! {
            h1 { "Log in to the incidentd console" }
            @if let Some(e) = error { p.error role="alert" { (e) } }
            form.login method="post" action="/console/login" {
                label for="token" { "Login token" }
                input #token type="password" name="token" autocomplete="off" required autofocus;
                button.btn.primary type="submit" { "Log in" }
            }
            p.hint {
                "Tokens come from the " code { "[[console.users]]" } " config. On a first local run, "
                "incidentd prints a one-click login link on its standard error."
            }
        },
    )
}

fn button_class(style: ButtonStyle) -> &'static str {
    match style {
        ButtonStyle::Primary => "btn primary",
        ButtonStyle::Danger => "btn danger",
        ButtonStyle::Default => "btn",
    }
}

/// The incident card: the same facts and buttons Slack and Discord show.
pub fn card(c: &IncidentCard, csrf: &str) -> Markup {
    let id = c.incident.to_string();
    let alert = match c.alert_status {
        AlertStatus::Firing => "firing",
        AlertStatus::Resolved => "cleared",
    };
    html! {
        div.card id=(format!("card-{id}")) data-status=(c.status.as_str()) {
            div.card-head {
                span class=(format!("sev sev-{}", c.severity)) { (c.severity) }
                span class=(format!("status st-{}", c.status.as_str())) { (c.status.label()) }
                h3 id=(format!("title-{id}")) {
                    a href=(format!("/console/incidents/{id}")) { (id) } " — " (c.title)
                }
            }
            @if let Some(d) = &c.description { p.desc { (d) } }
            dl.facts {
                div { dt { "Kind" } dd { (c.kind_name) } }
                div { dt { "Alert" } dd { (alert) ", seen " (c.alert_count) "×" } }
                @if let Some(g) = &c.alerts { div { dt { "Group" } dd { (g) } } }
                div { dt { "Targets" } dd {
                    "detect < " (human_seconds(c.targets.detect_seconds))
                    ", repair < " (human_seconds(c.targets.repair_seconds))
                    "; " (c.targets.approval.label())
                } }
                div { dt { "Opened" } dd { (ts(c.opened_at)) } }
                div { dt { "Last seen" } dd { (ts(c.last_seen_at)) } }
                @if let Some(a) = &c.acknowledged_by { div { dt { "Acknowledged by" } dd { (a) } } }
                @if let Some(p) = &c.playbook { div { dt { "Playbook" } dd { (p) } } }
            }
            @if !c.links.is_empty() {
                ul.links aria-label="Links" {
                    @for l in &c.links {
                        li {
                            @if let Some(u) = web_url(&l.url) {
                                a href=(u) rel="noopener noreferrer" target="_blank" { (l.title) }
                            } @else {
                                (l.title) ": " code { (l.url) }
                            }
                        }
                    }
                }
            }
            @if !c.actions.is_empty() {
                table.actions {
                    caption { "Recommended actions" }
                    thead { tr { th scope="col" { "Action" } th scope="col" { "Runs" } th scope="col" { "Status" } th scope="col" { "Approvals" } } }
                    tbody {
                        @for a in &c.actions {
                            tr {
                                th scope="row" { (a.title) @if a.auto { " (auto)" } }
                                td { code { (a.summary) } }
                                td { (format!("{:?}", a.status).to_lowercase()) }
                                td { (a.approvals) "/" (a.needed) }
                            }
                        }
                    }
                }
            }
            @if !c.buttons.is_empty() {
                form.buttons method="post" action="/console/button" data-ajax aria-label=(format!("Actions on {id}")) {
                    input type="hidden" name="csrf" value=(csrf);
                    @for b in &c.buttons {
                        button type="submit" name="action_id" value=(b.action.encode()) class=(button_class(b.style)) { (b.label) }
                        @if let ButtonAction::Reject(i, a) = &b.action {
                            @let title = c.actions.iter().find(|x| &x.id == a).map_or(a.as_str(), |x| x.title.as_str());
                            button type="submit" name="action_id" value=(ButtonAction::Preview(*i, a.clone()).encode()) class="btn" { "Preview: " (title) }
                        }
                    }
                }
            }
            p.ephemeral role="status" aria-live="polite" hidden {}
        }
    }
}

pub fn reply(item: &ThreadItem) -> Markup {
    html! {
        li.reply.bot[item.author.is_none()] {
            span.author { (item.author.as_deref().unwrap_or("incidentd")) }
            " " span.at { (ts(item.at)) }
            @match &item.report {
                Some(r) => (report(r)),
                None => div.text { (rich(&item.text)) },
            }
        }
    }
}

/// The post-incident report as it appears in the thread: facts as a definition list, then
/// description, root cause, actions (who approved, how they ended), follow-ups and the timeline
/// (folded: it can be long). The console has no message limits, so nothing is cut.
pub fn report(r: &Report) -> Markup {
    let id = r.incident.to_string();
    html! {
        section.report-card aria-label=(r.heading()) {
            h3 { "📋 " (r.heading()) }
            dl.facts {
                @for (label, value) in r.facts() { div { dt { (label) } dd { (value) } } }
            }
            h4 { "Description" }
            p.desc { (r.description_text()) }
            h4 { "Root cause" }
            p.root-cause {
                @match &r.root_cause {
                    Some(rc) => {
                        strong { (rc.label) }
                        @if let Some(t) = &rc.text { " — " (t) }
                        @match &rc.confirmed_by {
                            Some(a) => { " (confirmed by " (a) ")" },
                            None => { " (" em { (rich(&r.confirm_hint())) } ")" },
                        }
                    },
                    None => { "Not determined." },
                }
            }
            h4 { "Actions taken" }
            @if r.actions.is_empty() {
                p { "None." }
            } @else {
                ul.actions {
                    @for a in &r.actions {
                        li {
                            code { (a.id) } " " (a.title) " — " strong { (a.status_label()) }
                            ", approved/decided by " (a.deciders())
                            @if let Some(o) = &a.outcome { ": " (o) }
                        }
                    }
                }
            }
            h4 { "Follow-ups" }
            @if r.followups.is_empty() {
                p { (rich(&r.followup_hint())) }
            } @else {
                ul.followups {
                    @for f in &r.followups {
                        li { "☐ " (f.text) @if let Some(o) = &f.owner { " — " (o) } }
                    }
                }
            }
            details.report-timeline {
                summary { "Timeline (" (r.timeline.len()) " events)" }
                @if r.timeline.is_empty() {
                    p { "Not available." }
                } @else {
                    ol {
                        @for e in &r.timeline {
                            li { (ts(e.at)) " " span.text { (rich(&e.text)) } }
                        }
                    }
                }
            }
            p.hint { "Markdown: " a href={ "/api/v1/incidents/" (id) "/report.md" } { "download" } }
        }
    }
}

/// An incident as a thread: its card, the replies, and a reply box.
pub fn thread(c: &IncidentCard, replies: &[ThreadItem], csrf: &str) -> Markup {
    let id = c.incident.to_string();
    html! {
        article.thread id=(format!("thread-{id}")) data-incident=(id) aria-labelledby=(format!("title-{id}")) {
            (card(c, csrf))
            ol.replies id=(format!("replies-{id}")) aria-label=(format!("Thread of {id}")) {
                @for r in replies { (reply(r)) }
            }
            form.reply-form method="post" action="/console/post" data-ajax data-reset {
                input type="hidden" name="csrf" value=(csrf);
                input type="hidden" name="thread" value=(id);
                label for=(format!("reply-{id}")) { "Reply in " (id) "'s thread" }
                input id=(format!("reply-{id}")) type="text" name="text" required autocomplete="off";
                button.btn type="submit" { "Reply" }
            }
        }
    }
}

pub fn channel_message(m: &ChannelMessage) -> Markup {
    html! {
        li.msg {
            span.author { (m.author) } " " span.at { (ts(m.at)) }
            div.text { (m.text) }
        }
    }
}

pub fn alerts_page(
    v: &Viewer,
    threads: &[(IncidentCard, Vec<ThreadItem>)],
    channel: &[ChannelMessage],
) -> Markup {
    layout(
        "Alert channel",
        Some(v),
        Some(Nav::Alerts),
        html! {
            div.title-row {
                h1 { "#" (ALERT_CHANNEL) }
                p #live.live role="status" { "connecting…" }
            }
            section.compose aria-labelledby="compose-h" {
                h2 #compose-h { "Post to the channel" }
                form #compose method="post" action="/console/post" data-ajax data-reset {
                    input type="hidden" name="csrf" value=(v.csrf);
                    label for="compose-text" {
                        "Paste an alert message (it opens an incident as in Slack), or type an "
                        code { "/incident" } " command such as " code { "/incident list" } "."
                    }
                    textarea #compose-text name="text" rows="2" required
                        placeholder="[FIRING:1] HighErrorRate (api critical)" {}
                    button.btn.primary type="submit" { "Send" }
                    pre.ephemeral role="status" aria-live="polite" hidden {}
                }
            }
            details.channel open[!channel.is_empty()] {
                summary { "Channel messages" }
                ol #channel { @for m in channel { (channel_message(m)) } }
            }
            section aria-labelledby="threads-h" {
                h2 #threads-h { "Incidents, newest first" }
                @if threads.is_empty() {
                    p #empty { "No incidents yet. Send an alert to a webhook, or paste one above." }
                }
                div #threads data-live="threads" {
                    @for (c, r) in threads { (thread(c, r, v.csrf)) }
                }
            }
        },
    )
}

/// The incident list's filters as given.
#[derive(Debug, Clone, Default, serde::Deserialize)]
pub struct ListFilter {
    pub status: Option<String>,
    pub severity: Option<String>,
    pub kind: Option<String>,
    pub q: Option<String>,
}

pub fn incidents_page(
    v: &Viewer,
    list: &[Incident],
    f: &ListFilter,
    kinds: &[(String, String)],
    kind_name: &dyn Fn(&str) -> String,
    error: Option<&str>,
) -> Markup {
    let status = f.status.as_deref().unwrap_or("all");
    let sev = f.severity.as_deref().unwrap_or("");
    let kind = f.kind.as_deref().unwrap_or("");
    html! {
        (layout("Incidents", Some(v), Some(Nav::Incidents), html! {
            h1 { "Incidents" }
            form.filters method="get" action="/console/incidents" role="search" aria-label="Filter incidents" {
                div { label for="f-status" { "Status" }
                    select #f-status name="status" {
                        @for (val, label) in [("all", "All"), ("open", "Open (any active state)"), ("resolved", "Resolved or closed")] {
                            option value=(val) selected[status == val] { (label) }
                        }
                        @for st in ALL_STATUSES {
                            option value=(st.as_str()) selected[status == st.as_str()] { (st.label()) }
                        }
                    }
                }
                div { label for="f-sev" { "Severity" }
                    select #f-sev name="severity" {
                        option value="" selected[sev.is_empty()] { "Any" }
                        @for s in ALL { option value=(s.as_str()) selected[sev == s.as_str()] { (s) } }
                    }
                }
                div { label for="f-kind" { "Kind" }
                    select #f-kind name="kind" {
                        option value="" selected[kind.is_empty()] { "Any" }
                        @for (id, name) in kinds { option value=(id) selected[kind == id] { (name) } }
                    }
                }
                div { label for="f-q" { "Text" }
                    input #f-q type="search" name="q" value=(f.q.as_deref().unwrap_or("")) placeholder="title, label, id…";
                }
                button.btn.primary type="submit" { "Filter" }
            }
            @if let Some(e) = error { p.error role="alert" { (e) } }
            p { (list.len()) " incident" @if list.len() != 1 { "s" } }
            div data-live="list" {
                table.list {
                    thead { tr {
                        th scope="col" { "Incident" } th scope="col" { "Severity" } th scope="col" { "Status" }
                        th scope="col" { "Kind" } th scope="col" { "Title" } th scope="col" { "Seen" } th scope="col" { "Opened" }
                    } }
                    tbody {
                        @for i in list {
                            tr {
                                th scope="row" { a href=(format!("/console/incidents/{}", i.id)) { (i.id) } }
                                td { span class=(format!("sev sev-{}", i.severity)) { (i.severity) } }
                                td { span class=(format!("status st-{}", i.status.as_str())) { (i.status.label()) } }
                                td { (kind_name(&i.kind)) }
                                td { (i.title) }
                                td { (i.alert_count) "×" }
                                td { (ts(i.opened_at)) }
                            }
                        }
                    }
                }
            }
        }))
    }
}

fn exec_status(s: ExecutionStatus) -> &'static str {
    match s {
        ExecutionStatus::Queued => "queued",
        ExecutionStatus::Started => "started",
        ExecutionStatus::Succeeded => "succeeded",
        ExecutionStatus::Failed => "failed",
        ExecutionStatus::Interrupted => "interrupted (needs a human)",
    }
}

pub fn incident_page(
    v: &Viewer,
    c: &IncidentCard,
    inc: &Incident,
    timeline: &[TimelineEvent],
    executions: &[Execution],
    replies: &[ThreadItem],
    report: &str,
) -> Markup {
    let id = inc.id.to_string();
    layout(
        &id,
        Some(v),
        Some(Nav::Incidents),
        html! {
            p.crumbs { a href="/console/incidents" { "Incidents" } " › " (id) }
            h1 { (id) " — " (inc.title) }
            div data-live-incident=(id) {
                (thread(c, replies, v.csrf))
                section aria-labelledby="tl-h" {
                    h2 #tl-h { "Timeline" }
                    ol.timeline {
                        @for e in timeline {
                            li { (ts(e.at)) " " span.text { (rich(&e.describe())) } }
                        }
                    }
                }
                section aria-labelledby="ex-h" {
                    h2 #ex-h { "Executions" }
                    @if executions.is_empty() {
                        p { "No action has been approved for execution." }
                    } @else {
                        table.list {
                            thead { tr { th scope="col" { "Action" } th scope="col" { "Key" } th scope="col" { "Status" } th scope="col" { "Queued" } th scope="col" { "Updated" } } }
                            tbody {
                                @for x in executions {
                                    tr {
                                        th scope="row" { (x.action) }
                                        td { code { (x.key) } }
                                        td { (exec_status(x.status)) }
                                        td { (ts(x.created_at)) }
                                        td { (ts(x.updated_at)) }
                                    }
                                }
                            }
                        }
                        p.hint { "Each run's outcome line is on the timeline above." }
                    }
                }
                section aria-labelledby="rp-h" {
                    h2 #rp-h { "Post-incident report" }
                    p.hint {
                        "Markdown, as posted into the thread on resolution. "
                        a href={ "/api/v1/incidents/" (id) "/report.md" } { "Download" }
                    }
                    pre.report { (report) }
                }
                @if !inc.labels.is_empty() {
                    section aria-labelledby="lb-h" {
                        h2 #lb-h { "Labels" }
                        dl.labels { @for (k, val) in &inc.labels { div { dt { (k) } dd { (val) } } } }
                    }
                }
            }
        },
    )
}

pub fn stats_page(v: &Viewer, s: &Stats) -> Markup {
    let pct = |a: usize, b: usize| {
        (a * 100)
            .checked_div(b)
            .map_or("—".to_string(), |p| format!("{p}%"))
    };
    let open_resolved = vec![
        ("Open".to_string(), s.open),
        ("Resolved".to_string(), s.resolved),
    ];
    layout(
        "Stats",
        Some(v),
        Some(Nav::Stats),
        html! {
            h1 { "Stats" }
            div data-live="stats" {
                dl.figures {
                    div { dt { "Incidents" } dd { (s.total) } }
                    div { dt { "Open" } dd { (s.open) } }
                    div { dt { "Resolved" } dd { (s.resolved) } }
                    div { dt { abbr title="median time to acknowledge" { "MTTA" } " (median)" } dd { (s.mtta_seconds.map_or("—".into(), human_duration)) } }
                    div { dt { abbr title="median time to resolve" { "MTTR" } " (median)" } dd { (s.mttr_seconds.map_or("—".into(), human_duration)) } }
                    div { dt { "Resolved within repair target" } dd { (pct(s.within_repair_target.0, s.within_repair_target.1)) } }
                    div { dt { "Human intervention" } dd { (pct(s.human_intervention, s.total)) } }
                    div { dt { "Recurrences (alert back after resolution)" } dd { (s.recurrences) } }
                    div { dt { "Alert seen more than once" } dd { (s.repeated) } }
                }
                div.charts {
                    @for (title, rows) in [("Open vs resolved", &open_resolved), ("By severity", &s.by_severity), ("By status", &s.by_status), ("By kind", &s.by_kind)] {
                        figure {
                            figcaption { (title) }
                            (bar_chart(title, rows))
                        }
                    }
                }
            }
        },
    )
}

/// The answer to a form post when JavaScript is off.
pub fn answer_page(v: &Viewer, text: &str, back: &str) -> Markup {
    layout(
        "Answer",
        Some(v),
        None,
        html! {
            h1 { "incidentd says" }
            pre.ephemeral { (text) }
            p { a href=(back) { "Back" } }
        },
    )
}

pub fn not_found(v: &Viewer, what: &str) -> Markup {
    layout(
        "Not found",
        Some(v),
        None,
        html! { h1 { "Not found" } p { (what) } p { a href="/console/incidents" { "All incidents" } } },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::alert::Link;
    use crate::domain::incident::IncidentId;

    fn hostile_card() -> IncidentCard {
        let mut inc = crate::domain::incident::tests_support::incident();
        inc.id = IncidentId(3);
        inc.title = "<script>alert(1)</script>".into();
        inc.description = Some("\"quoted\" & <img src=x onerror=alert(2)>".into());
        inc.links = vec![
            Link {
                title: "<b>runbook</b>".into(),
                url: "javascript:alert(3)".into(),
            },
            Link {
                title: "graph".into(),
                url: "https://grafana.example/d?a=1&b=\"2\"".into(),
            },
        ];
        crate::domain::card::build_card(
            &inc,
            "Kind <i>",
            crate::domain::severity::Severity::P2.default_targets(),
            1,
            500,
        )
    }

    #[test]
    fn alert_text_is_escaped_everywhere() {
        let c = hostile_card();
        let html = thread(
            &c,
            &[ThreadItem {
                at: Utc::now(),
                author: Some("<svg onload=x>".into()),
                text: "`<script>x</script>` and </li>".into(),
                report: None,
            }],
            "tok\"en",
        )
        .into_string();
        assert!(!html.contains("<script>"), "{html}");
        assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
        assert!(!html.contains("<img"));
        assert!(!html.contains("<svg"));
        assert!(!html.contains("<b>runbook"));
        assert!(!html.contains("href=\"javascript:"), "{html}");
        assert!(html.contains("href=\"https://grafana.example/d?a=1&amp;b=&quot;2&quot;\""));
        assert!(html.contains("value=\"tok&quot;en\""));
        assert!(html.contains("Kind &lt;i&gt;"));
        assert!(html.contains("<code>&lt;script&gt;x&lt;/script&gt;</code>"));
    }

    #[test]
    fn reports_render_natively_in_the_thread_and_escaped() {
        let item = |r: &Report| ThreadItem {
            at: Utc::now(),
            author: None,
            text: r.heading(),
            report: Some(Box::new(r.clone())),
        };
        let small = crate::domain::report::samples::small();
        let html = reply(&item(&small)).into_string();
        for want in [
            "<li class=\"reply bot\">",
            "<section class=\"report-card\" aria-label=\"Post-incident report: INC-7 — Payments API 503\">",
            "<dt>Severity</dt><dd>P1</dd>",
            "<dt>Time to resolve</dt><dd>6 min 40 s</dd>",
            "<strong>External dependency</strong> — the card processor answered 503 (confirmed by slack:U2)",
            "<code>restart</code> Restart the API — <strong>Succeeded</strong>, approved/decided by slack:UAPPROVER: exit 0 in 1.2 s",
            "☐ add a circuit breaker — @bob",
            "<summary>Timeline (2 events)</summary>",
            "href=\"/api/v1/incidents/INC-7/report.md\"",
        ] {
            assert!(html.contains(want), "missing {want} in {html}");
        }
        let huge = crate::domain::report::samples::huge();
        let html = reply(&item(&huge)).into_string();
        assert!(
            !html.contains("<script>") && !html.contains("<b>"),
            "escaped"
        );
        assert!(html.contains("&lt;script&gt;x&lt;/script&gt;"));
        assert!(
            html.contains("event number 299 &amp; &lt;b&gt;"),
            "nothing is cut"
        );
        assert!(html.contains("follow-up 39 "));
    }

    #[test]
    fn card_has_real_buttons_with_preview_per_action() {
        let mut inc = crate::domain::incident::tests_support::incident();
        inc.actions.push(crate::domain::incident::ActionState {
            id: "restart".into(),
            title: "Restart".into(),
            auto: false,
            summary: "kubectl rollout restart".into(),
            status: crate::domain::incident::ActionStatus::Proposed,
            approvals: vec![],
            decided_by: None,
            decided_at: None,
        });
        let c = crate::domain::card::build_card(
            &inc,
            "K",
            crate::domain::severity::Severity::P2.default_targets(),
            1,
            100,
        );
        let html = card(&c, "t").into_string();
        for v in [
            "ack:INC-7",
            "approve:INC-7:restart",
            "reject:INC-7:restart",
            "preview:INC-7:restart",
            "escalate:INC-7",
            "resolve:INC-7",
        ] {
            assert!(
                html.contains(&format!(
                    "<button type=\"submit\" name=\"action_id\" value=\"{v}\""
                )),
                "{v}: {html}"
            );
        }
    }
}
