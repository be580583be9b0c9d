//! Severity levels P0–P3 and the targets that go with each (detection, repair, whether a human
//! must approve remediation). Targets are defaults here and can be overridden in config.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// P0 is the worst. Ordering follows urgency: `P0 < P1` means P0 is more urgent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Severity {
    P0,
    P1,
    P2,
    P3,
}

/// How much human approval remediation needs at a severity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ApprovalNeed {
    /// Nothing runs without the configured number of human approvals.
    Required,
    /// Humans should approve; playbook actions marked `auto` still wait for a human.
    StronglyRecommended,
    /// Actions marked `auto` in the playbook may run without a human.
    Optional,
}

impl ApprovalNeed {
    pub fn label(self) -> &'static str {
        match self {
            ApprovalNeed::Required => "human approval required",
            ApprovalNeed::StronglyRecommended => "human approval strongly recommended",
            ApprovalNeed::Optional => "human approval optional",
        }
    }

    /// Whether an action marked `auto` may run without a human at this level.
    pub fn allows_auto(self) -> bool {
        matches!(self, ApprovalNeed::Optional)
    }
}

/// Per-severity targets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Targets {
    pub detect_seconds: u64,
    pub repair_seconds: u64,
    pub approval: ApprovalNeed,
    /// Overrides `engine.resolve_after_clear_seconds` for this severity (0: never).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolve_after_clear_seconds: Option<u64>,
}

pub const ALL: [Severity; 4] = [Severity::P0, Severity::P1, Severity::P2, Severity::P3];

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::P0 => "P0",
            Severity::P1 => "P1",
            Severity::P2 => "P2",
            Severity::P3 => "P3",
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }

    /// The field's defaults: detection < 30 s / 1 min / 5 min / 15 min, repair < 5 / 15 / 30 /
    /// 60 min; approval required / strongly recommended / optional / optional.
    pub fn default_targets(self) -> Targets {
        let (detect, repair, approval) = match self {
            Severity::P0 => (30, 5 * 60, ApprovalNeed::Required),
            Severity::P1 => (60, 15 * 60, ApprovalNeed::StronglyRecommended),
            Severity::P2 => (5 * 60, 30 * 60, ApprovalNeed::Optional),
            Severity::P3 => (15 * 60, 60 * 60, ApprovalNeed::Optional),
        };
        Targets {
            detect_seconds: detect,
            repair_seconds: repair,
            approval,
            resolve_after_clear_seconds: None,
        }
    }

    /// Maps a monitoring system's `severity` label to a level: explicit `p0`…`p3`, and the
    /// usual words (`fatal`/`compliance`/`safety` → P0, `critical`/`page`/`high`/`error` → P1,
    /// `warning`/`medium` → P2, `info`/`low`/`none` → P3). Unknown words give `None`.
    pub fn from_label(value: &str) -> Option<Severity> {
        let v = value.trim().to_ascii_lowercase();
        Some(match v.as_str() {
            "p0" | "sev0" | "sev-0" | "fatal" | "emergency" | "compliance" | "safety"
            | "disaster" => Severity::P0,
            "p1" | "sev1" | "sev-1" | "critical" | "crit" | "page" | "high" | "error" | "major" => {
                Severity::P1
            }
            "p2" | "sev2" | "sev-2" | "warning" | "warn" | "medium" | "average" | "minor" => {
                Severity::P2
            }
            "p3" | "sev3" | "sev-3" | "info" | "informational" | "low" | "none" | "notice" => {
                Severity::P3
            }
            _ => return None,
        })
    }

    /// One step more urgent, saturating at P0.
    pub fn raised(self) -> Severity {
        match self {
            Severity::P0 | Severity::P1 => Severity::P0,
            Severity::P2 => Severity::P1,
            Severity::P3 => Severity::P2,
        }
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Severity {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_uppercase().as_str() {
            "P0" => Ok(Severity::P0),
            "P1" => Ok(Severity::P1),
            "P2" => Ok(Severity::P2),
            "P3" => Ok(Severity::P3),
            other => Err(format!(
                "unknown severity {other:?}: expected P0, P1, P2 or P3"
            )),
        }
    }
}

/// Formats a duration in seconds the way the card shows targets: `30 s`, `5 min`, `1 h`.
pub fn human_seconds(s: u64) -> String {
    if s < 60 {
        format!("{s} s")
    } else if s < 3600 || s % 3600 != 0 {
        if s % 60 == 0 {
            format!("{} min", s / 60)
        } else {
            format!("{} min {} s", s / 60, s % 60)
        }
    } else {
        format!("{} h", s / 3600)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_targets_match_the_field() {
        let t: Vec<_> = ALL.iter().map(|s| s.default_targets()).collect();
        assert_eq!(
            t.iter().map(|t| t.detect_seconds).collect::<Vec<_>>(),
            [30, 60, 300, 900]
        );
        assert_eq!(
            t.iter().map(|t| t.repair_seconds).collect::<Vec<_>>(),
            [300, 900, 1800, 3600]
        );
        assert_eq!(t[0].approval, ApprovalNeed::Required);
        assert_eq!(t[1].approval, ApprovalNeed::StronglyRecommended);
        assert!(t[2].approval.allows_auto() && t[3].approval.allows_auto());
        assert!(!t[0].approval.allows_auto() && !t[1].approval.allows_auto());
    }

    #[test]
    fn labels_map_to_levels() {
        for (label, sev) in [
            ("critical", Severity::P1),
            ("CRITICAL", Severity::P1),
            ("fatal", Severity::P0),
            ("compliance", Severity::P0),
            ("safety", Severity::P0),
            ("p0", Severity::P0),
            ("warning", Severity::P2),
            ("info", Severity::P3),
            (" P3 ", Severity::P3),
        ] {
            assert_eq!(Severity::from_label(label), Some(sev), "{label}");
        }
        assert_eq!(Severity::from_label("bogus"), None);
        assert_eq!(Severity::from_label(""), None);
    }

    #[test]
    fn parse_and_order() {
        assert_eq!("p2".parse::<Severity>().unwrap(), Severity::P2);
        assert!("P4".parse::<Severity>().unwrap_err().contains("P4"));
        assert!(Severity::P0 < Severity::P3);
        assert_eq!(Severity::P3.raised(), Severity::P2);
        assert_eq!(Severity::P0.raised(), Severity::P0);
    }

    #[test]
    fn human_durations() {
        assert_eq!(human_seconds(30), "30 s");
        assert_eq!(human_seconds(300), "5 min");
        assert_eq!(human_seconds(3600), "1 h");
        assert_eq!(human_seconds(90), "1 min 30 s");
        assert_eq!(human_seconds(5400), "90 min");
    }
}
