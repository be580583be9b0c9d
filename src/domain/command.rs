//! The `/incident` command language, one parser for every surface (Slack, Discord, console).
//! Adapters only pass the text and who typed it; errors are user-facing and say what would work.

use super::classify::RootCause;
use super::followup::{FollowUpChange, FollowUpKind};
use super::incident::IncidentId;
use super::severity::Severity;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListScope {
    Open,
    Resolved,
    All,
}

/// Which follow-ups `/incident followups` lists, across incidents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FollowUpScope {
    /// Every open or done (unverified) follow-up.
    Pending,
    /// Pending ones owned by whoever asks.
    Mine,
    /// Pending ones past their due date.
    Overdue,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Help,
    /// Open an incident with this title (the same intake as an alert-channel message).
    New(String),
    List {
        scope: ListScope,
        severity: Option<Severity>,
    },
    Status(IncidentId),
    Ack(IncidentId),
    Resolve(IncidentId, Option<String>),
    Reopen(IncidentId),
    Escalate(IncidentId),
    Approve(IncidentId, String),
    Reject(IncidentId, String, Option<String>),
    Note(IncidentId, String),
    Timeline(IncidentId),
    Report(IncidentId),
    /// Stats over the last N days (default 7).
    Stats(Option<u32>),
    /// Assign to someone (a mention or a name, as typed).
    Assign(IncidentId, String),
    /// Re-triage.
    Severity(IncidentId, Severity),
    RootCause(IncidentId, RootCause, Option<String>),
    /// A follow-up item, optionally with an owner (`@name`), of a type (§9.2).
    FollowUp(IncidentId, String, Option<String>, FollowUpKind),
    /// Follow-up `n` (from 1) of the incident is done, verified or dropped.
    FollowUpSet(IncidentId, u32, FollowUpChange),
    /// The incident's follow-ups.
    FollowUpList(IncidentId),
    /// Follow-ups across incidents.
    FollowUps(FollowUpScope),
}

impl Command {
    /// Whether the command changes state (and so goes through the engine and the policy).
    pub fn is_mutation(&self) -> bool {
        !matches!(
            self,
            Command::Help
                | Command::List { .. }
                | Command::Status(_)
                | Command::Timeline(_)
                | Command::Report(_)
                | Command::Stats(_)
                | Command::FollowUpList(_)
                | Command::FollowUps(_)
        )
    }
}

pub const HELP: &str = "\
*/incident* commands:
• `new TITLE` — open an incident, you as its reporter
• `list [open|resolved|all] [p0|p1|p2|p3]` — incidents, newest first (default: open)
• `status INC-n` — one incident with its actions
• `ack INC-n` — acknowledge
• `approve INC-n ACTION` / `reject INC-n ACTION [reason]` — decide a recommended action
• `escalate INC-n` — escalate to the on-call
• `note INC-n TEXT` — add a note to the timeline
• `assign INC-n @user` — assign an owner
• `severity INC-n P0|P1|P2|P3` — re-triage (recorded)
• `rootcause INC-n CATEGORY [text]` — confirm the root cause (configuration, resource_limits, external_dependency, model_defect, unknown)
• `followup add INC-n [technical:|process:|organizational:] TEXT [@owner]` — add a follow-up (improvement) to the report (`followup INC-n TEXT` also works)
• `followup done|verify INC-n N` / `followup drop INC-n N REASON` — move follow-up N along (open → done → verified) or drop it
• `followup list INC-n` — the incident's follow-ups with their state and due dates
• `followups [mine|overdue]` — follow-ups still to do, across incidents
• `resolve INC-n [note]` — resolve
• `reopen INC-n` — reopen a resolved incident
• `timeline INC-n` — what happened, in order
• `report INC-n` — the post-incident report
• `stats [7d|30d]` — MTTA, MTTR, manual intervention, RCA completion, recurrence vs targets
• `help` — this text";

/// The answer to `/incident new` without a title.
pub const NEW_NEEDS_TITLE: &str = "`new` needs a title, e.g. `/incident new Checkout is slow`";

