//! Deciding access at an instant. Intervals are `[start, end)`; no end means permanent. An
//! activated window counts only while the eligibility it came from still holds, so removing or
//! expiring the eligibility ends the access at once, without any background job.

/// An eligible or active schedule, as the decision needs it.
#[derive(Debug, Clone)]
pub struct Interval {
    pub id: String,
    pub start_ms: i64,
    pub end_ms: Option<i64>,
}

impl Interval {
    pub fn covers(&self, at_ms: i64) -> bool {
        covers(self.start_ms, self.end_ms, at_ms)
    }
}

/// Whether `[start, end)` (no end: permanent) covers an instant.
pub fn covers(start_ms: i64, end_ms: Option<i64>, at_ms: i64) -> bool {
    start_ms <= at_ms && end_ms.is_none_or(|end| at_ms < end)
}

/// An activated window and the eligibility it came from (if that still exists).
#[derive(Debug, Clone)]
pub struct ActivatedWindow {
    pub window: Interval,
    pub eligibility: Option<Interval>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Allowed { via: String, until_ms: Option<i64> },
    Denied { reason: &'static str },
}

impl Decision {
    /// The better of two ways to hold a role: allowed over denied, then the one lasting longest.
    pub fn or(self, other: Decision) -> Decision {
        match (&self, &other) {
            (Decision::Denied { .. }, _) => other,
            (_, Decision::Denied { .. }) => self,
            (Decision::Allowed { until_ms: a, .. }, Decision::Allowed { until_ms: b, .. }) => {
                if b.unwrap_or(i64::MAX) > a.unwrap_or(i64::MAX) {
                    other
                } else {
                    self
                }
            }
        }
    }
}

/// Active schedules win over windows; among windows, the one lasting longest.
pub fn decide(active: &[Interval], windows: &[ActivatedWindow], at_ms: i64) -> Decision {
    if let Some(schedule) = active
        .iter()
        .filter(|s| s.covers(at_ms))
        .max_by_key(|s| s.end_ms.unwrap_or(i64::MAX))
    {
        return Decision::Allowed {
            via: format!("active_schedule:{}", schedule.id),
            until_ms: schedule.end_ms,
        };
    }
    let best = windows
        .iter()
        .filter(|w| {
            w.window.covers(at_ms) && w.eligibility.as_ref().is_some_and(|e| e.covers(at_ms))
        })
        .map(|w| {
            let until = match (
                w.window.end_ms,
                w.eligibility.as_ref().and_then(|e| e.end_ms),
            ) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            (w, until)
        })
        .max_by_key(|(_, until)| until.unwrap_or(i64::MAX));
    match best {
        Some((w, until_ms)) => Decision::Allowed {
            via: format!("window:{}", w.window.id),
            until_ms,
        },
        None => Decision::Denied {
            reason: "no active assignment or activated window covers this role at this scope now",
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn interval(id: &str, start: i64, end: Option<i64>) -> Interval {
        Interval {
            id: id.into(),
            start_ms: start,
            end_ms: end,
        }
    }

    #[test]
    fn a_window_ends_exactly_at_its_end() {
        let windows = [ActivatedWindow {
            window: interval("w", 1_000, Some(2_000)),
            eligibility: Some(interval("e", 0, None)),
        }];
        assert!(matches!(
            decide(&[], &windows, 999),
            Decision::Denied { .. }
        ));
        assert_eq!(
            decide(&[], &windows, 1_999),
            Decision::Allowed {
                via: "window:w".into(),
                until_ms: Some(2_000)
            }
        );
        assert!(matches!(
            decide(&[], &windows, 2_000),
            Decision::Denied { .. }
        ));
    }

    #[test]
    fn a_window_dies_with_its_eligibility() {
        let windows = [ActivatedWindow {
            window: interval("w", 0, Some(10_000)),
            eligibility: Some(interval("e", 0, Some(5_000))),
        }];
        assert!(matches!(
            decide(&[], &windows, 4_999),
            Decision::Allowed {
                until_ms: Some(5_000),
                ..
            }
        ));
        assert!(matches!(
            decide(&[], &windows, 5_000),
            Decision::Denied { .. }
        ));
        let orphan = [ActivatedWindow {
            window: interval("w", 0, Some(10_000)),
            eligibility: None,
        }];
        assert!(matches!(decide(&[], &orphan, 1), Decision::Denied { .. }));
    }

    #[test]
    fn permanent_active_assignments_allow_without_end() {
        let active = [interval("a", 0, None)];
        assert_eq!(
            decide(&active, &[], 42),
            Decision::Allowed {
                via: "active_schedule:a".into(),
                until_ms: None
            }
        );
    }
}
