//! Who may approve what. Approvals are counted per action; only authorized, distinct approvers
//! count, and the two-person rule can keep the proposer or acknowledger from approving.

use serde::{Deserialize, Serialize};

use super::alert::Platform;
use super::severity::Severity;

/// Someone acting in chat or the console, as the adapters identify them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Actor {
    pub platform: Platform,
    /// Slack user id, Discord user id, console user name; `system` for the bot itself.
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Slack user-group ids or Discord role ids the user has.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub roles: Vec<String>,
}

impl Actor {
    pub fn new(platform: Platform, id: impl Into<String>) -> Self {
        Actor {
            platform,
            id: id.into(),
            name: None,
            roles: vec![],
        }
    }

    /// The bot itself (automatic actions, timers, monitoring systems).
    pub fn system() -> Self {
        Actor::new(Platform::Console, "system")
    }

    pub fn is_system(&self) -> bool {
        self.platform == Platform::Console && self.id == "system"
    }

    /// How the actor is shown: name if known, else `platform:id`.
    pub fn display(&self) -> String {
        match &self.name {
            Some(n) => n.clone(),
            None if self.is_system() => "incidentd".into(),
            None => format!("{}:{}", self.platform.as_str(), self.id),
        }
    }

    /// Same person: same platform and id.
    pub fn same_as(&self, other: &Actor) -> bool {
        self.platform == other.platform && self.id == other.id
    }
}

/// Approval rules for one severity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApprovalPolicy {
    /// Entries: `slack:U123`, `slack-group:S123`, `discord:1234`, `discord-role:5678`,
    /// `console:alice`, `platform:*` (anyone on that platform), or `*` (anyone).
    #[serde(default)]
    pub approvers: Vec<String>,
    #[serde(default = "one")]
    pub min_approvals: u32,
    /// Whether whoever acknowledged or proposed the incident may approve its actions.
    #[serde(default = "yes")]
    pub allow_proposer: bool,
    #[serde(default = "default_expiry")]
    pub expiry_seconds: u64,
}

fn one() -> u32 {
    1
}
fn yes() -> bool {
    true
}
fn default_expiry() -> u64 {
    600
}

impl ApprovalPolicy {
    pub fn default_for(sev: Severity) -> Self {
        let (min, expiry, allow_proposer) = match sev {
            Severity::P0 => (2, 120, false),
            Severity::P1 => (1, 120, true),
            Severity::P2 | Severity::P3 => (1, 600, true),
        };
        ApprovalPolicy {
            approvers: vec![],
            min_approvals: min,
            allow_proposer,
            expiry_seconds: expiry,
        }
    }

    /// Whether the actor is on the approver list.
    pub fn is_approver(&self, actor: &Actor) -> bool {
        if actor.is_system() {
            return false;
        }
        let p = actor.platform.as_str();
        self.approvers.iter().any(|entry| {
            if entry == "*" {
                return true;
            }
            let Some((kind, value)) = entry.split_once(':') else {
                return false;
            };
            match kind.strip_suffix("-group").or(kind.strip_suffix("-role")) {
                Some(platform) => platform == p && actor.roles.iter().any(|r| r == value),
                None => kind == p && (value == "*" || value == actor.id),
            }
        })
    }
}

/// Why an approval did not count.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "reason")]
pub enum Refusal {
    NotAuthorized,
    AlreadyApproved,
    /// Two-person rule: the proposer/acknowledger may not approve.
    ProposerMayNotApprove,
    AlreadyDecided,
}

impl Refusal {
    pub fn message(&self) -> &'static str {
        match self {
            Refusal::NotAuthorized => "you are not an authorized approver for this severity",
            Refusal::AlreadyApproved => "you have already approved this action",
            Refusal::ProposerMayNotApprove => {
                "two-person rule: whoever acknowledged or proposed this incident may not approve its actions"
            }
            Refusal::AlreadyDecided => "this action has already been decided",
        }
    }
}

