//! The rules of access reviews, without I/O: what a definition must say, when its instances
//! start, what an item is recommended, and what an undecided item becomes at the end.

use chrono::Months;
use pim_proto::approval::v1::{
    DefaultDecision, ReviewDecision, ReviewDefinition, ReviewRecurrence, ReviewerKind,
};

pub const DAY_MS: i64 = 86_400_000;
pub const MAX_INACTIVE_DAYS: u32 = 730;
pub const DEFAULT_LOOKBACK_DAYS: u32 = 30;

/// Field violations of a definition about to be created.
pub fn validate(d: &ReviewDefinition) -> Vec<(String, String)> {
    let mut v = Vec::new();
    let mut add =
        |field: &str, message: &str| v.push((format!("definition.{field}"), message.to_owned()));
    if d.display_name.trim().is_empty() || d.display_name.chars().count() > 200 {
        add("display_name", "is required, at most 200 characters");
    }
    if d.role_ids.is_empty() || d.role_ids.len() > 50 {
        add("role_ids", "must name between 1 and 50 roles");
    }
    if !d.scope.starts_with('/') {
        add("scope", "must be a scope path such as /");
    }
    if !d.include_eligible && !d.include_active {
        add(
            "include_eligible",
            "review eligible or active assignments, or both",
        );
    }
    if d.inactive_days > MAX_INACTIVE_DAYS {
        add("inactive_days", "must be at most 730");
    }
    match d.reviewer_kind() {
        ReviewerKind::Unspecified => add("reviewer_kind", "must be SELF, NAMED or ADMINS"),
        ReviewerKind::Named if d.reviewers.is_empty() => {
            add("reviewers", "name at least one user or group")
        }
        _ => {}
    }
    if d.recurrence() == ReviewRecurrence::Unspecified {
        add(
            "recurrence",
            "must be ONE_TIME or an interval such as QUARTERLY",
        );
    }
    if d.instance_duration_days == 0 || d.instance_duration_days > 365 {
        add("instance_duration_days", "must be between 1 and 365");
    }
    if let Some(period) = months(d.recurrence()).map(|m| i64::from(m) * 28)
        && i64::from(d.instance_duration_days) > period
    {
        add(
            "instance_duration_days",
            "an instance must end before the next one starts",
        );
    }
    if d.recurrence() == ReviewRecurrence::Weekly && d.instance_duration_days > 7 {
        add(
            "instance_duration_days",
            "a weekly review's instance lasts at most 7 days",
        );
    }
    let settings = d.settings.unwrap_or_default();
    if settings.recommendation_lookback_days > MAX_INACTIVE_DAYS {
        add(
            "settings.recommendation_lookback_days",
            "must be at most 730",
        );
    }
    v
}

fn months(recurrence: ReviewRecurrence) -> Option<u32> {
    match recurrence {
        ReviewRecurrence::Monthly => Some(1),
        ReviewRecurrence::Quarterly => Some(3),
        ReviewRecurrence::SemiAnnually => Some(6),
        ReviewRecurrence::Annually => Some(12),
        _ => None,
    }
}

/// When the instance after one starting at `start_ms` starts; `None` for a one-time review.
pub fn next_start(recurrence: ReviewRecurrence, start_ms: i64) -> Option<i64> {
    if recurrence == ReviewRecurrence::Weekly {
        return Some(start_ms + 7 * DAY_MS);
    }
    let start = pim_clock::from_millis(start_ms);
    let next = start.checked_add_months(Months::new(months(recurrence)?))?;
    Some(next.timestamp_millis())
}

/// The recommendation for a principal who activated `count` times in the look-back, the last
/// time at `last_ms`, and why.
pub fn recommend(
    count: i64,
    last_ms: Option<i64>,
    lookback_days: u32,
    now_ms: i64,
) -> (ReviewDecision, String) {
    if count > 0 {
        return (
            ReviewDecision::Approve,
            format!("activated {count} time(s) in the last {lookback_days} days"),
        );
    }
    let reason = match last_ms {
        Some(last) => format!("not activated in {} days", (now_ms - last) / DAY_MS),
        None => format!("not activated in the last {lookback_days} days"),
    };
    (ReviewDecision::Deny, reason)
}

/// What an item nobody decided becomes when its instance ends.
pub fn at_end(default: DefaultDecision, recommendation: ReviewDecision) -> ReviewDecision {
    match default {
        DefaultDecision::Approve => ReviewDecision::Approve,
        DefaultDecision::Deny => ReviewDecision::Deny,
        DefaultDecision::Recommendation if recommendation != ReviewDecision::Unspecified => {
            recommendation
        }
        _ => ReviewDecision::NotReviewed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quarterly_instances_start_three_calendar_months_apart() {
        let jan_31 = chrono::DateTime::parse_from_rfc3339("2027-01-31T09:00:00Z").unwrap();
        let next = next_start(ReviewRecurrence::Quarterly, jan_31.timestamp_millis()).unwrap();
        assert_eq!(
            pim_clock::from_millis(next).to_rfc3339(),
            "2027-04-30T09:00:00+00:00"
        );
        assert_eq!(next_start(ReviewRecurrence::OneTime, 0), None);
        assert_eq!(next_start(ReviewRecurrence::Weekly, 0), Some(7 * DAY_MS));
    }

    #[test]
    fn recommendations_follow_recent_activations() {
        let now = 100 * DAY_MS;
        assert_eq!(
            recommend(3, Some(now - DAY_MS), 30, now).0,
            ReviewDecision::Approve
        );
        let (decision, reason) = recommend(0, Some(now - 45 * DAY_MS), 30, now);
        assert_eq!(
            (decision, reason.as_str()),
            (ReviewDecision::Deny, "not activated in 45 days")
        );
    }

    #[test]
    fn undecided_items_take_the_default() {
        assert_eq!(
            at_end(DefaultDecision::Deny, ReviewDecision::Approve),
            ReviewDecision::Deny
        );
        assert_eq!(
            at_end(DefaultDecision::Recommendation, ReviewDecision::Approve),
            ReviewDecision::Approve
        );
        assert_eq!(
            at_end(DefaultDecision::None, ReviewDecision::Deny),
            ReviewDecision::NotReviewed
        );
    }

    #[test]
    fn a_definition_needs_an_interval_and_a_duration() {
        let bad = ReviewDefinition {
            display_name: "GA review".into(),
            role_ids: vec!["r".into()],
            scope: "/".into(),
            include_active: true,
            reviewer_kind: ReviewerKind::Self_.into(),
            ..Default::default()
        };
        let fields: Vec<String> = validate(&bad).into_iter().map(|(f, _)| f).collect();
        assert_eq!(
            fields,
            ["definition.recurrence", "definition.instance_duration_days"]
        );
    }
}
