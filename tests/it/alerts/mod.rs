//! Security alerts end to end: each alert fires on exactly the activity (or the instant) that
//! should trigger it, thresholds are validated, incidents are dismissed and remediated through the
//! assignment context, a refresh from the stored log gives continuous evaluation's answer, only
//! admins change anything, and an alert reaches an admin's inbox.

mod cli;
mod flows;
mod rules;

use std::time::Duration;

use pim_client::PimClient;
use pim_config::ServiceName;
use pim_proto::{
    assignment::v1::{
        CreateActiveScheduleRequest, Principal, PrincipalType, UpsertPrincipalsRequest,
    },
    audit::v1::{
        AlertConfiguration, AlertIncident, GetAlertRequest, GetAlertResponse,
        ListAlertIncidentsRequest, UpdateAlertConfigurationRequest,
    },
};
use pim_testkit::{ADMIN, Harness, HarnessOptions};

pub const TOO_MANY_GAS: &str = "TooManyGlobalAdminsAssignedToTenantAlert";
pub const FREQUENT: &str = "SequentialActivationRenewalsAlert";
pub const NO_MFA: &str = "NoMfaOnRoleActivationAlert";
pub const REDUNDANT: &str = "RedundantAssignmentAlert";
pub const STALE: &str = "StaleSignInAlert";
pub const BREAK_GLASS: &str = "BreakGlassAccountUsedAlert";
pub const GUEST: &str = "GuestInPrivilegedRoleAlert";
pub const OUTSIDE_PIM: &str = "RolesAssignedOutsidePimAlert";

pub const MINUTE_MS: i64 = 60_000;
pub const DAY_MS: i64 = 86_400_000;

/// A harness whose timers look every 20 ms.
pub async fn harness() -> anyhow::Result<Harness> {
    Harness::start_with(HarnessOptions {
        settings: vec![("PIM_TIMER_INTERVAL_MS".into(), "20".into())],
        ..Default::default()
    })
    .await
}

pub fn alerts(h: &Harness, who: &str) -> PimClient {
    h.client(ServiceName::Audit, &h.mfa_token(who))
}

/// The alert and its open incidents, as the break-glass admin reads them.
pub async fn alert(h: &Harness, id: &str) -> anyhow::Result<GetAlertResponse> {
    Ok(alerts(h, ADMIN)
        .alerts()
        .get_alert(GetAlertRequest {
            alert_id: id.into(),
        })
        .await?
        .into_inner())
}

pub async fn is_active(h: &Harness, id: &str) -> anyhow::Result<bool> {
    Ok(alert(h, id).await?.alert.unwrap_or_default().active)
}

/// Every incident of an alert, closed ones too.
pub async fn history(h: &Harness, id: &str) -> anyhow::Result<Vec<AlertIncident>> {
    Ok(alerts(h, ADMIN)
        .alerts()
        .list_alert_incidents(ListAlertIncidentsRequest {
            alert_id: id.into(),
            include_closed: true,
            page_size: 1000,
            ..Default::default()
        })
        .await?
        .into_inner()
        .incidents)
}

/// Waits until the audit trail (and so the alerts, evaluated in the same transaction) has taken
/// in everything produced so far.
pub async fn settled(h: &Harness) -> anyhow::Result<()> {
    crate::audit::quiet(h).await?;
    Ok(())
}

/// Waits for the alert to become `active` (or not): for effects of the clock's timer.
pub async fn await_active(h: &Harness, id: &str, active: bool) -> anyhow::Result<GetAlertResponse> {
    h.eventually(Duration::from_secs(30), || async {
        let found = alert(h, id).await?;
        Ok((found.alert.as_ref().is_some_and(|a| a.active) == active).then_some(found))
    })
    .await
}

pub async fn configure(
    h: &Harness,
    who: &str,
    configuration: AlertConfiguration,
) -> Result<AlertConfiguration, tonic::Status> {
    alerts(h, who)
        .alerts()
        .update_alert_configuration(UpdateAlertConfigurationRequest {
            configuration: Some(configuration),
            validate_only: false,
        })
        .await
        .map(|r| r.into_inner().configuration.unwrap_or_default())
}

pub fn advance(h: &Harness, ms: i64) {
    h.clock.advance(chrono::Duration::milliseconds(ms));
}

/// A permanent active assignment of `role` at `/`.
pub async fn assign_active(h: &Harness, principal: &str, role: &str) -> anyhow::Result<()> {
    h.client(ServiceName::Assignment, &h.mfa_token(ADMIN))
        .assignment()
        .create_active_schedule(CreateActiveScheduleRequest {
            request_id: format!("{principal}-{role}"),
            principal_id: principal.into(),
            role_id: role.into(),
            scope: "/".into(),
            justification: "tenant administration".into(),
            ..Default::default()
        })
        .await?;
    Ok(())
}

pub fn user(id: &str) -> Principal {
    Principal {
        id: id.into(),
        r#type: PrincipalType::User.into(),
        display_name: format!("{id} (display)"),
        email: format!("{id}@example.test"),
        enabled: true,
        ..Default::default()
    }
}

pub async fn sync(h: &Harness, request: UpsertPrincipalsRequest) -> anyhow::Result<()> {
    h.client(ServiceName::Assignment, &h.mfa_token(ADMIN))
        .assignment()
        .upsert_principals(request)
        .await?;
    Ok(())
}
