//! What an incident's timeline says for the outcome numbers (docs/metrics.md), folded event by
//! event as the core decides them, so that reading the numbers never needs the timeline again.
//!
//! Two facts are not in the incident's other fields: whether a human intervened during the
//! response, and how each automatic action ended. `Tally::record` derives both from timeline
//! events only; `Tally::of` folds a whole timeline (incidents stored before tallies existed).

use serde::{Deserialize, Serialize};

use super::incident::{EventKind, Status, TimelineEvent};

/// The action id of the configured pager: paging is not a remediation.
const PAGER: &str = "pager";

/// How an automatic action ended (or where it is).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AutoOutcome {
    /// Queued, running, or ran and waits for its verification.
    Pending,
    /// Ran and exited successfully; it has no verification step.
    Succeeded,
    /// Ran, and its verification passed.
    Verified,
    /// Exited with an error (or was refused before launch).
    Failed,
    /// Ran, but its verification failed (it was then rolled back or escalated).
    NotVerified,
    /// incidentd stopped while it ran: the outcome is unknown.
    Interrupted,
}

impl AutoOutcome {
    /// Counted in the auto-remediation success rate's denominator.
    pub fn is_final(self) -> bool {
        self != AutoOutcome::Pending
    }

    /// Counted in its numerator: fixed without a human and without a rollback.
    pub fn is_success(self) -> bool {
        matches!(self, AutoOutcome::Succeeded | AutoOutcome::Verified)
    }
}

/// One automatic action on the incident.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AutoRun {
    pub action: String,
    pub outcome: AutoOutcome,
    /// Exited successfully; waiting to see whether a verification follows.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    ran_ok: bool,
    /// Its verification started: the incident went to verifying after it ran (what a folded
    /// timeline can tell), or was verifying it when the run's decision was settled.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    verifying: bool,
}

/// The fold of one incident's timeline.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tally {
    /// A person took an operational decision while the incident was active (docs/metrics.md
    /// lists the events that count).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub human: bool,
    /// The incident is resolved or closed (as far as the events folded so far say).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    ended: bool,
    /// Automatic actions, in the order they were queued.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub auto: Vec<AutoRun>,
}

impl Tally {
    /// Folds a whole timeline.
    pub fn of(timeline: &[TimelineEvent]) -> Tally {
        let mut t = Tally::default();
        for ev in timeline {
            t.record(ev);
        }
        t.settle(None);
        t
    }

    /// Automatic actions with a final outcome, and those of them that succeeded.
    pub fn auto_counts(&self) -> (u32, u32) {
        let done = self.auto.iter().filter(|r| r.outcome.is_final()).count() as u32;
        let ok = self.auto.iter().filter(|r| r.outcome.is_success()).count() as u32;
        (done, ok)
    }

    fn run_mut(&mut self, action: &str) -> Option<&mut AutoRun> {
        self.auto.iter_mut().rev().find(|r| r.action == action)
    }

    /// Folds one event.
    pub fn record(&mut self, ev: &TimelineEvent) {
        let human = !ev.actor.is_system();
        let active = !self.ended;
        match &ev.kind {
            EventKind::StatusChanged { to, .. } => {
                // Reopening a resolved incident is an intervention too.
                if human {
                    self.human = true;
                }
                self.ended = matches!(to, Status::Resolved | Status::Closed);
                if *to == Status::Verifying {
                    if let Some(r) = self
                        .auto
                        .iter_mut()
                        .rev()
                        .find(|r| r.ran_ok && r.outcome == AutoOutcome::Pending)
                    {
                        r.verifying = true;
                    }
                }
            }
            EventKind::ActionApproved { .. }
            | EventKind::ActionRejected { .. }
            | EventKind::SeverityChanged { .. }
            | EventKind::Assigned { .. }
            | EventKind::Acknowledged
                if human && active =>
            {
                self.human = true
            }
            // A root cause confirmed during the response is diagnosis; after it, it is review.
            EventKind::RootCauseSet { .. } if human && active => self.human = true,
            // Stores before `Acknowledged` recorded an acknowledgement during remediation so.
            EventKind::Note { text } if human && active && text == "acknowledged" => {
                self.human = true
            }
            EventKind::ExecutionQueued {
                action,
                rollback_of,
                ..
            } => {
                if human {
                    self.human = true;
                } else if rollback_of.is_none() && action != PAGER {
                    self.auto.push(AutoRun {
                        action: action.clone(),
                        outcome: AutoOutcome::Pending,
                        ran_ok: false,
                        verifying: false,
                    });
                }
            }
            EventKind::ExecutionFinished {
                action, success, ..
            } => {
                if let Some(r) = self.run_mut(action) {
                    if r.outcome == AutoOutcome::Pending && !r.ran_ok {
                        if *success {
                            r.ran_ok = true;
                        } else {
                            r.outcome = AutoOutcome::Failed;
                        }
                    }
                }
            }
            EventKind::Verified { action, ok, .. } => {
                if let Some(r) = self.run_mut(action) {
                    if r.outcome == AutoOutcome::Pending {
                        r.ran_ok = false;
                        r.outcome = if *ok {
                            AutoOutcome::Verified
                        } else {
                            AutoOutcome::NotVerified
                        };
                    }
                }
            }
            EventKind::ExecutionInterrupted { action, .. } => {
                if let Some(r) = self.run_mut(action) {
                    if r.outcome == AutoOutcome::Pending && !r.ran_ok {
                        r.outcome = AutoOutcome::Interrupted;
                    }
                }
            }
            _ => {}
        }
    }

