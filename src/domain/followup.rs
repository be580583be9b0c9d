//! Follow-ups (the playbook's §9 improvement measures) and their lifecycle: `open → done →
//! verified`, or `dropped` with a reason; an owner, a type (technical, process, organizational:
//! §9.2) and due dates from `[followups]` (done within 7 days of being added, verified within
//! 7 days of being done; a resolved incident should have one within 24 h). Pure rules: which
//! changes are legal, what is overdue, when the next reminder is due. The engine decides with
//! them; nothing here does I/O.

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

use super::incident::Incident;
use super::policy::Actor;

/// §9.2's types of improvement.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FollowUpKind {
    #[default]
    Technical,
    Process,
    Organizational,
}

impl FollowUpKind {
    pub fn label(self) -> &'static str {
        match self {
            FollowUpKind::Technical => "technical",
            FollowUpKind::Process => "process",
            FollowUpKind::Organizational => "organizational",
        }
    }

    /// `technical`, `process`, `organizational` (and `tech`, `org`).
    pub fn parse(s: &str) -> Option<FollowUpKind> {
        match s.to_ascii_lowercase().as_str() {
            "technical" | "tech" => Some(FollowUpKind::Technical),
            "process" => Some(FollowUpKind::Process),
            "organizational" | "organisational" | "org" => Some(FollowUpKind::Organizational),
            _ => None,
        }
    }
}

/// Where a follow-up is in its life.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FollowUpState {
    #[default]
    Open,
    Done,
    Verified,
    Dropped,
}

impl FollowUpState {
    pub fn label(self) -> &'static str {
        match self {
            FollowUpState::Open => "open",
            FollowUpState::Done => "done",
            FollowUpState::Verified => "verified",
            FollowUpState::Dropped => "dropped",
        }
    }

    /// A check box for chat: ☐ open, ☑ done (awaiting verification), ✅ verified, ✖ dropped.
    pub fn mark(self) -> &'static str {
        match self {
            FollowUpState::Open => "☐",
            FollowUpState::Done => "☑",
            FollowUpState::Verified => "✅",
            FollowUpState::Dropped => "✖",
        }
    }
}

/// A change to a follow-up (`/incident followup done|verify|drop`, the report's buttons).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "to", rename_all = "snake_case")]
pub enum FollowUpChange {
    Done,
    Verified,
    Dropped { reason: String },
}

impl FollowUpChange {
    pub fn state(&self) -> FollowUpState {
        match self {
            FollowUpChange::Done => FollowUpState::Done,
            FollowUpChange::Verified => FollowUpState::Verified,
            FollowUpChange::Dropped { .. } => FollowUpState::Dropped,
        }
    }

    /// The command word: `done`, `verify`, `drop`.
    pub fn verb(&self) -> &'static str {
        match self {
            FollowUpChange::Done => "done",
            FollowUpChange::Verified => "verify",
            FollowUpChange::Dropped { .. } => "drop",
        }
    }
}

/// `[followups]`: due dates and reminders.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FollowUpConfig {
    /// A resolved incident without any follow-up is reminded about this long after resolution.
    #[serde(default = "day")]
    pub define_within_seconds: u64,
    /// A follow-up is due done this long after it was added.
    #[serde(default = "week")]
    pub done_within_seconds: u64,
    /// A done follow-up is due verified this long after it was done.
    #[serde(default = "week")]
    pub verify_within_seconds: u64,
    /// At most one reminder note per incident within this long.
    #[serde(default = "day")]
    pub remind_every_seconds: u64,
    /// Reminders mention the owners of overdue follow-ups when the owner was given as a chat
    /// mention (`<@U1>` on Slack, `<@42>` on Discord). Off: the owner is named, not pinged.
    #[serde(default)]
    pub mention_owners: bool,
    /// `[followups.export]`: an `http` action run once per new follow-up (e.g. a tracker's
    /// "create issue"), templated with `{followup.text}` and friends; the link its response
    /// names is stored on the follow-up.
    #[serde(default)]
    pub export: Option<super::playbook::ActionSpec>,
}

fn day() -> u64 {
    86_400
}
fn week() -> u64 {
    7 * 86_400
}

impl Default for FollowUpConfig {
    fn default() -> Self {
        FollowUpConfig {
            define_within_seconds: day(),
            done_within_seconds: week(),
            verify_within_seconds: week(),
            remind_every_seconds: day(),
            mention_owners: false,
            export: None,
        }
    }
}

fn secs(s: u64) -> Duration {
    Duration::seconds(s.min(i64::MAX as u64 / 1000) as i64)
}

