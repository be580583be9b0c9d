//! The one place chat inputs are interpreted, for every surface: adapters turn platform payloads
//! into a neutral [`ChatEvent`] (text and identity only) and show the [`ChatReply`]. Alert-channel
//! messages become alerts, thread messages become timeline notes, buttons and `/incident`
//! commands become engine inputs; read-only commands are answered from the store.

use std::collections::HashSet;
use std::fmt::Write;
use std::sync::Arc;

use tracing::{debug, error, info_span, Instrument};

use crate::config::Config;
use crate::domain::alert::Platform;
use crate::domain::card::ButtonAction;
use crate::domain::command::{self, Command, FollowUpScope, ListScope, HELP};
use crate::domain::followup::FollowUpChange;
use crate::domain::incident::{Incident, IncidentId};
use crate::domain::policy::Actor;
use crate::domain::report::render_markdown;
use crate::domain::severity::human_seconds;
use crate::domain::stats;
use crate::engine::runner::{Engine, EngineSubmitError};
use crate::engine::Input;
use crate::ingest::{
    alert_channel_message, requested_alert, ChatAttachment, ChatEmbed, ChatMessage,
};
use crate::ports::blocking;
use crate::ports::{Executor, IncidentFilter, Store, StoreError};

/// What an adapter hands over.
#[derive(Debug, Clone)]
pub enum ChatEvent {
    /// A message in a channel the bot can see (the adapter has already dropped the bot's own).
    Message {
        channel: String,
        message_id: String,
        /// The thread it was posted in, if any (Slack `thread_ts`, Discord thread channel id).
        thread_id: Option<String>,
        author: Actor,
        /// Posted by a bot, an app or a webhook (Slack `bot_id`/`app_id`, Discord `author.bot`
        /// or `webhook_id`), not a person.
        from_bot: bool,
        /// The bot's own user id on the platform, so a mention of it is recognized.
        bot_user: Option<String>,
        text: String,
        attachments: Vec<ChatAttachment>,
        embeds: Vec<ChatEmbed>,
    },
    /// A button on a card was clicked; `action_id` is [`ButtonAction::encode`]'s output.
    Button { actor: Actor, action_id: String },
    /// `/incident <text>`.
    Command { actor: Actor, text: String },
}

/// What to show the user who acted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatReply {
    pub text: String,
    /// Only the acting user sees it.
    pub ephemeral: bool,
}

impl ChatReply {
    fn private(text: impl Into<String>) -> Self {
        ChatReply {
            text: text.into(),
            ephemeral: true,
        }
    }
    fn public(text: impl Into<String>) -> Self {
        ChatReply {
            text: text.into(),
            ephemeral: false,
        }
    }
}

/// Interprets chat events for one platform.
#[derive(Clone)]
pub struct ChatService {
    engine: Engine,
    store: Arc<dyn Store>,
    cfg: Arc<Config>,
    executor: Arc<dyn Executor>,
    platform: Platform,
    /// The outbox sink name the platform's cards are posted through (thread lookups).
    sink: String,
    alert_channels: Arc<HashSet<String>>,
}

fn internal(e: impl std::fmt::Display) -> ChatReply {
    let reference = format!("{:08x}", rand::random::<u32>());
    error!(error = %e, reference = %reference, "Internal error while handling a chat event.");
    ChatReply::private(format!("internal error (ref {reference})"))
}

impl ChatService {
    pub fn new(
        engine: Engine,
        store: Arc<dyn Store>,
        cfg: Arc<Config>,
        executor: Arc<dyn Executor>,
        platform: Platform,
        sink: &str,
        alert_channels: impl IntoIterator<Item = String>,
    ) -> Self {
        ChatService {
            engine,
            store,
            cfg,
            executor,
            platform,
            sink: sink.to_string(),
            alert_channels: Arc::new(alert_channels.into_iter().collect()),
        }
    }

    /// The store this service reads (surfaces that also render dashboards read it too).
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    pub fn config(&self) -> &Arc<Config> {
        &self.cfg
    }