/// Parses the text after `/incident`.
pub fn parse(text: &str) -> Result<Command, String> {
    let text = text.trim();
    let (verb, rest) = split_word(text);
    let verb = verb.to_ascii_lowercase();
    let id = |rest: &str| -> Result<(IncidentId, String), String> {
        let (word, rest) = split_word(rest);
        if word.is_empty() {
            return Err(format!(
                "`{verb}` needs an incident id, e.g. `/incident {verb} INC-1`"
            ));
        }
        Ok((word.parse()?, rest.trim().to_string()))
    };
    let opt = |s: String| (!s.is_empty()).then_some(s);
    Ok(match verb.as_str() {
        "" | "help" | "?" => Command::Help,
        "new" => {
            let title = rest.trim();
            if title.is_empty() {
                return Err(NEW_NEEDS_TITLE.into());
            }
            Command::New(title.to_string())
        }
        "list" | "ls" => {
            let mut scope = ListScope::Open;
            let mut severity = None;
            for w in rest.split_whitespace() {
                match w.to_ascii_lowercase().as_str() {
                    "open" => scope = ListScope::Open,
                    "resolved" | "closed" => scope = ListScope::Resolved,
                    "all" => scope = ListScope::All,
                    other => {
                        severity = Some(other.parse::<Severity>().map_err(|_| {
                            format!("`list` takes open|resolved|all and p0..p3, not {w:?}")
                        })?)
                    }
                }
            }
            Command::List { scope, severity }
        }
        "status" | "show" => Command::Status(id(rest)?.0),
        "ack" | "acknowledge" => Command::Ack(id(rest)?.0),
        "resolve" => {
            let (i, note) = id(rest)?;
            Command::Resolve(i, opt(note))
        }
        "reopen" => Command::Reopen(id(rest)?.0),
        "escalate" => Command::Escalate(id(rest)?.0),
        "approve" | "reject" => {
            let (i, rest) = id(rest)?;
            let (action, reason) = split_word(&rest);
            if action.is_empty() {
                return Err(format!(
                    "`{verb}` needs an action id, e.g. `/incident {verb} {i} restart` (see `/incident status {i}`)"
                ));
            }
            if verb == "approve" {
                Command::Approve(i, action.to_string())
            } else {
                Command::Reject(i, action.to_string(), opt(reason.trim().to_string()))
            }
        }
        "note" | "comment" => {
            let (i, text) = id(rest)?;
            if text.is_empty() {
                return Err(
                    "`note` needs some text, e.g. `/incident note INC-1 rolled back by hand`"
                        .into(),
                );
            }
            Command::Note(i, text)
        }
        "timeline" => Command::Timeline(id(rest)?.0),
        "report" | "postmortem" => Command::Report(id(rest)?.0),
        "stats" => {
            let w = rest.trim().to_ascii_lowercase();
            if w.is_empty() {
                Command::Stats(None)
            } else {
                let days = w
                    .strip_suffix('d')
                    .unwrap_or(&w)
                    .parse::<u32>()
                    .ok()
                    .filter(|d| (1..=365).contains(d))
                    .ok_or_else(|| format!("`stats` takes a window like 7d or 30d, not {w:?}"))?;
                Command::Stats(Some(days))
            }
        }
        "assign" => {
            let (i, who) = id(rest)?;
            if who.is_empty() {
                return Err("`assign` needs someone, e.g. `/incident assign INC-1 @alice`".into());
            }
            Command::Assign(i, who)
        }
        "severity" | "sev" => {
            let (i, rest) = id(rest)?;
            let sev = rest.parse::<Severity>().map_err(|_| {
                format!("`severity` takes P0, P1, P2 or P3, e.g. `/incident severity {i} P1`")
            })?;
            Command::Severity(i, sev)
        }
        "rootcause" | "rca" => {
            let (i, rest) = id(rest)?;
            let (cat, text) = split_word(&rest);
            let cause = RootCause::parse(cat).ok_or_else(|| {
                format!(
                    "`rootcause` takes a category: configuration, resource_limits, external_dependency, model_defect or unknown (e.g. `/incident rootcause {i} configuration bad env var`)"
                )
            })?;
            Command::RootCause(i, cause, opt(text.trim().to_string()))
        }
        "followup" | "follow-up" => {
            let (sub, after) = split_word(rest);
            match sub.to_ascii_lowercase().as_str() {
                "add" => followup_add(id(after)?)?,
                "list" | "ls" => Command::FollowUpList(id(after)?.0),
                v @ ("done" | "verify" | "verified" | "drop") => {
                    let (i, rest) = id(after)?;
                    let (n, reason) = split_word(&rest);
                    let n = n
                        .trim_start_matches('#')
                        .parse::<u32>()
                        .ok()
                        .filter(|n| *n > 0)
                        .ok_or_else(|| {
                            format!("`followup {v}` needs the follow-up's number, e.g. `/incident followup {v} {i} 1` (see `/incident followup list {i}`)")
                        })?;
                    let change = match v {
                        "done" => FollowUpChange::Done,
                        "drop" => {
                            let reason = reason.trim();
                            if reason.is_empty() {
                                return Err(format!(
                                    "`followup drop` needs a reason, e.g. `/incident followup drop {i} {n} superseded by #2`"
                                ));
                            }
                            FollowUpChange::Dropped {
                                reason: reason.to_string(),
                            }
                        }
                        _ => FollowUpChange::Verified,
                    };
                    Command::FollowUpSet(i, n, change)
                }
                _ => followup_add(id(rest)?)?,
            }
        }
        "followups" | "follow-ups" => {
            let w = rest.trim().to_ascii_lowercase();
            Command::FollowUps(match w.as_str() {
                "" | "open" | "pending" | "all" => FollowUpScope::Pending,
                "mine" | "my" => FollowUpScope::Mine,
                "overdue" | "late" => FollowUpScope::Overdue,
                _ => return Err(format!("`followups` takes mine or overdue, not {w:?}")),
            })
        }
        other => return Err(format!("unknown command `{other}`. Try `/incident help`.")),
    })
}