/// One improvement item. Follow-ups are never removed (a dropped one stays, with its reason),
/// so a follow-up's number is its position, from 1.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FollowUp {
    pub text: String,
    /// As typed (`@bob`, `<@U1>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// The owner as a policy-style entry (`slack:U1`, `discord:42`) when they were given as a
    /// chat mention: the only form a reminder may ping.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner_mention: Option<String>,
    pub added_by: Actor,
    /// When it was added.
    pub at: DateTime<Utc>,
    #[serde(default)]
    pub kind: FollowUpKind,
    #[serde(default)]
    pub state: FollowUpState,
    /// Due done (`None` for follow-ups stored before due dates existed).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "crate::domain::rfc3339::option::serialize"
    )]
    pub due: Option<DateTime<Utc>>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "crate::domain::rfc3339::option::serialize"
    )]
    pub done_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub done_by: Option<Actor>,
    /// Due verified (set when it is done).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "crate::domain::rfc3339::option::serialize"
    )]
    pub verify_due: Option<DateTime<Utc>>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "crate::domain::rfc3339::option::serialize"
    )]
    pub verified_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verified_by: Option<Actor>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dropped_reason: Option<String>,
    /// The state it was last reminded about (so each missed due date is reminded once).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reminded: Option<FollowUpState>,
    /// Where it is tracked: the link the export's response named.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link: Option<String>,
}

impl FollowUp {
    /// A new open follow-up, due done `done_within_seconds` from now. `platform_prefix` is the
    /// adding person's platform (`slack`, `discord`): an owner given as that platform's mention
    /// (`<@U1>`, `<@U1|bob>`, `<@!42>`) becomes a mention entry.
    pub fn new(
        text: String,
        owner: Option<String>,
        kind: FollowUpKind,
        by: &Actor,
        now: DateTime<Utc>,
        cfg: &FollowUpConfig,
    ) -> FollowUp {
        let owner_mention = owner
            .as_deref()
            .and_then(|o| mention_entry(o, by.platform.as_str()));
        FollowUp {
            text,
            owner,
            owner_mention,
            added_by: by.clone(),
            at: now,
            kind,
            state: FollowUpState::Open,
            due: Some(now + secs(cfg.done_within_seconds)),
            done_at: None,
            done_by: None,
            verify_due: None,
            verified_at: None,
            verified_by: None,
            dropped_reason: None,
            reminded: None,
            link: None,
        }
    }

    /// The date it must meet next: done by `due` while open, verified by `verify_due` while done.
    pub fn deadline(&self) -> Option<DateTime<Utc>> {
        match self.state {
            FollowUpState::Open => self.due,
            FollowUpState::Done => self.verify_due,
            FollowUpState::Verified | FollowUpState::Dropped => None,
        }
    }

    /// Its current deadline has passed.
    pub fn is_overdue(&self, now: DateTime<Utc>) -> bool {
        self.deadline().is_some_and(|d| d <= now)
    }

    /// Done no later than due.
    pub fn done_on_time(&self) -> bool {
        match (self.done_at, self.due) {
            (Some(d), Some(due)) => d <= due,
            (Some(_), None) => true,
            _ => false,
        }
    }

    /// Verified, and both done and verified on time.
    pub fn completed_on_time(&self) -> bool {
        self.state == FollowUpState::Verified
            && self.done_on_time()
            && match (self.verified_at, self.verify_due) {
                (Some(v), Some(due)) => v <= due,
                (Some(_), None) => true,
                _ => false,
            }
    }

    /// Whether `actor` is the owner (as typed: `@name` against their name, a mention against
    /// their id).
    pub fn is_owner(&self, actor: &Actor) -> bool {
        let Some(owner) = self.owner.as_deref() else {
            return false;
        };
        if let Some(m) = &self.owner_mention {
            return *m == format!("{}:{}", actor.platform.as_str(), actor.id);
        }
        let name = owner.trim_start_matches('@');
        actor.id.eq_ignore_ascii_case(name)
            || actor
                .name
                .as_deref()
                .is_some_and(|n| n.eq_ignore_ascii_case(name))
    }

    /// Applies a change, or says why it is not one. `verify_within` sets the verification's due
    /// date when it is done.
    pub fn apply(
        &mut self,
        change: &FollowUpChange,
        by: &Actor,
        now: DateTime<Utc>,
        cfg: &FollowUpConfig,
    ) -> Result<(), String> {
        use FollowUpState::*;
        match (self.state, change) {
            (Open, FollowUpChange::Done) => {
                self.state = Done;
                self.done_at = Some(now);
                self.done_by = Some(by.clone());
                self.verify_due = Some(now + secs(cfg.verify_within_seconds));
            }
            (Done, FollowUpChange::Verified) => {
                self.state = Verified;
                self.verified_at = Some(now);
                self.verified_by = Some(by.clone());
            }
            (Open | Done, FollowUpChange::Dropped { reason }) => {
                self.state = Dropped;
                self.dropped_reason = Some(reason.clone());
            }
            (Open, FollowUpChange::Verified) => {
                return Err("it is still open: mark it done first".into())
            }
            (from, _) => {
                return Err(format!(
                    "it is already {}; it cannot become {}",
                    from.label(),
                    change.state().label()
                ))
            }
        }
        Ok(())
    }