/// Checks one approval against the policy. `prior` are the approvals already counted;
/// `proposers` are those barred by the two-person rule when it applies.
pub fn check_approval(
    policy: &ApprovalPolicy,
    actor: &Actor,
    prior: &[Actor],
    proposers: &[&Actor],
) -> Result<(), Refusal> {
    if !policy.is_approver(actor) {
        return Err(Refusal::NotAuthorized);
    }
    if prior.iter().any(|a| a.same_as(actor)) {
        return Err(Refusal::AlreadyApproved);
    }
    if !policy.allow_proposer && proposers.iter().any(|p| p.same_as(actor)) {
        return Err(Refusal::ProposerMayNotApprove);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(approvers: &[&str]) -> ApprovalPolicy {
        ApprovalPolicy {
            approvers: approvers.iter().map(|s| s.to_string()).collect(),
            ..ApprovalPolicy::default_for(Severity::P1)
        }
    }

    #[test]
    fn approver_entries() {
        let alice = Actor::new(Platform::Slack, "U1");
        let mut bob = Actor::new(Platform::Discord, "42");
        bob.roles = vec!["777".into()];
        let carol = Actor::new(Platform::Console, "carol");

        assert!(policy(&["slack:U1"]).is_approver(&alice));
        assert!(!policy(&["slack:U2"]).is_approver(&alice));
        assert!(
            !policy(&["discord:U1"]).is_approver(&alice),
            "platform must match"
        );
        assert!(policy(&["discord-role:777"]).is_approver(&bob));
        assert!(!policy(&["slack-group:777"]).is_approver(&bob));
        assert!(policy(&["console:*"]).is_approver(&carol));
        assert!(!policy(&["console:*"]).is_approver(&alice));
        assert!(policy(&["*"]).is_approver(&bob));
        assert!(!policy(&[]).is_approver(&alice), "empty list: nobody");
        assert!(
            !policy(&["*"]).is_approver(&Actor::system()),
            "never the bot"
        );
        assert!(!policy(&["garbage"]).is_approver(&alice));
    }

    #[test]
    fn two_person_rule_and_duplicates() {
        let alice = Actor::new(Platform::Slack, "U1");
        let bob = Actor::new(Platform::Slack, "U2");
        let mut p = policy(&["slack:*"]);
        assert_eq!(check_approval(&p, &alice, &[], &[&alice]), Ok(()));
        p.allow_proposer = false;
        assert_eq!(
            check_approval(&p, &alice, &[], &[&alice]),
            Err(Refusal::ProposerMayNotApprove)
        );
        assert_eq!(check_approval(&p, &bob, &[], &[&alice]), Ok(()));
        assert_eq!(
            check_approval(&p, &bob, std::slice::from_ref(&bob), &[]),
            Err(Refusal::AlreadyApproved)
        );
        let eve = Actor::new(Platform::Discord, "U2");
        assert_eq!(
            check_approval(&p, &eve, &[], &[]),
            Err(Refusal::NotAuthorized)
        );
    }

    #[test]
    fn defaults_per_severity() {
        assert_eq!(ApprovalPolicy::default_for(Severity::P0).min_approvals, 2);
        assert!(!ApprovalPolicy::default_for(Severity::P0).allow_proposer);
        assert_eq!(
            ApprovalPolicy::default_for(Severity::P1).expiry_seconds,
            120
        );
        assert_eq!(
            ApprovalPolicy::default_for(Severity::P3).expiry_seconds,
            600
        );
    }
}

#[cfg(test)]
mod table {
    use super::*;
    use crate::domain::severity::ALL;

    /// Every row of severity × actor × prior approvals, against the default policies with one
    /// approver list for all severities.
    #[test]
    fn decision_table() {
        let alice = Actor::new(Platform::Slack, "UALICE"); // approver, acknowledged the incident
        let bob = Actor::new(Platform::Slack, "UBOB"); // approver
        let eve = Actor::new(Platform::Slack, "UEVE"); // not an approver
        let bot = Actor::system();
        use Refusal::*;
        for sev in ALL {
            let policy = ApprovalPolicy {
                approvers: vec!["slack:UALICE".into(), "slack:UBOB".into()],
                ..ApprovalPolicy::default_for(sev)
            };
            let two_person = sev == Severity::P0;
            let rows: [(&Actor, &[&Actor], Result<(), Refusal>); 8] = [
                (&bob, &[], Ok(())),
                (&bob, &[&alice], Ok(())),
                (&bob, &[&bob], Err(AlreadyApproved)),
                (&eve, &[], Err(NotAuthorized)),
                (&eve, &[&bob], Err(NotAuthorized)),
                (&bot, &[], Err(NotAuthorized)),
                (
                    &alice,
                    &[],
                    if two_person {
                        Err(ProposerMayNotApprove)
                    } else {
                        Ok(())
                    },
                ),
                (
                    &alice,
                    &[&bob],
                    if two_person {
                        Err(ProposerMayNotApprove)
                    } else {
                        Ok(())
                    },
                ),
            ];
            for (actor, prior, want) in rows {
                let prior: Vec<Actor> = prior.iter().map(|a| (*a).clone()).collect();
                assert_eq!(
                    check_approval(&policy, actor, &prior, &[&alice]),
                    want,
                    "{sev} {} after {:?}",
                    actor.id,
                    prior.iter().map(|a| &a.id).collect::<Vec<_>>()
                );
            }
            // How many distinct approvals it takes, and how long a request waits.
            let (min, expiry) = match sev {
                Severity::P0 => (2, 120),
                Severity::P1 => (1, 120),
                _ => (1, 600),
            };
            assert_eq!(
                (policy.min_approvals, policy.expiry_seconds),
                (min, expiry),
                "{sev}"
            );
        }
    }
}