    /// The engine (dashboards read its stats).
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    pub fn is_alert_channel(&self, channel: &str) -> bool {
        self.alert_channels.contains(channel)
    }

    /// Handles one event once it is durable (if it changes anything); `None` means nothing to say.
    pub async fn handle(&self, event: ChatEvent) -> Option<ChatReply> {
        let span = info_span!("chat", platform = self.platform.as_str());
        async move {
            match event {
                ChatEvent::Message {
                    channel,
                    message_id,
                    thread_id,
                    author,
                    from_bot,
                    bot_user,
                    text,
                    attachments,
                    embeds,
                } => {
                    self.message(
                        channel,
                        message_id,
                        thread_id,
                        author,
                        from_bot,
                        bot_user,
                        text,
                        attachments,
                        embeds,
                    )
                    .await
                }
                ChatEvent::Button { actor, action_id } => {
                    Some(self.button(actor, &action_id).await)
                }
                ChatEvent::Command { actor, text } => Some(self.command(actor, &text).await),
            }
        }
        .instrument(span)
        .await
    }

    #[allow(clippy::too_many_arguments)]
    async fn message(
        &self,
        channel: String,
        message_id: String,
        thread_id: Option<String>,
        author: Actor,
        from_bot: bool,
        bot_user: Option<String>,
        text: String,
        attachments: Vec<ChatAttachment>,
        embeds: Vec<ChatEmbed>,
    ) -> Option<ChatReply> {
        if let Some(thread) = thread_id.filter(|t| *t != message_id) {
            // A reply in a thread: if it is an incident's thread, humans' words go to the timeline.
            let (s, sink, ch) = (self.store.clone(), self.sink.clone(), channel.clone());
            let t = thread.clone();
            let incident = match blocking(move || s.incident_for_thread(&sink, &ch, &t)).await {
                Ok(i) => i,
                Err(e) => return Some(internal(e)),
            };
            if let Some(id) = incident {
                if from_bot || text.trim().is_empty() {
                    return None;
                }
                let input = Input::ThreadMessage {
                    actor: author,
                    incident: id,
                    text,
                };
                return match self.engine.submit_one(input).await {
                    Ok(_) => None,
                    Err(EngineSubmitError::User(_)) => None,
                    Err(e) => Some(internal(e)),
                };
            }
            return None;
        }
        if !self.is_alert_channel(&channel) {
            return None;
        }
        let msg = ChatMessage {
            platform: self.platform,
            channel,
            message_id,
            text,
            attachments,
            embeds,
            from_bot,
            bot_user,
            author: Some(author),
        };
        let alerts = alert_channel_message(&msg, self.cfg.chat.human_messages);
        if alerts.is_empty() {
            if !from_bot {
                debug!(
                    human_messages = ?self.cfg.chat.human_messages,
                    "A person's alert-channel message is no alert and does not ask for one; ignored."
                );
                self.engine
                    .metrics()
                    .chat_message_ignored(self.platform.as_str());
            }
            return None;
        }
        // The alerts of one message (a group's members) in one group commit, in order.
        match self
            .engine
            .submit(alerts.into_iter().map(Input::Alert).collect())
            .await
        {
            Ok(_) => None,
            Err(e) => Some(internal(e)),
        }
    }

    async fn button(&self, actor: Actor, action_id: &str) -> ChatReply {
        let action = match ButtonAction::decode(action_id) {
            Ok(a) => a,
            Err(e) => return ChatReply::private(format!("That button is not one of ours: {e}")),
        };
        let command = match action {
            ButtonAction::Ack(i) => Command::Ack(i),
            ButtonAction::Approve(i, a) => Command::Approve(i, a),
            ButtonAction::Reject(i, a) => Command::Reject(i, a, None),
            ButtonAction::Escalate(i) => Command::Escalate(i),
            ButtonAction::Resolve(i) => Command::Resolve(i, None),
            ButtonAction::Preview(i, a) => return self.preview(i, &a).await,
            ButtonAction::FollowUpAdd(i) => {
                return ChatReply::private(format!(
                    "Add a follow-up with `/incident followup add {i} [technical:|process:|organizational:] <what> [@owner]`, e.g. `/incident followup add {i} process: page the database team earlier <@you>`."
                ))
            }
            ButtonAction::FollowUpDone(i, n) => Command::FollowUpSet(i, n, FollowUpChange::Done),
            ButtonAction::FollowUpVerify(i, n) => {
                Command::FollowUpSet(i, n, FollowUpChange::Verified)
            }
        };
        self.mutate(actor, command).await
    }

