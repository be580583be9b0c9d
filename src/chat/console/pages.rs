//! The console's HTML, rendered on the server with maud (compiled templates; every interpolated
//! value is HTML-escaped). Pages use real forms and buttons, so they work with the keyboard and
//! without JavaScript; `console.js` only adds live updates and in-place answers.

use chrono::{DateTime, Utc};
use maud::{html, Markup, DOCTYPE};

use super::markdown;
use super::stats::{bar_chart, trend_chart, StatsView, WINDOWS};
use super::{ChannelMessage, ThreadItem, ALERT_CHANNEL};
use crate::domain::alert::AlertStatus;
use crate::domain::card::{ButtonStyle, IncidentCard};
use crate::domain::chart::{show_value, Chart};
use crate::domain::incident::{shown_timeline, Incident, Status, TimelineEvent, ALL_STATUSES};
use crate::domain::report::Report;
use crate::domain::severity::{human_seconds, ALL};
use crate::domain::stats::Ratio;
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

fn utc(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

/// A span of time as people say it: `40 s`, `12 min`, `1 h 5 min`, `2 d 3 h`. `console.js`
/// says it the same way when it updates the countdowns.
pub fn span(secs: i64) -> String {
    let s = secs.max(0);
    match s {
        0..60 => format!("{s} s"),
        60..3600 => format!("{} min", s / 60),
        3600..86_400 if s % 3600 < 60 => format!("{} h", s / 3600),
        3600..86_400 => format!("{} h {} min", s / 3600, (s % 3600) / 60),
        _ => format!("{} d {} h", s / 86_400, (s % 86_400) / 3600),
    }
}

/// What a card needs besides the card to say how long: the time it is rendered and when the
/// incident was acknowledged and resolved (the chat card does not carry them).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Times {
    pub now: DateTime<Utc>,
    pub acknowledged_at: Option<DateTime<Utc>>,
    pub resolved_at: Option<DateTime<Utc>>,
}

impl Times {
    pub fn of(inc: &Incident, now: DateTime<Utc>) -> Times {
        Times {
            now,
            acknowledged_at: inc.acknowledged_at,
            resolved_at: inc.resolved_at.filter(|_| !inc.status.is_active()),
        }
    }
}

/// "open for 12 min" / "resolved after 8 min", the absolute time as its title. An open one
/// carries its start for `console.js` to keep it current.
fn age(c: &IncidentCard, t: &Times) -> Markup {
    let opened = c.opened_at;
    match t.resolved_at.filter(|_| !c.status.is_active()) {
        Some(r) => html! {
            time.age datetime=(r.to_rfc3339()) title={ "opened " (utc(opened)) ", resolved " (utc(r)) } {
                "resolved after " (span((r - opened).num_seconds()))
            }
        },
        None => html! {
            time.age datetime=(opened.to_rfc3339()) title={ "opened " (utc(opened)) } data-since=(opened.to_rfc3339()) {
                "open for " (span((t.now - opened).num_seconds()))
            }
        },
    }
}

