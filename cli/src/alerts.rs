//! `pim alerts list|show|configure|dismiss|remediate|refresh`: PIM's security alerts, each
//! command one call of `pim.audit.v1.AlertService`.

use clap::Subcommand;
use pim_client::PimClient;
use pim_proto::audit::v1::{
    Alert, AlertConfiguration, AlertIncident, DismissAlertRequest, GetAlertRequest,
    ListAlertIncidentsRequest, ListAlertsRequest, RefreshAlertsRequest,
    RemediateAlertIncidentRequest, UpdateAlertConfigurationRequest,
};
use serde_json::json;

use crate::admin::{Output, readable, table};

#[derive(Debug, Clone, Subcommand)]
pub enum AlertCommand {
    /// Every alert: severity, whether it is active, its open incidents.
    List,
    /// One alert, its configuration and its incidents.
    Show {
        /// The alert id, for example StaleSignInAlert.
        alert: String,
        /// Resolved and dismissed incidents too.
        #[arg(long)]
        all: bool,
    },
    /// Enable or disable an alert and set its thresholds.
    Configure {
        alert: String,
        #[arg(long)]
        disable: bool,
        #[arg(long)]
        global_admin_count: Option<u32>,
        #[arg(long)]
        global_admin_percentage: Option<u32>,
        #[arg(long)]
        activation_count: Option<u32>,
        /// Minutes.
        #[arg(long)]
        activation_window_minutes: Option<i64>,
        #[arg(long)]
        days: Option<u32>,
        #[arg(long)]
        dry_run: bool,
    },
    /// Dismiss one incident, or every open incident of the alert.
    Dismiss {
        alert: String,
        #[arg(long)]
        incident: Option<String>,
        #[arg(long)]
        justification: String,
    },
    /// Remove an unused eligibility, or convert a role assigned outside PIM to eligible.
    Remediate {
        alert: String,
        incident: String,
        #[arg(long, default_value = "")]
        justification: String,
    },
    /// Recompute every alert from the stored audit records.
    Refresh,
}

fn severity(alert: &Alert) -> String {
    alert
        .definition
        .as_ref()
        .map(|d| {
            d.severity()
                .as_str_name()
                .trim_start_matches("ALERT_SEVERITY_")
                .to_ascii_lowercase()
        })
        .unwrap_or_default()
}

fn alert_json(alert: &Alert) -> serde_json::Value {
    let d = alert.definition.clone().unwrap_or_default();
    json!({
        "id": d.id, "name": d.display_name, "severity": severity(alert),
        "active": alert.active, "incidents": alert.incident_count,
        "remediable": d.remediable, "configurable": d.configurable,
        "enabled": alert.configuration.as_ref().is_some_and(|c| c.enabled),
    })
}

fn incident_json(i: &AlertIncident) -> serde_json::Value {
    json!({
        "id": i.id, "state": state(i), "principal": i.principal_id, "role": i.role_id,
        "scope": i.scope, "schedule": i.schedule_id, "count": i.count, "detail": i.detail,
        "dismissed_by": i.dismissed_by, "justification": i.justification,
    })
}

fn state(i: &AlertIncident) -> String {
    i.state()
        .as_str_name()
        .trim_start_matches("ALERT_INCIDENT_STATE_")
        .to_ascii_lowercase()
}

fn incidents_table(incidents: &[AlertIncident]) -> String {
    let rows: Vec<Vec<String>> = incidents
        .iter()
        .map(|i| {
            vec![
                i.id.clone(),
                state(i),
                i.principal_id.clone(),
                i.scope.clone(),
                i.count.to_string(),
                i.detail.clone(),
            ]
        })
        .collect();
    table(
        &["INCIDENT", "STATE", "PRINCIPAL", "SCOPE", "COUNT", "DETAIL"],
        &rows,
    )
}

