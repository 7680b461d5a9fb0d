//! Stable, readable activity names in the spirit of Entra's PIM audit activities.

pub fn activity_of(event_type: &str) -> String {
    let known = match event_type {
        "assignment.schedule_created" => "Add eligible member to role in PIM completed",
        "assignment.window_provisioned" => "Add member to role completed (PIM activation)",
        "activation.request_submitted" => "Add member to role requested (PIM activation)",
        "activation.request_granted" => "Add member to role request approved (PIM activation)",
        _ if event_type.ends_with(".access_denied") => "Access denied",
        _ => "",
    };
    if known.is_empty() {
        // New event types are recorded under their own name until they get a readable one.
        event_type.to_owned()
    } else {
        known.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn activation_activities_read_like_entra() {
        assert_eq!(
            activity_of("assignment.window_provisioned"),
            "Add member to role completed (PIM activation)"
        );
        assert_eq!(activity_of("audit.something_new"), "audit.something_new");
        assert_eq!(activity_of("approval.access_denied"), "Access denied");
    }
}