/// A countdown to a target (`what`: "acknowledge", "repair"), or how it went once done.
fn countdown(
    what: &str,
    opened: DateTime<Utc>,
    target_secs: u64,
    done: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Markup {
    let due = opened + chrono::Duration::seconds(target_secs as i64);
    let title = format!(
        "target {} after opening: by {}",
        span(target_secs as i64),
        utc(due)
    );
    match done {
        Some(d) => {
            let took = (d - opened).num_seconds();
            let verdict = if d <= due {
                "within target"
            } else {
                "target missed"
            };
            html! { span.target.done title=(title) { (what) (if what.ends_with('e') { "d" } else { "ed" }) " after " (span(took)) " (" (verdict) ")" } }
        }
        None if now <= due => html! {
            span.target.left title=(title) data-due=(due.to_rfc3339()) data-what=(what) {
                (span((due - now).num_seconds())) " left to " (what)
            }
        },
        None => html! {
            span.target.overdue title=(title) data-due=(due.to_rfc3339()) data-what=(what) {
                (what) " overdue by " (span((now - due).num_seconds()))
            }
        },
    }
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

/// The incident card: the same facts and buttons Slack and Discord show. A resolved or closed
/// card is compact: its head, how long it took, and the details folded.
pub fn card(c: &IncidentCard, csrf: &str, t: &Times) -> Markup {
    let id = c.incident.to_string();
    let alert = match c.alert_status {
        AlertStatus::Firing => "firing",
        AlertStatus::Resolved => "cleared",
    };
    let ended = matches!(c.status, Status::Resolved | Status::Closed);
    let details = html! {
        @if let Some(d) = &c.description { p.desc { (d) } }
        dl.facts {
            div { dt { "Kind" } dd { (c.kind_name) } }
            div { dt { "Alert" } dd { (alert) ", seen " (c.alert_count) "×" } }
            @if let Some(g) = &c.alerts { div { dt { "Group" } dd { (g) } } }
            @if let Some(st) = &c.storm { div.storm { dt { "Storm guard" } dd { (st) } } }
            @if let Some(st) = &c.storm_summary { div.storm { dt { "Storm" } dd { (st) } } }
            @if let Some(r) = &c.recurrence { div.recurrence { dt { "Recurrence" } dd { (r) } } }
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
        @if let Some(chart) = &c.chart { (metric_chart(chart)) }
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
    };
    html! {
        div.card.compact[ended] id=(format!("card-{id}")) data-status=(c.status.as_str()) {
            div.card-head {
                span class=(format!("sev sev-{}", c.severity)) { (c.severity) }
                span class=(format!("status st-{}", c.status.as_str())) { (c.status.label()) }
                h3 id=(format!("title-{id}")) {
                    a href=(format!("/console/incidents/{id}")) { (id) } " — " (c.title)
                }
                span.when { (age(c, t)) }
            }
            @if ended {
                p.clock {
                    (countdown("repair", c.opened_at, c.targets.repair_seconds, t.resolved_at.or(Some(t.now)), t.now))
                }
                details.more { summary { "Details" } (details) }
            } @else {
                p.clock {
                    (countdown("acknowledge", c.opened_at, c.targets.detect_seconds, t.acknowledged_at, t.now))
                    " · "
                    (countdown("repair", c.opened_at, c.targets.repair_seconds, None, t.now))
                }
                (details)
            }
            @if !c.buttons.is_empty() {
                form.buttons method="post" action="/console/button" data-ajax aria-label=(format!("Actions on {id}")) {
                    input type="hidden" name="csrf" value=(csrf);
                    @for b in &c.buttons {
                        button type="submit" name="action_id" value=(b.action.encode()) class=(button_class(b.style)) { (b.label) }
                    }
                }
            }
            div.ephemeral role="status" aria-live="polite" hidden {}
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
                // The bot writes Markdown; people's replies show as typed (code spans aside).
                None if item.author.is_none() => div.text.md { (markdown::render(&item.text)) },
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
            @if !r.evidence.is_empty() {
                ul.evidence aria-label="Evidence" {
                    @for e in &r.evidence { li { (e) } }
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
                            @if let Some(v) = &a.verification { "; " (v) }
                        }
                    }
                }
            }
            h4 { "Improvements" }
            @if r.followups.is_empty() {
                p { (rich(&r.followup_hint())) }
            } @else {
                ul.followups {
                    @for f in &r.followups {
                        li { (f.state.mark()) " " (f.number()) (f.text) @if let Some(o) = &f.owner { " — " (o) } (f.state_suffix()) }
                    }
                }
            }
            // The follow-ups' buttons (sent with the page's CSRF token by console.js).
            form.buttons method="post" action="/console/button" data-ajax aria-label=(format!("Follow-ups of {id}")) {
                @for b in r.buttons() {
                    button type="submit" name="action_id" value=(b.action.encode()) class=(button_class(b.style)) { (b.label) }
                }
                div.ephemeral role="status" aria-live="polite" hidden {}
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

/// The metric behind an incident (its card's chart) as an SVG line over the last 30 minutes,
/// with the threshold as a dashed line and the current value. Every text (the query comes
/// from the alert) goes through maud's escaping; the coordinates are numbers we computed.
pub fn metric_chart(c: &Chart) -> Markup {
    const W: f64 = 600.0;
    const H: f64 = 120.0;
    const PAD: f64 = 8.0;
    let pts: Vec<(f64, f64)> = c
        .points
        .iter()
        .copied()
        .filter(|p| p.1.is_finite())
        .collect();
    let (lo, hi) = pts
        .iter()
        .map(|p| p.1)
        .chain(c.threshold.filter(|t| t.is_finite()))
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
            (lo.min(v), hi.max(v))
        });
    let (lo, hi) = if hi > lo {
        (lo, hi)
    } else {
        (lo - 1.0, lo + 1.0)
    };
    let (t0, t1) = (
        pts.first().map_or(0.0, |p| p.0),
        pts.last().map_or(1.0, |p| p.0),
    );
    let x = |t: f64| {
        if t1 > t0 {
            PAD + (t - t0) / (t1 - t0) * (W - 2.0 * PAD)
        } else {
            W - PAD
        }
    };
    let y = |v: f64| PAD + (hi - v) / (hi - lo) * (H - 2.0 * PAD);
    let line: Vec<String> = pts
        .iter()
        .map(|&(t, v)| format!("{:.1},{:.1}", x(t), y(v)))
        .collect();
    let now = c.current().map(show_value);
    let label = format!(
        "{}: now {}{}, last 30 min",
        c.query,
        now.as_deref().unwrap_or("no data"),
        c.threshold
            .map(|t| format!(", threshold {}", show_value(t)))
            .unwrap_or_default()
    );
    html! {
        figure.metric {
            svg class="chart metric" role="img" viewBox=(format!("0 0 {W} {H}")) width=(W) height=(H)
                aria-label=(label) {
                title { (label) }
                @if let Some(t) = c.threshold.filter(|t| t.is_finite()) {
                    line class="threshold" x1=(PAD) x2=(W - PAD) y1=(format!("{:.1}", y(t))) y2=(format!("{:.1}", y(t)))
                        stroke-dasharray="4 3" {}
                }
                polyline class="series" fill="none" points=(line.join(" ")) {}
            }
            figcaption {
                code { (c.query) }
                " — now " (now.as_deref().unwrap_or("no data"))
                @if let Some(t) = c.threshold { " · threshold " (show_value(t)) }
                " · last 30 min"
                @if c.series > 1 { " · highest of " (c.series) " series" }
            }
        }
    }
}

/// An incident as a thread: its card, the replies, and a reply box.
pub fn thread(c: &IncidentCard, replies: &[ThreadItem], csrf: &str, t: &Times) -> Markup {
    let id = c.incident.to_string();
    html! {
        article.thread id=(format!("thread-{id}")) data-incident=(id) aria-labelledby=(format!("title-{id}")) {
            (card(c, csrf, t))
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
    threads: &[(IncidentCard, Times, Vec<ThreadItem>)],
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
                    div.ephemeral role="status" aria-live="polite" hidden {}
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
                    @for (c, t, r) in threads { (thread(c, r, v.csrf, t)) }
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

/// What the incident page shows.
pub struct IncidentView<'a> {
    pub card: &'a IncidentCard,
    pub incident: &'a Incident,
    pub timeline: &'a [TimelineEvent],
    pub executions: &'a [Execution],
    pub replies: &'a [ThreadItem],
    /// The post-incident report's Markdown.
    pub report: &'a str,
    pub now: DateTime<Utc>,
}

pub fn incident_page(v: &Viewer, view: &IncidentView) -> Markup {
    let IncidentView {
        card: c,
        incident: inc,
        timeline,
        executions,
        replies,
        report,
        now,
    } = *view;
    let id = inc.id.to_string();
    layout(
        &id,
        Some(v),
        Some(Nav::Incidents),
        html! {
            p.crumbs { a href="/console/incidents" { "Incidents" } " › " (id) }
            h1 { (id) " — " (inc.title) }
            div data-live-incident=(id) {
                (thread(c, replies, v.csrf, &Times::of(inc, now)))
                section aria-labelledby="tl-h" {
                    h2 #tl-h { "Timeline" }
                    ol.timeline {
                        @for e in shown_timeline(timeline) {
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
                        "As posted into the thread on resolution. "
                        a href={ "/api/v1/incidents/" (id) "/report.md" } { "Download the Markdown" }
                    }
                    div.report.md { (markdown::render_shifted(report, 2)) }
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

/// A duration in seconds (f64, as the stats give them), or "—".
fn secs(v: Option<f64>) -> String {
    v.map_or("—".into(), |v| span(v.round() as i64))
}

fn percent(r: &Ratio) -> Markup {
    html! {
        (r.rate.map_or("—".into(), |v| format!("{:.0}%", v * 100.0)))
        " " span.parts { "(" (r.numerator) "/" (r.denominator) ")" }
    }
}

/// ✓ met, ✗ missed, or nothing to judge yet; said in words for screen readers.
fn verdict(met: Option<bool>) -> Markup {
    match met {
        Some(true) => html! { span.met title="target met" { "✓ met" } },
        Some(false) => html! { span.missed title="target missed" { "✗ missed" } },
        None => html! { span.na { "no data" } },
    }
}

pub fn stats_page(v: &Viewer, view: &StatsView) -> Markup {
    let s = &view.stats;
    let t = &s.targets;
    let pct = |r: f64| format!("{:.0}%", r * 100.0);
    let mins = |secs: f64| span(secs.round() as i64);
    let by_severity: Vec<(String, usize)> = ALL
        .iter()
        .map(|sev| {
            let k = sev.to_string();
            let n = s.by_severity.get(&k).copied().unwrap_or(0);
            (k, n)
        })
        .collect();
    layout(
        "Stats",
        Some(v),
        Some(Nav::Stats),
        html! {
            h1 { "Stats" }
            nav.windows aria-label="Window" {
                @for d in WINDOWS {
                    a.btn href=(format!("/console/stats?days={d}")) aria-current=[(d == view.days).then_some("page")] { (d) "d" }
                }
            }
            @if let Some(n) = &view.note { p.error role="alert" { (n) } }
            div data-live="stats" {
                p.window { "Last " (view.days) " days: " strong { (s.total) } " incidents opened, "
                    (s.open) " still open, " (s.resolved) " resolved. Definitions: docs/metrics.md." }
                table.outcomes {
                    caption { "Outcome numbers against their targets" }
                    thead { tr {
                        th scope="col" { "Measure" } th scope="col" { "Value" } th scope="col" { "Detail" }
                        th scope="col" { "Target" } th scope="col" { "Status" }
                    } }
                    tbody {
                        tr {
                            th scope="row" { abbr title="mean time to resolve, from opening" { "MTTR" } }
                            td.v { (secs(s.mttr.mean_seconds)) }
                            td { "median " (secs(s.mttr.median_seconds)) ", p90 " (secs(s.mttr.p90_seconds)) "; " (s.mttr.count) " resolved" }
                            td { "< " (mins(t.mttr_seconds)) }
                            td { (verdict(s.mttr.mean_seconds.map(|m| m < t.mttr_seconds))) }
                        }
                        tr {
                            th scope="row" { "MTTR from the alert's start" }
                            td.v { (secs(s.mttr_from_start.mean_seconds)) }
                            td { "median " (secs(s.mttr_from_start.median_seconds)) ", p90 " (secs(s.mttr_from_start.p90_seconds)) }
                            td { "—" }
                            td {}
                        }
                        tr {
                            th scope="row" { "MTTR without a human" }
                            td.v { (secs(s.mttr_automated.mean_seconds)) }
                            td { (s.mttr_automated.count) " incidents handled by incidentd alone" }
                            td { "< " (mins(t.mttr_automated_seconds)) }
                            td { (verdict(s.mttr_automated.mean_seconds.map(|m| m < t.mttr_automated_seconds))) }
                        }
                        tr {
                            th scope="row" { abbr title="mean time to acknowledge" { "MTTA" } }
                            td.v { (secs(s.mtta.mean_seconds)) }
                            td { "median " (secs(s.mtta.median_seconds)) ", p90 " (secs(s.mtta.p90_seconds)) "; " (s.mtta.count) " acknowledged" }
                            td { "per severity, below" }
                            td {}
                        }
                        tr {
                            th scope="row" { "Manual intervention" }
                            td.v { (percent(&s.manual_intervention)) }
                            td { "incidents a person acted on" }
                            td { "< " (pct(t.manual_intervention_rate)) }
                            td { (verdict(s.manual_intervention.rate.map(|r| r < t.manual_intervention_rate))) }
                        }
                        tr {
                            th scope="row" { "Auto-remediation success" }
                            td.v { (percent(&s.auto_remediation)) }
                            td { "automatic actions that succeeded" }
                            td { "—" }
                            td {}
                        }
                        tr {
                            th scope="row" { "RCA completion" }
                            td.v { (percent(&s.rca_completion)) }
                            td { "resolved incidents with a confirmed root cause" }
                            td { "≥ " (pct(t.rca_completion_rate)) }
                            td { (verdict(s.rca_completion.rate.map(|r| r >= t.rca_completion_rate))) }
                        }
                        tr {
                            th scope="row" { "Recurrence" }
                            td.v { (percent(&s.recurrence)) }
                            td { "incidents whose alert came back after a resolution" }
                            td { "< " (pct(t.recurrence_rate)) }
                            td { (verdict(s.recurrence.rate.map(|r| r < t.recurrence_rate))) }
                        }
                        tr {
                            th scope="row" { "Follow-up completion" }
                            td.v { (percent(&s.followup_completion)) }
                            td { "follow-ups done and verified on time" }
                            td { "—" }
                            td {}
                        }
                        tr {
                            th scope="row" { "Overdue follow-ups" }
                            td.v { (s.followups_overdue) }
                            td { "past their done-by or verify-by date now" }
                            td { "0" }
                            td { (verdict(Some(s.followups_overdue == 0))) }
                        }
                    }
                }
                table.targets {
                    caption { "Response targets per severity" }
                    thead { tr {
                        th scope="col" { "Severity" } th scope="col" { "Incidents" }
                        th scope="col" { "MTTA (mean)" } th scope="col" { "Acknowledge within" }
                        th scope="col" { "MTTR (mean)" } th scope="col" { "Repair within" }
                    } }
                    tbody {
                        @for (sev, ack, repair) in &view.targets {
                            @let mtta = s.mtta_by_severity.get(sev).and_then(|p| p.mean_seconds);
                            @let mttr = s.mttr_by_severity.get(sev).and_then(|p| p.mean_seconds);
                            tr {
                                th scope="row" { span class=(format!("sev sev-{sev}")) { (sev) } }
                                td { (s.by_severity.get(sev).copied().unwrap_or(0)) }
                                td class=[mtta.map(|m| if m <= *ack as f64 { "met" } else { "missed" })] { (secs(mtta)) }
                                td { (human_seconds(*ack)) }
                                td class=[mttr.map(|m| if m <= *repair as f64 { "met" } else { "missed" })] { (secs(mttr)) }
                                td { (human_seconds(*repair)) }
                            }
                        }
                    }
                }
                div.charts {
                    figure {
                        figcaption { "Incidents per day" }
                        (trend_chart("Incidents per day", &view.per_day, |b| Some(b.opened as f64), |v| format!("{v:.0}")))
                    }
                    figure {
                        figcaption { "MTTR per week (mean, by week of opening; target " (mins(t.mttr_seconds)) ")" }
                        (trend_chart("MTTR per week", &view.per_week, |b| b.mttr_seconds, |v| span(v.round() as i64)))
                    }
                    @for (title, rows) in [("By severity", &by_severity), ("By status now", &view.by_status), ("By kind", &view.by_kind)] {
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
            div.ephemeral.md { (markdown::render(text)) }
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
            &Times::of(
                &crate::domain::incident::tests_support::incident(),
                Utc::now(),
            ),
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
    fn a_known_series_draws_a_known_chart_and_its_text_is_escaped() {
        let chart = Chart {
            query: r#"errors{a="</title><script>x</script>"}"#.into(),
            points: vec![(0.0, 0.0), (60.0, 1.0), (120.0, 0.5)],
            threshold: Some(0.5),
            series: 2,
        };
        let html = metric_chart(&chart).into_string();
        // x spans 8..592 over the time, y 8..112 over 0..1 (top is high).
        assert!(
            html.contains(r#"points="8.0,112.0 300.0,8.0 592.0,60.0""#),
            "{html}"
        );
        assert!(
            html.contains(r#"y1="60.0" y2="60.0" stroke-dasharray="4 3""#),
            "{html}"
        );
        assert!(!html.contains("<script>"), "{html}");
        assert!(html.contains("&lt;/title&gt;&lt;script&gt;"), "{html}");
        assert!(
            html.contains(" — now 0.5 · threshold 0.5 · last 30 min · highest of 2 series"),
            "{html}"
        );
        // On the card, in the thread.
        let mut c = hostile_card();
        c.chart = Some(chart);
        let html = card(
            &c,
            "t",
            &Times::of(
                &crate::domain::incident::tests_support::incident(),
                Utc::now(),
            ),
        )
        .into_string();
        assert!(
            html.contains("<figure class=\"metric\"><svg class=\"chart metric\""),
            "{html}"
        );
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
    fn an_escalation_is_one_line_on_the_incident_page() {
        use crate::domain::incident::{EventKind, Status};
        use crate::domain::policy::Actor;
        let mut inc = crate::domain::incident::tests_support::incident();
        let t0 = inc.opened_at;
        let reason = "not acknowledged within the P2 detection target".to_string();
        let timeline = vec![
            TimelineEvent {
                at: t0,
                actor: Actor::system(),
                kind: EventKind::Escalated {
                    reason: reason.clone(),
                },
            },
            inc.transition(Status::Escalated, &Actor::system(), t0, Some(reason))
                .unwrap(),
        ];
        let c = crate::domain::card::build_card(
            &inc,
            "K",
            crate::domain::severity::Severity::P2.default_targets(),
            1,
            100,
        );
        let v = Viewer {
            user: "alice",
            csrf: "t",
        };
        let html = incident_page(
            &v,
            &IncidentView {
                card: &c,
                incident: &inc,
                timeline: &timeline,
                executions: &[],
                replies: &[],
                report: "",
                now: Utc::now(),
            },
        )
        .into_string();
        let tl = &html[html.find("<ol class=\"timeline\">").unwrap()..];
        let tl = &tl[..tl.find("</ol>").unwrap()];
        assert_eq!(tl.matches("<li").count(), 1, "{tl}");
        assert!(
            tl.contains("Escalated by incidentd: not acknowledged"),
            "{tl}"
        );
    }

    #[test]
    fn times_are_relative_with_countdowns_and_the_absolute_time_as_title() {
        let mut inc = crate::domain::incident::tests_support::incident();
        inc.severity = crate::domain::severity::Severity::P2; // acknowledge 5 min, repair 30 min
        let t0 = "2026-12-07T10:00:00Z".parse::<DateTime<Utc>>().unwrap();
        inc.opened_at = t0;
        inc.last_seen_at = t0;
        let targets = crate::domain::severity::Severity::P2.default_targets();
        let render = |inc: &Incident, mins: i64| {
            let c = crate::domain::card::build_card(inc, "K", targets, 1, 100);
            card(
                &c,
                "t",
                &Times::of(inc, t0 + chrono::Duration::minutes(mins)),
            )
            .into_string()
        };
        let html = render(&inc, 3);
        assert!(html.contains(">open for 3 min</time>"), "{html}");
        assert!(
            html.contains("title=\"opened 2026-12-07 10:00:00 UTC\""),
            "{html}"
        );
        assert!(html.contains(">2 min left to acknowledge</span>"), "{html}");
        assert!(html.contains(">27 min left to repair</span>"), "{html}");
        assert!(
            html.contains("data-due=\"2026-12-07T10:05:00+00:00\""),
            "{html}"
        );
        assert!(!html.contains("compact"), "{html}");
        let html = render(&inc, 65);
        assert!(html.contains(">open for 1 h 5 min</time>"), "{html}");
        assert!(
            html.contains(">acknowledge overdue by 1 h</span>"),
            "{html}"
        );
        assert!(html.contains(">repair overdue by 35 min</span>"), "{html}");

        let alice =
            crate::domain::policy::Actor::new(crate::domain::alert::Platform::Console, "alice");
        inc.transition(
            Status::Acknowledged,
            &alice,
            t0 + chrono::Duration::minutes(2),
            None,
        )
        .unwrap();
        let html = render(&inc, 4);
        assert!(
            html.contains(">acknowledged after 2 min (within target)</span>"),
            "{html}"
        );
        inc.transition(
            Status::Resolved,
            &alice,
            t0 + chrono::Duration::minutes(8),
            None,
        )
        .unwrap();
        let html = render(&inc, 60);
        assert!(html.contains("class=\"card compact\""), "{html}");
        assert!(html.contains(">resolved after 8 min</time>"), "{html}");
        assert!(
            html.contains(
                "title=\"opened 2026-12-07 10:00:00 UTC, resolved 2026-12-07 10:08:00 UTC\""
            ),
            "{html}"
        );
        assert!(
            html.contains(">repaired after 8 min (within target)</span>"),
            "{html}"
        );
        assert!(
            html.contains("<details class=\"more\"><summary>Details</summary>"),
            "{html}"
        );
        assert!(!html.contains("left to"), "{html}");
        assert_eq!(span(40), "40 s");
        assert_eq!(span(3600 * 26), "1 d 2 h");
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
        let html = card(&c, "t", &Times::of(&inc, Utc::now())).into_string();
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
        assert_eq!(
            html.matches("value=\"preview:INC-7:restart\"").count(),
            1,
            "one Preview button per action: {html}"
        );
    }
}