    /// One line for chat: `☐ #2 add a rate-limit alert — @bob (technical, due 2026-12-01)`.
    pub fn line(&self, n: usize, now: DateTime<Utc>) -> String {
        let mut s = format!("{} #{n} {}", self.state.mark(), self.text);
        if let Some(o) = &self.owner {
            s.push_str(&format!(" — {o}"));
        }
        s.push_str(&format!(" ({}, {}", self.kind.label(), self.state.label()));
        match (self.state, self.deadline()) {
            (FollowUpState::Dropped, _) => {
                if let Some(r) = &self.dropped_reason {
                    s.push_str(&format!(": {r}"));
                }
            }
            (_, Some(d)) => {
                let what = if self.state == FollowUpState::Open {
                    "due"
                } else {
                    "verify by"
                };
                s.push_str(&format!(", {what} {}", d.format("%Y-%m-%d %H:%M UTC")));
                if d <= now {
                    s.push_str(", OVERDUE");
                }
            }
            _ => {}
        }
        if let Some(l) = &self.link {
            s.push_str(&format!(" · {l}"));
        }
        s.push(')');
        s
    }
}

/// A chat mention of a user on `platform` as a policy-style entry: `<@U1>` / `<@U1|bob>` on
/// Slack → `slack:U1`; `<@42>` / `<@!42>` on Discord → `discord:42`. Anything else (plain
/// `@bob`, a channel or everyone mention, odd characters) is not one.
pub fn mention_entry(owner: &str, platform: &str) -> Option<String> {
    let inner = owner.strip_prefix("<@")?.strip_suffix('>')?;
    let id = inner.split('|').next()?.trim_start_matches('!');
    let ok = !id.is_empty() && id.len() <= 40 && id.chars().all(|c| c.is_ascii_alphanumeric());
    let ok = ok
        && match platform {
            "slack" => id.starts_with(['U', 'W']),
            "discord" => id.chars().all(|c| c.is_ascii_digit()),
            _ => false,
        };
    ok.then(|| format!("{platform}:{id}"))
}

/// What the reminders have said about an incident's follow-ups.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reminders {
    /// The last reminder note (at most one per `remind_every_seconds`).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "crate::domain::rfc3339::option::serialize"
    )]
    pub last_at: Option<DateTime<Utc>>,
    /// The resolution whose missing follow-ups were reminded about (a reopened and again
    /// resolved incident is reminded afresh).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "crate::domain::rfc3339::option::serialize"
    )]
    pub undefined_for: Option<DateTime<Utc>>,
}

/// What a reminder is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Due {
    /// Resolved this long ago and no follow-up defined.
    Undefined { resolved_at: DateTime<Utc> },
    /// Follow-up `n` (from 1) missed its deadline in this state.
    Overdue { n: usize, state: FollowUpState },
}

/// When the incident, resolved without any follow-up, should have one.
fn define_deadline(inc: &Incident, cfg: &FollowUpConfig) -> Option<DateTime<Utc>> {
    if inc.status.is_active() || !inc.followups.is_empty() {
        return None;
    }
    let at = inc.resolved_at?;
    let reminded = inc.reminders.as_ref().and_then(|r| r.undefined_for) == Some(at);
    (!reminded).then(|| at + secs(cfg.define_within_seconds))
}

/// Every due date not yet reminded about, with when it falls due.
fn unreminded(inc: &Incident, cfg: &FollowUpConfig) -> Vec<(DateTime<Utc>, Due)> {
    let mut v: Vec<(DateTime<Utc>, Due)> = Vec::new();
    if let (Some(at), Some(resolved_at)) = (define_deadline(inc, cfg), inc.resolved_at) {
        v.push((at, Due::Undefined { resolved_at }));
    }
    for (i, f) in inc.followups.iter().enumerate() {
        if let Some(d) = f.deadline().filter(|_| f.reminded != Some(f.state)) {
            v.push((
                d,
                Due::Overdue {
                    n: i + 1,
                    state: f.state,
                },
            ));
        }
    }
    v
}

/// What a reminder at `now` would remind about (nothing while the last one is less than
/// `remind_every_seconds` old).
pub fn due_reminders(inc: &Incident, cfg: &FollowUpConfig, now: DateTime<Utc>) -> Vec<Due> {
    if next_reminder(inc, cfg).is_none_or(|at| at > now) {
        return vec![];
    }
    unreminded(inc, cfg)
        .into_iter()
        .filter(|(at, _)| *at <= now)
        .map(|(_, d)| d)
        .collect()
}