    /// After the events of one decision: an action that exited successfully and is not being
    /// verified (`verifying`: the incident's action under verification) has no verification
    /// step, so it succeeded. For a whole timeline (`None`), the move to verifying that followed
    /// the run tells. A run whose verification started and never finished (a person resolved
    /// or escalated the incident first) stays pending: it has no outcome.
    pub fn settle(&mut self, verifying: Option<Option<&str>>) {
        for r in &mut self.auto {
            if !r.ran_ok || r.outcome != AutoOutcome::Pending || r.verifying {
                continue;
            }
            let waiting = match verifying {
                Some(v) => v == Some(r.action.as_str()),
                None => r.verifying,
            };
            if waiting {
                // Decided once, right after the run: it has a verification step, so only its
                // verification gives it an outcome, whatever clears the wait later.
                r.verifying = true;
            } else {
                r.ran_ok = false;
                r.outcome = AutoOutcome::Succeeded;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::alert::Platform;
    use crate::domain::policy::Actor;
    use chrono::Utc;

    fn ev(actor: Actor, kind: EventKind) -> TimelineEvent {
        TimelineEvent {
            at: Utc::now(),
            actor,
            kind,
        }
    }

    fn queued(action: &str, rollback_of: Option<&str>) -> EventKind {
        EventKind::ExecutionQueued {
            action: action.into(),
            execution: format!("INC-1:{action}"),
            rollback_of: rollback_of.map(String::from),
        }
    }

    fn finished(action: &str, success: bool) -> EventKind {
        EventKind::ExecutionFinished {
            action: action.into(),
            execution: format!("INC-1:{action}"),
            success,
            summary: String::new(),
        }
    }

    #[test]
    fn a_rolled_back_action_is_one_failure_not_two_successes() {
        let sys = Actor::system();
        let mut t = Tally::default();
        for k in [queued("restart", None), finished("restart", true)] {
            t.record(&ev(sys.clone(), k));
        }
        t.settle(Some(Some("restart")));
        assert_eq!(t.auto_counts(), (0, 0), "still verifying");
        for k in [
            EventKind::Verified {
                action: "restart".into(),
                ok: false,
                summary: String::new(),
            },
            queued("undo", Some("restart")),
            finished("undo", true),
        ] {
            t.record(&ev(sys.clone(), k));
        }
        t.settle(Some(None));
        assert_eq!(t.auto_counts(), (1, 0));
        assert!(!t.human);
    }

    #[test]
    fn success_without_verification_and_interrupted() {
        let sys = Actor::system();
        let mut t = Tally::default();
        t.record(&ev(sys.clone(), queued("a", None)));
        t.record(&ev(sys.clone(), finished("a", true)));
        t.settle(Some(None));
        t.record(&ev(sys.clone(), queued("b", None)));
        t.record(&ev(
            sys.clone(),
            EventKind::ExecutionInterrupted {
                action: "b".into(),
                execution: "INC-1:b".into(),
            },
        ));
        t.record(&ev(sys.clone(), queued("pager", None)));
        assert_eq!(t.auto_counts(), (2, 1));
    }

    #[test]
    fn human_decisions_count_during_the_response_only() {
        let alice = Actor::new(Platform::Slack, "U1");
        let sys = Actor::system();
        let mut t = Tally::default();
        t.record(&ev(
            sys.clone(),
            EventKind::StatusChanged {
                from: Status::Open,
                to: Status::Resolved,
                note: None,
            },
        ));
        t.record(&ev(
            alice.clone(),
            EventKind::RootCauseSet {
                category: crate::domain::classify::RootCause::Configuration,
                text: None,
            },
        ));
        t.record(&ev(
            alice.clone(),
            EventKind::Note {
                text: "acknowledged".into(),
            },
        ));
        assert!(!t.human, "review after resolution is not an intervention");
        let mut u = Tally::default();
        u.record(&ev(
            alice,
            EventKind::SeverityChanged {
                from: crate::domain::severity::Severity::P2,
                to: crate::domain::severity::Severity::P1,
            },
        ));
        assert!(u.human, "re-triage is an intervention");
    }

    #[test]
    fn a_folded_timeline_knows_a_run_under_verification() {
        let sys = Actor::system();
        let to = |to| {
            ev(
                Actor::system(),
                EventKind::StatusChanged {
                    from: Status::Remediating,
                    to,
                    note: None,
                },
            )
        };
        let verifying = Tally::of(&[
            ev(sys.clone(), queued("a", None)),
            ev(sys.clone(), finished("a", true)),
            to(Status::Verifying),
        ]);
        assert_eq!(verifying.auto_counts(), (0, 0));
        let no_verification = Tally::of(&[
            ev(sys.clone(), queued("a", None)),
            ev(sys.clone(), finished("a", true)),
        ]);
        assert_eq!(no_verification.auto_counts(), (1, 1));
        let verified = Tally::of(&[
            ev(sys.clone(), queued("a", None)),
            ev(sys.clone(), finished("a", true)),
            to(Status::Verifying),
            ev(
                sys.clone(),
                EventKind::Verified {
                    action: "a".into(),
                    ok: true,
                    summary: String::new(),
                },
            ),
            to(Status::Resolved),
        ]);
        assert_eq!(verified.auto_counts(), (1, 1));
    }
}
