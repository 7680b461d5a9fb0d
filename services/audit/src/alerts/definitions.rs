//! The alerts PIM knows: Entra's six that apply here (Graph's ids) and two of PIM's own, each with
//! its severity, words for people, and the thresholds it takes with their ranges and defaults.
//! Validation of a configuration lives here too. Pure: no I/O.

use pim_grpc::Violations;
use pim_proto::audit::v1::{AlertConfiguration, AlertDefinition, AlertSeverity};

pub const DAY_MS: i64 = 86_400_000;
const MINUTE_MS: i64 = 60_000;

/// One of the alerts, by its stable id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AlertKind {
    RolesAssignedOutsidePim,
    TooManyGlobalAdmins,
    SequentialActivations,
    NoMfaOnActivation,
    RedundantAssignment,
    StaleSignIn,
    BreakGlassUsed,
    GuestInPrivilegedRole,
}

impl AlertKind {
    pub const ALL: [AlertKind; 8] = [
        AlertKind::RolesAssignedOutsidePim,
        AlertKind::TooManyGlobalAdmins,
        AlertKind::SequentialActivations,
        AlertKind::NoMfaOnActivation,
        AlertKind::RedundantAssignment,
        AlertKind::StaleSignIn,
        AlertKind::BreakGlassUsed,
        AlertKind::GuestInPrivilegedRole,
    ];

    pub fn id(self) -> &'static str {
        match self {
            AlertKind::RolesAssignedOutsidePim => "RolesAssignedOutsidePimAlert",
            AlertKind::TooManyGlobalAdmins => "TooManyGlobalAdminsAssignedToTenantAlert",
            AlertKind::SequentialActivations => "SequentialActivationRenewalsAlert",
            AlertKind::NoMfaOnActivation => "NoMfaOnRoleActivationAlert",
            AlertKind::RedundantAssignment => "RedundantAssignmentAlert",
            AlertKind::StaleSignIn => "StaleSignInAlert",
            AlertKind::BreakGlassUsed => "BreakGlassAccountUsedAlert",
            AlertKind::GuestInPrivilegedRole => "GuestInPrivilegedRoleAlert",
        }
    }

    pub fn from_id(id: &str) -> Option<AlertKind> {
        AlertKind::ALL.into_iter().find(|k| k.id() == id)
    }

    pub fn severity(self) -> AlertSeverity {
        match self {
            AlertKind::RolesAssignedOutsidePim | AlertKind::BreakGlassUsed => AlertSeverity::High,
            AlertKind::StaleSignIn | AlertKind::GuestInPrivilegedRole => AlertSeverity::Medium,
            _ => AlertSeverity::Low,
        }
    }

    /// Whether `RemediateAlertIncident` can act on its incidents.
    pub fn remediable(self) -> bool {
        matches!(
            self,
            AlertKind::RolesAssignedOutsidePim | AlertKind::RedundantAssignment
        )
    }

    /// Whether it takes thresholds (every alert can be enabled and disabled).
    pub fn configurable(self) -> bool {
        matches!(
            self,
            AlertKind::TooManyGlobalAdmins
                | AlertKind::SequentialActivations
                | AlertKind::RedundantAssignment
                | AlertKind::StaleSignIn
        )
    }

    pub fn definition(self) -> AlertDefinition {
        let (name, description, impact, mitigation) = match self {
            AlertKind::RolesAssignedOutsidePim => (
                "Roles are being assigned outside of PIM",
                "The directory sync reported standing role assignments that were not made \
                 through PIM.",
                "Standing access outside PIM is not time-bound, approved or reviewed.",
                "Convert each assignment to eligible (remediate), or remove it, and find out who \
                 assigned it in the source directory.",
            ),
            AlertKind::TooManyGlobalAdmins => (
                "There are too many Global Administrators",
                "Both the number of Global Administrators and their share of all privileged \
                 assignees are at or above their thresholds.",
                "Every Global Administrator is an account an attacker can use to control \
                 everything.",
                "Give people the least privileged role that does the job, and remove the Global \
                 Administrators who do not need it.",
            ),
            AlertKind::SequentialActivations => (
                "Roles are being activated too frequently",
                "The same principal activated the same role more often than the threshold within \
                 the window.",
                "Frequent renewals suggest the activation duration is too short, or that \
                 standing access is being simulated.",
                "Talk to the principal; lengthen the role's maximum activation duration if the \
                 work needs it.",
            ),
            AlertKind::NoMfaOnActivation => (
                "Roles don't require MFA for activation",
                "A privileged role's policy lets it be activated without multi-factor \
                 authentication.",
                "A stolen password is enough to activate the role.",
                "Require MFA on activation in the role's policy (pim policy).",
            ),
            AlertKind::RedundantAssignment => (
                "Administrators aren't using their privileged roles",
                "Principals have been eligible for a privileged role for the configured number of \
                 days without activating it.",
                "Unused eligibility widens the attack surface for nothing.",
                "Remove the eligibility (remediate) if the role is not needed.",
            ),
            AlertKind::StaleSignIn => (
                "Potential stale accounts in a privileged role",
                "Principals who hold a privileged role are disabled in the directory, or have not \
                 activated anything for the configured number of days.",
                "Stale accounts are rarely watched and make good targets.",
                "Confirm the account is needed; remove its privileged roles if not.",
            ),
            AlertKind::BreakGlassUsed => (
                "A break-glass account was used",
                "A principal flagged as break-glass acted in PIM.",
                "Break-glass accounts are for emergencies only; any use needs an explanation.",
                "Find out who used the account and why; rotate its credentials after an \
                 emergency.",
            ),
            AlertKind::GuestInPrivilegedRole => (
                "A guest holds a privileged role",
                "A guest user is eligible for, or holds, a privileged role.",
                "Guests are managed by another organization's identity provider.",
                "Manage the guest's role through PIM with approval, or remove it.",
            ),
        };
        AlertDefinition {
            id: self.id().to_owned(),
            display_name: name.to_owned(),
            description: description.to_owned(),
            severity: self.severity().into(),
            security_impact: impact.to_owned(),
            mitigation_steps: mitigation.to_owned(),
            configurable: self.configurable(),
            remediable: self.remediable(),
        }
    }
}

