//! `pim principal`, `pim assignments` and `pim convert`: who someone is, what they hold and
//! where it came from, and bringing standing access under management.

use pim_client::PimClient;
use pim_proto::assignment::v1::{
    AssignmentServiceConvertScheduleRequest, AssignmentState, EffectiveAssignment,
    GetPrincipalRequest, ListEffectiveAssignmentsRequest, MemberType, ScheduleKind, ScheduleOrigin,
};
use serde_json::json;

use crate::admin::{Kind, Output, RoleCatalog, readable, table, time};

fn yes(flag: bool) -> String {
    if flag { "yes" } else { "no" }.to_owned()
}

pub(crate) async fn principal(
    client: &PimClient,
    id: String,
    output: Output,
) -> anyhow::Result<String> {
    let p = client
        .assignment()
        .get_principal(GetPrincipalRequest { principal_id: id })
        .await
        .map_err(readable)?
        .into_inner()
        .principal
        .unwrap_or_default();
    let kind = format!("{:?}", p.r#type()).to_lowercase();
    Ok(match output {
        Output::Json => {
            json!({
                "id": p.id, "type": kind, "name": p.display_name, "email": p.email,
                "enabled": p.enabled, "guest": p.guest, "break_glass": p.break_glass,
            })
            .to_string()
                + "\n"
        }
        Output::Table => table(
            &[
                "ID",
                "TYPE",
                "NAME",
                "EMAIL",
                "ENABLED",
                "GUEST",
                "BREAK-GLASS",
            ],
            &[vec![
                p.id,
                kind,
                p.display_name,
                p.email,
                yes(p.enabled),
                yes(p.guest),
                yes(p.break_glass),
            ]],
        ),
    })
}

fn state_text(a: &EffectiveAssignment) -> &'static str {
    match a.state() {
        AssignmentState::Permanent => "permanent",
        AssignmentState::TimeBound => "time-bound",
        AssignmentState::Activated => "activated",
        AssignmentState::Eligible => "eligible",
        AssignmentState::Unspecified => "-",
    }
}

fn origin_text(a: &EffectiveAssignment) -> &'static str {
    match a.origin() {
        // Standing access the sync found outside PIM: the first thing a deployment looks at.
        ScheduleOrigin::Discovered => "discovered (outside PIM)",
        ScheduleOrigin::Activated => "activated",
        ScheduleOrigin::Assigned | ScheduleOrigin::Unspecified => "assigned",
    }
}

pub(crate) async fn assignments(
    client: &PimClient,
    principal: String,
    output: Output,
) -> anyhow::Result<String> {
    let list = client
        .assignment()
        .list_effective_assignments(ListEffectiveAssignmentsRequest {
            principal_id: principal,
        })
        .await
        .map_err(readable)?
        .into_inner()
        .assignments;
    let catalog = RoleCatalog::fetch(client).await?;
    let via = |a: &EffectiveAssignment| match a.member_type() {
        MemberType::Group => format!("group {}", a.group_id),
        _ => "direct".to_owned(),
    };
    Ok(match output {
        Output::Json => {
            let rows: Vec<_> = list
                .iter()
                .map(|a| {
                    json!({
                        "role": a.role_id, "role_name": catalog.name(&a.role_id), "scope": a.scope,
                        "state": state_text(a), "origin": origin_text(a), "via": via(a),
                        "source": a.source, "until": a.until.as_ref().map(|t| time(Some(t))),
                    })
                })
                .collect();
            serde_json::Value::Array(rows).to_string() + "\n"
        }
        Output::Table => table(
            &["ROLE", "SCOPE", "STATE", "ORIGIN", "VIA", "UNTIL", "SOURCE"],
            &list
                .iter()
                .map(|a| {
                    vec![
                        catalog.name(&a.role_id),
                        a.scope.clone(),
                        state_text(a).to_owned(),
                        origin_text(a).to_owned(),
                        via(a),
                        time(a.until.as_ref()),
                        a.source.clone(),
                    ]
                })
                .collect::<Vec<_>>(),
        ),
    })
}

pub(crate) async fn convert(
    client: &PimClient,
    schedule_id: String,
    to: Kind,
    justification: String,
    dry_run: bool,
    output: Output,
) -> anyhow::Result<String> {
    let target = match to {
        Kind::Eligible => ScheduleKind::Eligible,
        Kind::Active => ScheduleKind::Active,
    };
    let answer = client
        .assignment()
        .convert_schedule(AssignmentServiceConvertScheduleRequest {
            schedule_id,
            target_kind: target.into(),
            justification,
            validate_only: dry_run,
        })
        .await
        .map_err(readable)?
        .into_inner();
    let s = answer.schedule.unwrap_or_default();
    let kind = format!("{:?}", s.kind()).to_lowercase();
    Ok(match output {
        Output::Json => {
            json!({
                "id": s.id, "dry_run": dry_run, "kind": kind, "principal": s.principal_id,
                "role": s.role_id, "scope": s.scope, "until": time(s.end_time.as_ref()),
                "revision": answer.revision,
            })
            .to_string()
                + "\n"
        }
        Output::Table => table(
            &["SCHEDULE", "KIND", "PRINCIPAL", "ROLE", "SCOPE", "UNTIL"],
            &[vec![
                if dry_run {
                    format!("{} (dry run: nothing written)", s.id)
                } else {
                    s.id
                },
                kind,
                s.principal_id,
                s.role_id,
                s.scope,
                time(s.end_time.as_ref()),
            ]],
        ),
    })
}