pub async fn run(
    command: AlertCommand,
    audit: &PimClient,
    output: Output,
) -> anyhow::Result<String> {
    let mut client = audit.alerts();
    match command {
        AlertCommand::List => {
            let alerts = client
                .list_alerts(ListAlertsRequest {})
                .await
                .map_err(readable)?
                .into_inner()
                .alerts;
            Ok(match output {
                Output::Json => format!(
                    "{}\n",
                    json!(alerts.iter().map(alert_json).collect::<Vec<_>>())
                ),
                Output::Table => {
                    let rows: Vec<Vec<String>> = alerts
                        .iter()
                        .map(|a| {
                            let d = a.definition.clone().unwrap_or_default();
                            vec![
                                d.id,
                                severity(a),
                                if a.active { "active" } else { "-" }.into(),
                                a.incident_count.to_string(),
                                d.display_name,
                            ]
                        })
                        .collect();
                    table(&["ALERT", "SEVERITY", "STATE", "INCIDENTS", "NAME"], &rows)
                }
            })
        }
        AlertCommand::Show { alert, all } => {
            let found = client
                .get_alert(GetAlertRequest {
                    alert_id: alert.clone(),
                })
                .await
                .map_err(readable)?
                .into_inner();
            let incidents = if all {
                client
                    .list_alert_incidents(ListAlertIncidentsRequest {
                        alert_id: alert,
                        include_closed: true,
                        page_size: 1000,
                        ..Default::default()
                    })
                    .await
                    .map_err(readable)?
                    .into_inner()
                    .incidents
            } else {
                found.incidents
            };
            let a = found.alert.unwrap_or_default();
            Ok(match output {
                Output::Json => format!(
                    "{}\n",
                    json!({"alert": alert_json(&a), "incidents": incidents.iter().map(incident_json).collect::<Vec<_>>()})
                ),
                Output::Table => {
                    let d = a.definition.clone().unwrap_or_default();
                    format!(
                        "{} ({}, {})\n{}\nWhat to do: {}\n\n{}",
                        d.display_name,
                        severity(&a),
                        if a.active { "active" } else { "not active" },
                        d.description,
                        d.mitigation_steps,
                        incidents_table(&incidents)
                    )
                }
            })
        }
        AlertCommand::Configure {
            alert,
            disable,
            global_admin_count,
            global_admin_percentage,
            activation_count,
            activation_window_minutes,
            days,
            dry_run,
        } => {
            let saved = client
                .update_alert_configuration(UpdateAlertConfigurationRequest {
                    configuration: Some(AlertConfiguration {
                        alert_id: alert,
                        enabled: !disable,
                        global_admin_count_threshold: global_admin_count,
                        global_admin_percentage_threshold: global_admin_percentage,
                        activation_count_threshold: activation_count,
                        activation_window: activation_window_minutes.map(|m| pim_proto::Duration {
                            seconds: m * 60,
                            nanos: 0,
                        }),
                        duration_days: days,
                        ..Default::default()
                    }),
                    validate_only: dry_run,
                })
                .await
                .map_err(readable)?
                .into_inner()
                .configuration
                .unwrap_or_default();
            Ok(format!(
                "{}{} is {}\n",
                if dry_run { "(dry run) " } else { "" },
                saved.alert_id,
                if saved.enabled { "enabled" } else { "disabled" }
            ))
        }
        AlertCommand::Dismiss {
            alert,
            incident,
            justification,
        } => {
            let dismissed = client
                .dismiss_alert(DismissAlertRequest {
                    alert_id: alert,
                    incident_id: incident.unwrap_or_default(),
                    justification,
                })
                .await
                .map_err(readable)?
                .into_inner()
                .incidents;
            Ok(format!("dismissed {} incident(s)\n", dismissed.len()))
        }
        AlertCommand::Remediate {
            alert,
            incident,
            justification,
        } => {
            let done = client
                .remediate_alert_incident(RemediateAlertIncidentRequest {
                    alert_id: alert,
                    incident_id: incident,
                    justification,
                })
                .await
                .map_err(readable)?
                .into_inner();
            Ok(format!(
                "remediated incident {} (assignment revision {})\n",
                done.incident.unwrap_or_default().id,
                done.revision
            ))
        }
        AlertCommand::Refresh => {
            let done = client
                .refresh_alerts(RefreshAlertsRequest {})
                .await
                .map_err(readable)?
                .into_inner();
            Ok(format!(
                "scanned {} records: {} incidents raised, {} resolved; {} alerts active\n",
                done.records_scanned,
                done.incidents_raised,
                done.incidents_resolved,
                done.alerts.iter().filter(|a| a.active).count()
            ))
        }
    }
}