/// `followup add INC-n [type:] TEXT [@owner]`.
fn followup_add((i, text): (IncidentId, String)) -> Result<Command, String> {
    if text.is_empty() {
        return Err(
            "`followup` needs the item, e.g. `/incident followup add INC-1 process: add a rate-limit alert @bob`"
                .into(),
        );
    }
    // A leading `process:` (or `technical:`, `organizational:`) is the type.
    let (first, after) = split_word(&text);
    let (kind, text) = match first
        .strip_suffix(':')
        .and_then(FollowUpKind::parse)
        .filter(|_| !after.trim().is_empty())
    {
        Some(k) => (k, after.trim().to_string()),
        None => (FollowUpKind::Technical, text),
    };
    // A trailing `@name` (or a chat mention, `<@U1>`) is the owner.
    let (item, owner) = match text.rsplit_once(' ') {
        Some((item, last))
            if (last.starts_with('@') && last.len() > 1)
                || (last.starts_with("<@") && last.ends_with('>')) =>
        {
            (item.trim().to_string(), Some(last.to_string()))
        }
        _ => (text, None),
    };
    Ok(Command::FollowUp(i, item, owner, kind))
}

fn split_word(s: &str) -> (&str, &str) {
    let s = s.trim_start();
    match s.find(char::is_whitespace) {
        Some(i) => (&s[..i], &s[i..]),
        None => (s, ""),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn good_commands() {
        let i = IncidentId(3);
        assert_eq!(parse(""), Ok(Command::Help));
        assert_eq!(parse("help"), Ok(Command::Help));
        assert_eq!(
            parse("list"),
            Ok(Command::List {
                scope: ListScope::Open,
                severity: None
            })
        );
        assert_eq!(
            parse("LIST all P1"),
            Ok(Command::List {
                scope: ListScope::All,
                severity: Some(Severity::P1)
            })
        );
        assert_eq!(parse("status INC-3"), Ok(Command::Status(i)));
        assert_eq!(parse("  ack   inc-3 "), Ok(Command::Ack(i)));
        assert_eq!(parse("resolve INC-3"), Ok(Command::Resolve(i, None)));
        assert_eq!(
            parse("resolve INC-3 rolled back the deploy"),
            Ok(Command::Resolve(i, Some("rolled back the deploy".into())))
        );
        assert_eq!(
            parse("approve INC-3 restart"),
            Ok(Command::Approve(i, "restart".into()))
        );
        assert_eq!(
            parse("reject INC-3 restart too risky"),
            Ok(Command::Reject(
                i,
                "restart".into(),
                Some("too risky".into())
            ))
        );
        assert_eq!(
            parse("note #3 looking"),
            Ok(Command::Note(i, "looking".into()))
        );
        assert_eq!(parse("escalate 3"), Ok(Command::Escalate(i)));
        assert_eq!(parse("reopen INC-3"), Ok(Command::Reopen(i)));
    }

    #[test]
    fn report_and_triage_commands() {
        let i = IncidentId(3);
        assert_eq!(parse("timeline INC-3"), Ok(Command::Timeline(i)));
        assert_eq!(parse("report INC-3"), Ok(Command::Report(i)));
        assert_eq!(parse("stats"), Ok(Command::Stats(None)));
        assert_eq!(parse("stats 30d"), Ok(Command::Stats(Some(30))));
        assert!(parse("stats forever").unwrap_err().contains("7d or 30d"));
        assert!(parse("stats 0d").is_err());
        assert_eq!(
            parse("assign INC-3 @alice"),
            Ok(Command::Assign(i, "@alice".into()))
        );
        assert!(parse("assign INC-3").unwrap_err().contains("needs someone"));
        assert_eq!(
            parse("severity INC-3 p1"),
            Ok(Command::Severity(i, Severity::P1))
        );
        assert!(parse("severity INC-3 high").unwrap_err().contains("P0, P1"));
        assert_eq!(
            parse("rootcause INC-3 configuration missing env var"),
            Ok(Command::RootCause(
                i,
                RootCause::Configuration,
                Some("missing env var".into())
            ))
        );
        assert_eq!(
            parse("rca INC-3 external_dependency"),
            Ok(Command::RootCause(i, RootCause::ExternalDependency, None))
        );
        assert!(parse("rootcause INC-3 gremlins")
            .unwrap_err()
            .contains("configuration, resource_limits"));
        assert_eq!(
            parse("followup INC-3 add a rate-limit alert @bob"),
            Ok(Command::FollowUp(
                i,
                "add a rate-limit alert".into(),
                Some("@bob".into()),
                FollowUpKind::Technical
            ))
        );
        assert_eq!(
            parse("followup INC-3 write the runbook"),
            Ok(Command::FollowUp(
                i,
                "write the runbook".into(),
                None,
                FollowUpKind::Technical
            ))
        );
        assert!(!parse("report INC-3").unwrap().is_mutation());
        assert!(parse("severity INC-3 P0").unwrap().is_mutation());
    }

    #[test]
    fn followup_subcommands() {
        let i = IncidentId(3);
        assert_eq!(
            parse("followup add INC-3 process: review the on-call rota <@U1>"),
            Ok(Command::FollowUp(
                i,
                "review the on-call rota".into(),
                Some("<@U1>".into()),
                FollowUpKind::Process
            ))
        );
        // A type word without the colon, or with nothing after it, is part of the text.
        assert_eq!(
            parse("followup add INC-3 process the backlog"),
            Ok(Command::FollowUp(
                i,
                "process the backlog".into(),
                None,
                FollowUpKind::Technical
            ))
        );
        assert_eq!(
            parse("followup INC-3 org: hire"),
            Ok(Command::FollowUp(
                i,
                "hire".into(),
                None,
                FollowUpKind::Organizational
            ))
        );
        assert_eq!(
            parse("followup done INC-3 2"),
            Ok(Command::FollowUpSet(i, 2, FollowUpChange::Done))
        );
        assert_eq!(
            parse("followup verify INC-3 #1"),
            Ok(Command::FollowUpSet(i, 1, FollowUpChange::Verified))
        );
        assert_eq!(
            parse("followup drop INC-3 1 superseded by #2"),
            Ok(Command::FollowUpSet(
                i,
                1,
                FollowUpChange::Dropped {
                    reason: "superseded by #2".into()
                }
            ))
        );
        assert!(parse("followup drop INC-3 1")
            .unwrap_err()
            .contains("needs a reason"));
        assert!(parse("followup done INC-3")
            .unwrap_err()
            .contains("needs the follow-up's number"));
        assert!(parse("followup done INC-3 0").is_err());
        assert!(parse("followup add INC-3")
            .unwrap_err()
            .contains("needs the item"));
        assert_eq!(parse("followup list INC-3"), Ok(Command::FollowUpList(i)));
        assert_eq!(
            parse("followups"),
            Ok(Command::FollowUps(FollowUpScope::Pending))
        );
        assert_eq!(
            parse("followups mine"),
            Ok(Command::FollowUps(FollowUpScope::Mine))
        );
        assert_eq!(
            parse("followups OVERDUE"),
            Ok(Command::FollowUps(FollowUpScope::Overdue))
        );
        assert!(parse("followups yours").is_err());
        assert!(parse("followup done INC-3 1").unwrap().is_mutation());
        assert!(!parse("followup list INC-3").unwrap().is_mutation());
        assert!(!parse("followups").unwrap().is_mutation());
    }

    #[test]
    fn new_takes_the_rest_as_its_title() {
        assert_eq!(
            parse("new  Checkout slow "),
            Ok(Command::New("Checkout slow".into()))
        );
        assert_eq!(
            parse("NEW [FIRING:1] Disk full"),
            Ok(Command::New("[FIRING:1] Disk full".into()))
        );
        assert!(parse("new").unwrap_err().contains("needs a title"));
        assert!(parse("new   ").unwrap_err().contains("needs a title"));
        assert!(parse("new x").unwrap().is_mutation());
    }

    #[test]
    fn bad_commands_say_what_would_work() {
        assert!(parse("frobnicate").unwrap_err().contains("/incident help"));
        assert!(parse("ack").unwrap_err().contains("needs an incident id"));
        assert!(parse("ack INC-x")
            .unwrap_err()
            .contains("not an incident id"));
        assert!(parse("approve INC-1")
            .unwrap_err()
            .contains("needs an action id"));
        assert!(parse("note INC-1").unwrap_err().contains("needs some text"));
        assert!(parse("list p7").unwrap_err().contains("p0..p3"));
    }

    #[test]
    fn mutations_are_flagged() {
        assert!(!parse("list").unwrap().is_mutation());
        assert!(!parse("status 1").unwrap().is_mutation());
        assert!(parse("ack 1").unwrap().is_mutation());
        assert!(parse("note 1 x").unwrap().is_mutation());
    }
}