/// An alert's settings, with defaults for the thresholds it takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub enabled: bool,
    pub global_admin_count: u32,
    pub global_admin_percentage: u32,
    pub activation_count: u32,
    pub activation_window_ms: i64,
    pub duration_days: u32,
    pub updated_by: String,
    pub updated_at_ms: i64,
}

impl Settings {
    pub fn default_for(kind: AlertKind) -> Settings {
        Settings {
            enabled: true,
            global_admin_count: 5,
            global_admin_percentage: 10,
            activation_count: 5,
            activation_window_ms: 60 * MINUTE_MS,
            duration_days: 30,
            updated_by: String::new(),
            updated_at_ms: 0,
        }
        .only_for(kind)
    }

    /// Zeroes the thresholds `kind` does not take, so equal settings compare equal.
    fn only_for(mut self, kind: AlertKind) -> Settings {
        if kind != AlertKind::TooManyGlobalAdmins {
            self.global_admin_count = 0;
            self.global_admin_percentage = 0;
        }
        if kind != AlertKind::SequentialActivations {
            self.activation_count = 0;
            self.activation_window_ms = 0;
        }
        if !matches!(
            kind,
            AlertKind::RedundantAssignment | AlertKind::StaleSignIn
        ) {
            self.duration_days = 0;
        }
        self
    }

    pub fn duration_ms(&self) -> i64 {
        i64::from(self.duration_days) * DAY_MS
    }

    pub fn to_proto(&self, kind: AlertKind) -> AlertConfiguration {
        let mut out = AlertConfiguration {
            alert_id: kind.id().to_owned(),
            enabled: self.enabled,
            updated_by: self.updated_by.clone(),
            updated_at: (self.updated_at_ms > 0)
                .then(|| pim_proto::timestamp_from_millis(self.updated_at_ms)),
            ..Default::default()
        };
        match kind {
            AlertKind::TooManyGlobalAdmins => {
                out.global_admin_count_threshold = Some(self.global_admin_count);
                out.global_admin_percentage_threshold = Some(self.global_admin_percentage);
            }
            AlertKind::SequentialActivations => {
                out.activation_count_threshold = Some(self.activation_count);
                out.activation_window = Some(duration(self.activation_window_ms));
            }
            AlertKind::RedundantAssignment | AlertKind::StaleSignIn => {
                out.duration_days = Some(self.duration_days);
            }
            _ => {}
        }
        out
    }

