//! The timer task's armed timers in due order, compact.
//!
//! During a storm every new incident arms one or two deadlines, so this set is as large as the
//! storm. A `BTreeSet<(DateTime, IncidentId, TimerKind)>` cost about 48 bytes per timer (24-byte
//! elements in half-full nodes: timers arrive in nearly ascending order, which leaves every
//! split node half empty). Here timers sit in one vector per due second, 16 bytes each: the
//! second is the map's key, and only the nanoseconds, the incident and the kind are stored.
//! The bucket of the earliest second is sorted (latest first) once it is the earliest, so the
//! next timer is its last element; timers added to it later go to their place.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

use crate::domain::incident::IncidentId;
use crate::ports::{Timer, TimerKind};

/// A timer within its second. Field order is the order timers fire in (as `(at, incident,
/// kind)` did): time, then incident, then kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Due {
    nanos: u32,
    incident: IncidentId,
    kind: TimerKind,
}

#[derive(Default)]
pub struct DueTimers {
    buckets: BTreeMap<i64, Vec<Due>>,
    /// The second whose bucket is sorted latest first and deduplicated.
    sorted: Option<i64>,
}

fn split(t: &Timer) -> (i64, Due) {
    (
        t.at.timestamp(),
        Due {
            nanos: t.at.timestamp_subsec_nanos(),
            incident: t.incident,
            kind: t.kind,
        },
    )
}

fn join(second: i64, d: Due) -> Timer {
    Timer {
        incident: d.incident,
        kind: d.kind,
        // Exactly the instant that was split (a leap second's nanoseconds included).
        at: DateTime::<Utc>::from_timestamp(second, d.nanos).unwrap_or_default(),
    }
}

impl DueTimers {
    pub fn new(timers: impl IntoIterator<Item = Timer>) -> DueTimers {
        let mut due = DueTimers::default();
        for t in timers {
            due.insert(t);
        }
        due
    }

    /// Adds a timer; adding one that is already there changes nothing.
    pub fn insert(&mut self, t: Timer) {
        let (second, d) = split(&t);
        let bucket = self.buckets.entry(second).or_default();
        if self.sorted == Some(second) {
            let at = bucket.partition_point(|x| *x > d);
            if bucket.get(at) != Some(&d) {
                bucket.insert(at, d);
            }
        } else {
            // Duplicates go when the bucket is sorted.
            bucket.push(d);
        }
    }

    /// The earliest timer.
    pub fn first(&mut self) -> Option<Timer> {
        let (&second, bucket) = self.buckets.iter_mut().next()?;
        if self.sorted != Some(second) {
            bucket.sort_unstable_by(|a, b| b.cmp(a));
            bucket.dedup();
            self.sorted = Some(second);
        }
        bucket.last().map(|d| join(second, *d))
    }

    /// Removes and returns the earliest timer if it is due at `now`.
    pub fn pop_due(&mut self, now: DateTime<Utc>) -> Option<Timer> {
        let t = self.first().filter(|t| t.at <= now)?;
        let mut entry = self.buckets.first_entry()?;
        entry.get_mut().pop();
        if entry.get().is_empty() {
            entry.remove();
            self.sorted = None;
        }
        Some(t)
    }

    pub fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    const KINDS: [TimerKind; 3] = [
        TimerKind::AckDeadline,
        TimerKind::RepairDeadline,
        TimerKind::CardFlush,
    ];

    fn timer(ms: i64, id: u64, kind: usize) -> Timer {
        Timer {
            incident: IncidentId(id),
            kind: KINDS[kind],
            at: DateTime::<Utc>::from_timestamp_millis(1_700_000_000_000 + ms).unwrap(),
        }
    }

    proptest! {
        /// Against the `BTreeSet` it replaced, as the reference: the same timers come out, in
        /// the same order, at the same moments, whatever is added between pops.
        #[test]
        fn fires_like_an_ordered_set(
            ops in proptest::collection::vec(
                prop_oneof![
                    (0i64..5_000, 0u64..5, 0usize..3).prop_map(|(ms, id, k)| (true, ms, id, k)),
                    (0i64..500).prop_map(|step| (false, step, 0, 0)),
                ],
                0..150,
            )
        ) {
            let mut ours = DueTimers::default();
            let mut reference: BTreeSet<(DateTime<Utc>, IncidentId, TimerKind)> = BTreeSet::new();
            let mut now_ms = 0i64;
            for (add, a, id, k) in ops {
                if add {
                    // Due at or after "now", as armed timers are (and sometimes before).
                    let t = timer(now_ms + a - 200, id, k);
                    ours.insert(t);
                    reference.insert((t.at, t.incident, t.kind));
                } else {
                    now_ms += a;
                    let now = timer(now_ms, 0, 0).at;
                    let mut fired = Vec::new();
                    while let Some(t) = ours.pop_due(now) {
                        fired.push((t.at, t.incident, t.kind));
                    }
                    let mut expected = Vec::new();
                    while let Some(&(at, i, k)) = reference.first() {
                        if at > now {
                            break;
                        }
                        reference.pop_first();
                        expected.push((at, i, k));
                    }
                    prop_assert_eq!(fired, expected);
                    let next = ours.first().map(|t| (t.at, t.incident, t.kind));
                    prop_assert_eq!(next, reference.first().copied());
                }
            }
            prop_assert_eq!(ours.is_empty(), reference.is_empty());
        }
    }

    #[test]
    fn sixteen_bytes_a_timer() {
        assert_eq!(std::mem::size_of::<Due>(), 16);
    }

    #[test]
    fn keeps_the_exact_instant() {
        let at = DateTime::<Utc>::from_timestamp(1_700_000_000, 123_456_789).unwrap();
        let t = Timer {
            incident: IncidentId(7),
            kind: TimerKind::AckDeadline,
            at,
        };
        let mut due = DueTimers::new([t, t]);
        assert_eq!(due.pop_due(at), Some(t));
        assert_eq!(due.pop_due(at), None, "a timer added twice fires once");
        assert!(due.is_empty());
    }
}