    async fn command(&self, actor: Actor, text: &str) -> ChatReply {
        let command = match command::parse(text) {
            Ok(c) => c,
            Err(e) => return ChatReply::private(e),
        };
        match command {
            Command::Help => ChatReply::private(HELP),
            Command::List { scope, severity } => {
                let filter = IncidentFilter {
                    active: match scope {
                        ListScope::Open => Some(true),
                        ListScope::Resolved => Some(false),
                        ListScope::All => None,
                    },
                    severity,
                    limit: 20,
                    ..Default::default()
                };
                let s = self.store.clone();
                match blocking(move || s.list_incidents(&filter)).await {
                    Ok(list) => ChatReply::private(render_list(&list, scope)),
                    Err(e) => internal(e),
                }
            }
            Command::Status(id) => match self.load(id).await {
                Ok(Some(inc)) => ChatReply::private(render_status(&inc, &self.cfg)),
                Ok(None) => ChatReply::private(format!("{id} does not exist")),
                Err(e) => internal(e),
            },
            Command::Timeline(id) | Command::Report(id) => {
                let s = self.store.clone();
                let loaded =
                    blocking(move || Ok::<_, StoreError>((s.get_incident(id)?, s.timeline(id)?)))
                        .await;
                match loaded {
                    Ok((Some(inc), timeline)) => ChatReply::private(match command {
                        Command::Report(_) => {
                            render_markdown(&inc, &timeline, &self.cfg.classifier)
                        }
                        _ => render_timeline(&inc, &timeline),
                    }),
                    Ok((None, _)) => ChatReply::private(format!("{id} does not exist")),
                    Err(e) => internal(e),
                }
            }
            Command::Stats(days) => match self.engine.stats(days.unwrap_or(7)).await {
                Ok(st) => ChatReply::private(stats::render_text(&st)),
                Err(e) => internal(e),
            },
            Command::FollowUpList(id) => match self.load(id).await {
                Ok(Some(inc)) => ChatReply::private(render_followups(&inc, self.engine.now())),
                Ok(None) => ChatReply::private(format!("{id} does not exist")),
                Err(e) => internal(e),
            },
            Command::FollowUps(scope) => {
                let filter = IncidentFilter {
                    limit: FOLLOWUP_SCAN,
                    ..Default::default()
                };
                let s = self.store.clone();
                match blocking(move || s.list_incidents(&filter)).await {
                    Ok(list) => ChatReply::private(render_pending_followups(
                        &list,
                        scope,
                        &actor,
                        self.engine.now(),
                    )),
                    Err(e) => internal(e),
                }
            }
            Command::New(title) => self.open(actor, &title).await,
            other => self.mutate(actor, other).await,
        }
    }

    /// `/incident new <title>`: the same intake as an alert-channel message, the person as its
    /// reporter; asking again for an open incident's title counts on that incident.
    async fn open(&self, actor: Actor, title: &str) -> ChatReply {
        let Some(alert) = requested_alert(self.platform, title, &actor) else {
            return ChatReply::private(command::NEW_NEEDS_TITLE);
        };
        let title = alert.title.clone();
        match self.engine.submit_one(Input::Alert(alert)).await {
            Ok(o) => match o.incident {
                Some(id) if o.created => {
                    ChatReply::public(format!("{id} opened by {}: {title}", actor.display()))
                }
                Some(id) => ChatReply::private(format!(
                    "{id} is already open for this; your report is counted there."
                )),
                None => ChatReply::private(o.reply.unwrap_or_else(|| "Nothing opened.".into())),
            },
            Err(EngineSubmitError::User(e)) => ChatReply::private(e.0),
            Err(e) => internal(e),
        }
    }