/// When the next reminder is due: the earliest due date not yet reminded about, but not
/// within `remind_every_seconds` of the last reminder. `None`: nothing to remind about.
pub fn next_reminder(inc: &Incident, cfg: &FollowUpConfig) -> Option<DateTime<Utc>> {
    let first = unreminded(inc, cfg).into_iter().map(|(at, _)| at).min()?;
    let quiet_until = inc
        .reminders
        .as_ref()
        .and_then(|r| r.last_at)
        .map(|l| l + secs(cfg.remind_every_seconds));
    Some(quiet_until.map_or(first, |q| q.max(first)))
}

/// Records that a reminder about `due` went out at `now`.
pub fn mark_reminded(inc: &mut Incident, due: &[Due], now: DateTime<Utc>) {
    let r = inc.reminders.get_or_insert_with(Default::default);
    r.last_at = Some(now);
    for d in due {
        match d {
            Due::Undefined { resolved_at } => r.undefined_for = Some(*resolved_at),
            Due::Overdue { n, state } => {
                if let Some(f) = inc.followups.get_mut(n - 1) {
                    f.reminded = Some(*state);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::alert::Platform;
    use chrono::TimeZone;

    fn t(h: i64) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 12, 1, 0, 0, 0).unwrap() + Duration::hours(h)
    }

    #[test]
    fn lifecycle_moves_forward_only() {
        let cfg = FollowUpConfig::default();
        let by = Actor::new(Platform::Slack, "U1");
        let mut f = FollowUp::new("x".into(), None, FollowUpKind::Process, &by, t(0), &cfg);
        assert_eq!(f.due, Some(t(7 * 24)));
        assert!(f.apply(&FollowUpChange::Verified, &by, t(1), &cfg).is_err());
        f.apply(&FollowUpChange::Done, &by, t(2), &cfg).unwrap();
        assert_eq!(f.verify_due, Some(t(2 + 7 * 24)));
        assert_eq!(f.deadline(), f.verify_due);
        assert!(f.apply(&FollowUpChange::Done, &by, t(3), &cfg).is_err());
        f.apply(&FollowUpChange::Verified, &by, t(4), &cfg).unwrap();
        assert!(f.completed_on_time());
        assert_eq!(f.deadline(), None);
        let e = f
            .apply(
                &FollowUpChange::Dropped { reason: "r".into() },
                &by,
                t(5),
                &cfg,
            )
            .unwrap_err();
        assert!(e.contains("already verified"), "{e}");
    }

    #[test]
    fn late_is_not_on_time() {
        let cfg = FollowUpConfig::default();
        let by = Actor::new(Platform::Slack, "U1");
        let mut f = FollowUp::new("x".into(), None, FollowUpKind::Technical, &by, t(0), &cfg);
        assert!(!f.is_overdue(t(7 * 24 - 1)));
        assert!(f.is_overdue(t(7 * 24)));
        f.apply(&FollowUpChange::Done, &by, t(7 * 24 + 1), &cfg)
            .unwrap();
        f.apply(&FollowUpChange::Verified, &by, t(7 * 24 + 2), &cfg)
            .unwrap();
        assert!(!f.done_on_time() && !f.completed_on_time());
    }

    #[test]
    fn only_real_mentions_of_the_platform_can_ping() {
        assert_eq!(mention_entry("<@U1>", "slack").as_deref(), Some("slack:U1"));
        assert_eq!(
            mention_entry("<@U1|bob>", "slack").as_deref(),
            Some("slack:U1")
        );
        assert_eq!(
            mention_entry("<@!42>", "discord").as_deref(),
            Some("discord:42")
        );
        for (o, p) in [
            ("@bob", "slack"),
            ("<!channel>", "slack"),
            ("<@everyone>", "discord"),
            ("<@U1>", "discord"),
            ("<@42>", "console"),
            ("<@U1 x>", "slack"),
            ("<@>", "slack"),
        ] {
            assert_eq!(mention_entry(o, p), None, "{o} on {p}");
        }
    }

    #[test]
    fn owners_are_recognized_by_name_or_mention() {
        let cfg = FollowUpConfig::default();
        let by = Actor::new(Platform::Slack, "U9");
        let f = FollowUp::new(
            "x".into(),
            Some("<@U1>".into()),
            FollowUpKind::Technical,
            &by,
            t(0),
            &cfg,
        );
        assert!(f.is_owner(&Actor::new(Platform::Slack, "U1")));
        assert!(!f.is_owner(&Actor::new(Platform::Discord, "U1")));
        let mut bob = Actor::new(Platform::Console, "bob");
        let f = FollowUp::new(
            "x".into(),
            Some("@Bob".into()),
            FollowUpKind::Technical,
            &by,
            t(0),
            &cfg,
        );
        assert!(f.is_owner(&bob));
        bob.id = "alice".into();
        assert!(!f.is_owner(&bob));
    }
}