    /// `current` with the fields `update` sets, validated against `kind`'s ranges. Thresholds
    /// that `kind` does not take are refused, so a typo cannot pass silently.
    pub fn apply(
        current: &Settings,
        kind: AlertKind,
        update: &AlertConfiguration,
        violations: &mut Violations,
    ) -> Settings {
        let mut next = current.clone();
        next.enabled = update.enabled;
        let field = |name: &str| format!("configuration.{name}");
        let takes_ga = kind == AlertKind::TooManyGlobalAdmins;
        let takes_activations = kind == AlertKind::SequentialActivations;
        let days = match kind {
            AlertKind::RedundantAssignment => Some(0..=100),
            AlertKind::StaleSignIn => Some(1..=365),
            _ => None,
        };
        let mut check = |name: &str,
                         value: Option<u32>,
                         range: Option<std::ops::RangeInclusive<u32>>,
                         slot: &mut u32| {
            let Some(value) = value else { return };
            match range {
                None => violations.add(
                    &field(name),
                    format!("{} takes no such threshold", kind.id()),
                ),
                Some(range) if !range.contains(&value) => violations.add(
                    &field(name),
                    format!("must be between {} and {}", range.start(), range.end()),
                ),
                Some(_) => *slot = value,
            }
        };
        check(
            "global_admin_count_threshold",
            update.global_admin_count_threshold,
            takes_ga.then_some(2..=100),
            &mut next.global_admin_count,
        );
        check(
            "global_admin_percentage_threshold",
            update.global_admin_percentage_threshold,
            takes_ga.then_some(0..=100),
            &mut next.global_admin_percentage,
        );
        check(
            "activation_count_threshold",
            update.activation_count_threshold,
            takes_activations.then_some(2..=100),
            &mut next.activation_count,
        );
        check(
            "duration_days",
            update.duration_days,
            days,
            &mut next.duration_days,
        );
        if let Some(window) = &update.activation_window {
            let ms = duration_ms(window);
            if !takes_activations {
                violations.add(
                    &field("activation_window"),
                    format!("{} takes no such threshold", kind.id()),
                );
            } else if !(MINUTE_MS..=30 * DAY_MS).contains(&ms) {
                violations.add(
                    &field("activation_window"),
                    "must be between 1 minute and 30 days",
                );
            } else {
                next.activation_window_ms = ms;
            }
        }
        next
    }
}

fn duration_ms(d: &pim_proto::Duration) -> i64 {
    d.seconds.saturating_mul(1000) + i64::from(d.nanos) / 1_000_000
}

fn duration(ms: i64) -> pim_proto::Duration {
    pim_proto::Duration {
        seconds: ms.div_euclid(1000),
        nanos: (ms.rem_euclid(1000) * 1_000_000) as i32,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_stable_and_round_trip() {
        for kind in AlertKind::ALL {
            assert_eq!(AlertKind::from_id(kind.id()), Some(kind));
        }
        assert_eq!(AlertKind::from_id("nope"), None);
    }

    #[test]
    fn thresholds_are_checked_against_their_ranges_and_their_alert() {
        let kind = AlertKind::TooManyGlobalAdmins;
        let current = Settings::default_for(kind);
        let mut v = Violations::default();
        let next = Settings::apply(
            &current,
            kind,
            &AlertConfiguration {
                enabled: true,
                global_admin_count_threshold: Some(1),
                global_admin_percentage_threshold: Some(40),
                duration_days: Some(3),
                ..Default::default()
            },
            &mut v,
        );
        let err = v.check().unwrap_err();
        let text = format!("{err:?}");
        assert!(text.contains("global_admin_count_threshold"), "{text}");
        assert!(text.contains("duration_days"), "{text}");
        assert_eq!(next.global_admin_percentage, 40);
        assert_eq!(next.global_admin_count, 5, "the bad value is not taken");
        let mut v = Violations::default();
        Settings::apply(
            &Settings::default_for(AlertKind::StaleSignIn),
            AlertKind::StaleSignIn,
            &AlertConfiguration {
                duration_days: Some(0),
                ..Default::default()
            },
            &mut v,
        );
        assert!(v.check().is_err(), "stale accounts need at least one day");
    }
}