    async fn load(&self, id: IncidentId) -> Result<Option<Incident>, StoreError> {
        let s = self.store.clone();
        blocking(move || s.get_incident(id)).await
    }

    /// What an action would do, exactly: the templated command or request (or why it would be
    /// refused), who must approve, and what verification and rollback follow.
    async fn preview(&self, id: IncidentId, action: &str) -> ChatReply {
        let inc = match self.load(id).await {
            Ok(Some(inc)) => inc,
            Ok(None) => return ChatReply::private(format!("{id} does not exist")),
            Err(e) => return internal(e),
        };
        let Some(spec) = crate::engine::action_spec(&inc, action, &self.cfg) else {
            return ChatReply::private(format!("{id} has no action `{action}`"));
        };
        let p = self.cfg.policy(inc.severity);
        let mut s = format!("Preview of `{action}` on {id}:\n");
        match self.executor.plan(&inc, spec) {
            Ok(plan) => {
                let _ = writeln!(s, "Runs: `{plan}`");
            }
            Err(refusal) => {
                let _ = writeln!(s, "Would be refused: {refusal}");
            }
        }
        let approvers = if p.approvers.is_empty() {
            "nobody is configured".to_string()
        } else {
            p.approvers.join(", ")
        };
        let _ = writeln!(
            s,
            "Needs {} approval(s) at {} from: {approvers}{}",
            p.min_approvals,
            inc.severity,
            if p.allow_proposer {
                ""
            } else {
                " (two-person rule: not whoever acknowledged)"
            }
        );
        if let Some(v) = &spec.verify {
            let _ = writeln!(
                s,
                "Then verifies: {}",
                crate::remediate::preview::verification(spec, v, &inc)
            );
        }
        if let Some(rb) = &spec.rollback {
            let _ = writeln!(s, "If not verified, rolls back with `{rb}`");
        }
        ChatReply::private(s)
    }

    async fn mutate(&self, actor: Actor, command: Command) -> ChatReply {
        let what = describe(&command);
        match self
            .engine
            .submit_one(Input::Command { actor, command })
            .await
        {
            Ok(o) if o.refused => {
                ChatReply::private(o.reply.unwrap_or_else(|| "Not allowed.".into()))
            }
            Ok(o) => match o.reply {
                Some(r) => ChatReply::private(r),
                None => ChatReply::public(what),
            },
            Err(EngineSubmitError::User(e)) => ChatReply::private(e.0),
            Err(e) => internal(e),
        }
    }
}

fn describe(c: &Command) -> String {
    match c {
        Command::Ack(i) => format!("{i} acknowledged."),
        Command::Resolve(i, _) => format!("{i} resolved."),
        Command::Reopen(i) => format!("{i} reopened."),
        Command::Escalate(i) => format!("{i} escalated."),
        Command::Approve(i, a) => format!("Approval of `{a}` on {i} recorded."),
        Command::Reject(i, a, _) => format!("`{a}` on {i} rejected."),
        Command::Note(i, _) => format!("Note added to {i}."),
        Command::Assign(i, who) => format!("{i} assigned to {who}."),
        Command::Severity(i, s) => format!("{i} is now {s}."),
        Command::RootCause(i, c, _) => format!("Root cause of {i} set: {}.", c.label()),
        Command::FollowUp(i, ..) => format!("Follow-up added to {i}."),
        Command::FollowUpSet(i, n, c) => {
            format!("Follow-up #{n} of {i} is {}.", c.state().label())
        }
        Command::Help
        | Command::FollowUpList(_)
        | Command::FollowUps(_)
        | Command::New(_)
        | Command::List { .. }
        | Command::Status(_)
        | Command::Timeline(_)
        | Command::Report(_)
        | Command::Stats(_) => String::new(),
    }
}

