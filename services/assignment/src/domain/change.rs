//! The new window of a schedule that is updated, extended or renewed (Graph's adminUpdate,
//! adminExtend and adminRenew). No I/O here.

use pim_proto::assignment::v1::ScheduleChange;

/// The shortest window PIM writes.
pub const MIN_WINDOW_MS: i64 = 5 * 60 * 1000;

/// Why a change does not apply to the schedule as it is.
#[derive(Debug, PartialEq, Eq)]
pub enum ChangeRefusal {
    /// A field is wrong whatever the schedule: (field, message).
    Invalid(&'static str, &'static str),
    /// The schedule's state does not allow it: (stable reason, message).
    State(&'static str, &'static str),
}

/// The `(start, end)` after `change`, or why not.
pub fn next_window(
    change: ScheduleChange,
    start_ms: i64,
    end_ms: Option<i64>,
    new_end_ms: Option<i64>,
    now_ms: i64,
) -> Result<(i64, Option<i64>), ChangeRefusal> {
    let ended = end_ms.is_some_and(|end| end <= now_ms);
    let (start, ended_required) = match change {
        ScheduleChange::Update | ScheduleChange::Extend => (start_ms, false),
        ScheduleChange::Renew => (now_ms, true),
        ScheduleChange::Unspecified => {
            return Err(ChangeRefusal::Invalid(
                "change",
                "must be UPDATE, EXTEND or RENEW",
            ));
        }
    };
    if ended && !ended_required {
        return Err(ChangeRefusal::State(
            "SCHEDULE_EXPIRED",
            "the schedule has ended; renew it instead",
        ));
    }
    if !ended && ended_required {
        return Err(ChangeRefusal::State(
            "SCHEDULE_NOT_EXPIRED",
            "only a schedule that has ended can be renewed; extend it instead",
        ));
    }
    if change == ScheduleChange::Extend {
        let Some(end) = end_ms else {
            return Err(ChangeRefusal::State(
                "NOT_EXTENDABLE",
                "a permanent schedule has nothing to extend",
            ));
        };
        if new_end_ms.is_some_and(|new_end| new_end <= end) {
            return Err(ChangeRefusal::Invalid(
                "end_time",
                "an extension must end later than the schedule does",
            ));
        }
    }
    if let Some(new_end) = new_end_ms {
        if new_end <= now_ms {
            return Err(ChangeRefusal::Invalid("end_time", "must be in the future"));
        }
        if new_end - start < MIN_WINDOW_MS {
            return Err(ChangeRefusal::Invalid(
                "end_time",
                "a schedule lasts at least 5 minutes",
            ));
        }
    }
    Ok((start, new_end_ms))
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: i64 = 86_400_000;

    #[test]
    fn extend_renew_and_update_apply_to_the_right_states() {
        let now = 100 * DAY;
        // Running until now + 1 day.
        assert_eq!(
            next_window(
                ScheduleChange::Extend,
                0,
                Some(now + DAY),
                Some(now + 30 * DAY),
                now
            ),
            Ok((0, Some(now + 30 * DAY)))
        );
        assert_eq!(
            next_window(
                ScheduleChange::Extend,
                0,
                Some(now + DAY),
                Some(now + DAY),
                now
            ),
            Err(ChangeRefusal::Invalid(
                "end_time",
                "an extension must end later than the schedule does"
            ))
        );
        assert!(matches!(
            next_window(
                ScheduleChange::Renew,
                0,
                Some(now + DAY),
                Some(now + 30 * DAY),
                now
            ),
            Err(ChangeRefusal::State("SCHEDULE_NOT_EXPIRED", _))
        ));
        assert!(matches!(
            next_window(ScheduleChange::Extend, 0, None, Some(now + DAY), now),
            Err(ChangeRefusal::State("NOT_EXTENDABLE", _))
        ));
        // Ended exactly now.
        assert_eq!(
            next_window(ScheduleChange::Renew, 0, Some(now), Some(now + DAY), now),
            Ok((now, Some(now + DAY)))
        );
        assert!(matches!(
            next_window(ScheduleChange::Update, 0, Some(now), Some(now + DAY), now),
            Err(ChangeRefusal::State("SCHEDULE_EXPIRED", _))
        ));
        assert!(matches!(
            next_window(
                ScheduleChange::Update,
                0,
                Some(now + DAY),
                Some(now - 1),
                now
            ),
            Err(ChangeRefusal::Invalid("end_time", _))
        ));
    }
}