/// The most recent incidents `/incident followups` looks through.
pub const FOLLOWUP_SCAN: usize = 500;

/// `/incident followup list INC-n`: every follow-up with its state and due date.
pub fn render_followups(inc: &Incident, now: chrono::DateTime<chrono::Utc>) -> String {
    if inc.followups.is_empty() {
        return format!(
            "{} has no follow-ups yet: `/incident followup add {} <item> [@owner]`.",
            inc.id, inc.id
        );
    }
    let mut s = format!("Follow-ups of `{}` — {}\n", inc.id, inc.title);
    for (i, f) in inc.followups.iter().enumerate() {
        let _ = writeln!(s, "• {}", f.line(i + 1, now));
    }
    s
}

/// `/incident followups [mine|overdue]`: follow-ups still to do or verify, across the most
/// recent [`FOLLOWUP_SCAN`] incidents, overdue first.
pub fn render_pending_followups(
    list: &[Incident],
    scope: FollowUpScope,
    actor: &Actor,
    now: chrono::DateTime<chrono::Utc>,
) -> String {
    let mut rows: Vec<(bool, chrono::DateTime<chrono::Utc>, String)> = Vec::new();
    for inc in list {
        for (i, f) in inc.followups.iter().enumerate() {
            let Some(deadline) = f.deadline() else {
                continue;
            };
            let overdue = f.is_overdue(now);
            let keep = match scope {
                FollowUpScope::Pending => true,
                FollowUpScope::Mine => f.is_owner(actor),
                FollowUpScope::Overdue => overdue,
            };
            if keep {
                rows.push((
                    !overdue,
                    deadline,
                    format!("• `{}` {}", inc.id, f.line(i + 1, now)),
                ));
            }
        }
    }
    if rows.is_empty() {
        return match scope {
            FollowUpScope::Pending => "No follow-ups to do. 🎉".into(),
            FollowUpScope::Mine => "No follow-ups of yours to do.".into(),
            FollowUpScope::Overdue => "No overdue follow-ups. 🎉".into(),
        };
    }
    rows.sort();
    let mut s = String::new();
    for (_, _, line) in rows {
        let _ = writeln!(s, "{line}");
    }
    s
}

/// `/incident list`: one line per incident.
pub fn render_list(list: &[Incident], scope: ListScope) -> String {
    if list.is_empty() {
        return match scope {
            ListScope::Open => "No open incidents. 🎉".into(),
            ListScope::Resolved => "No resolved incidents.".into(),
            ListScope::All => "No incidents yet.".into(),
        };
    }
    let mut s = String::new();
    for i in list {
        let _ = writeln!(
            s,
            "• `{}` {} · {} · {} — {} (×{})",
            i.id,
            i.severity,
            i.status.label(),
            i.kind,
            crate::domain::card::truncate_chars(&i.title, 80),
            i.alert_count
        );
    }
    s
}

/// `/incident timeline`: every event, in order.
pub fn render_timeline(
    inc: &Incident,
    timeline: &[crate::domain::incident::TimelineEvent],
) -> String {
    let mut s = format!("Timeline of `{}` — {}\n", inc.id, inc.title);
    for e in crate::domain::incident::shown_timeline(timeline) {
        let _ = writeln!(s, "• {} {}", e.at.format("%H:%M:%S"), e.describe());
    }
    s
}

/// `/incident status`: the incident in a few lines.
pub fn render_status(inc: &Incident, cfg: &Config) -> String {
    let t = cfg.targets(inc.severity);
    let mut s = String::new();
    let _ = writeln!(s, "`{}` {} — {}", inc.id, inc.severity, inc.title);
    let _ = writeln!(
        s,
        "Status: {} · alert {} · seen {}× · kind {}",
        inc.status.label(),
        match inc.alert_status {
            crate::domain::alert::AlertStatus::Firing => "firing",
            crate::domain::alert::AlertStatus::Resolved => "cleared",
        },
        inc.alert_count,
        cfg.classifier.kind_name(&inc.kind)
    );
    let _ = writeln!(
        s,
        "Targets: detect < {}, repair < {}, {}",
        human_seconds(t.detect_seconds),
        human_seconds(t.repair_seconds),
        t.approval.label()
    );
    if let Some(a) = &inc.acknowledged_by {
        let _ = writeln!(s, "Acknowledged by {}", a.display());
    }
    for a in &inc.actions {
        let _ = writeln!(
            s,
            "Action `{}` — {}: {:?}, {} approval(s)",
            a.id,
            a.title,
            a.status,
            a.approvals.len()
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::alert::{Alert, AlertSource, AlertStatus};
    use crate::domain::followup::FollowUpKind;
    use crate::engine::{handle, Ctx, NoView};
    use chrono::{Duration, TimeZone, Utc};

    /// `/incident followups [mine|overdue]` by the injected time: overdue first, only the
    /// asker's with `mine`, nothing finished.
    #[test]
    fn pending_followups_by_scope_and_time() {
        let cfg = Config::builtin();
        let t0 = Utc.with_ymd_and_hms(2026, 12, 1, 0, 0, 0).unwrap();
        let ctx = |secs: i64| Ctx {
            now: t0 + Duration::seconds(secs),
            next_id: IncidentId(1),
            history: &[],
            recent: None,
            view: &NoView,
        };
        let alert = Alert {
            source: AlertSource::Alertmanager,
            fingerprint: "fp".into(),
            status: AlertStatus::Firing,
            title: "Disk full".into(),
            description: None,
            labels: Default::default(),
            annotations: Default::default(),
            starts_at: None,
            ends_at: None,
            links: vec![],
            origin: None,
            group_labels: Default::default(),
        };
        let mut inc = handle(None, Input::Alert(alert), &cfg, ctx(0))
            .unwrap()
            .incident
            .unwrap();
        let bob = Actor::new(Platform::Slack, "UBOB");
        for (text, owner, at) in [
            ("early", "<@UBOB>", 0),
            ("late", "@carol", 3 * 86_400),
            ("dropped", "<@UBOB>", 0),
        ] {
            let c = Command::FollowUp(
                inc.id,
                text.into(),
                Some(owner.into()),
                FollowUpKind::Technical,
            );
            inc = handle(
                Some(inc),
                Input::Command {
                    actor: bob.clone(),
                    command: c,
                },
                &cfg,
                ctx(at),
            )
            .unwrap()
            .incident
            .unwrap();
        }
        inc.followups[2].state = crate::domain::followup::FollowUpState::Dropped;
        let list = [inc];
        // Day 8: #1 (due day 7) is overdue, #2 (due day 10) is not.
        let now = t0 + Duration::days(8);
        let all = render_pending_followups(&list, FollowUpScope::Pending, &bob, now);
        let lines: Vec<&str> = all.lines().collect();
        assert_eq!(lines.len(), 2, "{all}");
        assert!(
            lines[0].contains("#1 early") && lines[0].contains("OVERDUE"),
            "{all}"
        );
        assert!(
            lines[1].contains("#2 late") && !lines[1].contains("OVERDUE"),
            "{all}"
        );
        let overdue = render_pending_followups(&list, FollowUpScope::Overdue, &bob, now);
        assert!(
            overdue.contains("#1 early") && !overdue.contains("#2"),
            "{overdue}"
        );
        let mine = render_pending_followups(&list, FollowUpScope::Mine, &bob, now);
        assert!(
            mine.contains("#1 early") && !mine.contains("late"),
            "{mine}"
        );
        // Day 6: nothing overdue yet.
        let early = t0 + Duration::days(6);
        assert_eq!(
            render_pending_followups(&list, FollowUpScope::Overdue, &bob, early),
            "No overdue follow-ups. 🎉"
        );
    }
}
