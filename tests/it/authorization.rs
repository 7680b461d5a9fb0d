//! Reads the matrix in docs/authorization.md and drives every row against every kind of caller,
//! so the document and the behaviour cannot drift apart.

use pim_client::{Credentials, PimClient, roles};
use pim_config::ServiceName;
use pim_proto::assignment::v1::{
    AssignmentInternalServiceRemoveScheduleRequest, AssignmentServiceConvertScheduleRequest,
    CheckAccessRequest, CheckEligibilityRequest, ConvertScheduleRequest,
    CreateActiveScheduleRequest, CreateEligibilityScheduleRequest, CreateRoleRequest,
    DeleteRoleRequest, ExportPoliciesRequest, ExtendScheduleRequest, GetEffectivePolicyRequest,
    GetPolicyRequest, GetPrincipalRequest, GetRoleRequest, ImportPoliciesRequest,
    ListEffectiveAssignmentsRequest, ListGroupMembersRequest, ListGroupsOfRequest,
    ListRoleHoldersRequest, ListRolesRequest, ListSchedulesRequest, PolicyDocument, PolicyEntry,
    PolicyRules, ProvisionWindowRequest, RemoveScheduleRequest, RemoveSchedulesRequest,
    RenewScheduleRequest, RevokeWindowRequest, Role, ScheduleChange, ScheduleKind,
    SetPolicyRequest, UpdateRoleRequest, UpdateScheduleRequest, UpsertPrincipalsRequest,
    WatchAccessChangesRequest,
};
use pim_testkit::{ADMIN, Harness};
use tonic::{Code, Status};

use crate::support::{ROLE, SCOPE};

const DAY_MS: i64 = 86_400_000;

/// What the rows act on.
struct Fixture {
    schedule_id: String,
    custom_role: Role,
    now: i64,
}

fn ts(ms: i64) -> Option<pim_proto::Timestamp> {
    Some(pim_proto::timestamp_from_millis(ms))
}

/// Calls `method` with a request that is valid in every way but, possibly, who asks.
async fn call(method: &str, client: &PimClient, f: &Fixture) -> Result<(), Status> {
    let mut a = client.assignment();
    let mut i = client.assignment_internal();
    let subject = || "subject".to_owned();
    match method {
        "AssignmentService/CreateEligibilitySchedule" => a
            .create_eligibility_schedule(CreateEligibilityScheduleRequest {
                request_id: "m".into(),
                principal_id: "newcomer".into(),
                role_id: ROLE.into(),
                scope: SCOPE.into(),
                validate_only: true,
                ..Default::default()
            })
            .await
            .map(drop),
        "AssignmentService/CreateActiveSchedule" => a
            .create_active_schedule(CreateActiveScheduleRequest {
                request_id: "m".into(),
                principal_id: "newcomer".into(),
                role_id: ROLE.into(),
                scope: SCOPE.into(),
                justification: "matrix".into(),
                validate_only: true,
                ..Default::default()
            })
            .await
            .map(drop),
        "AssignmentService/UpdateSchedule" => a
            .update_schedule(UpdateScheduleRequest {
                schedule_id: f.schedule_id.clone(),
                change: ScheduleChange::Extend.into(),
                end_time: ts(f.now + 40 * DAY_MS),
                justification: "matrix".into(),
                validate_only: true,
            })
            .await
            .map(drop),
        "AssignmentService/RemoveSchedule" => a
            .remove_schedule(RemoveScheduleRequest {
                schedule_id: f.schedule_id.clone(),
                justification: "matrix".into(),
                validate_only: true,
            })
            .await
            .map(drop),
        "AssignmentService/ConvertSchedule" => a
            .convert_schedule(AssignmentServiceConvertScheduleRequest {
                schedule_id: f.schedule_id.clone(),
                target_kind: ScheduleKind::Active.into(),
                justification: "matrix".into(),
                validate_only: true,
            })
            .await
            .map(drop),
        "AssignmentService/SetPolicy" => a
            .set_policy(SetPolicyRequest {
                role_id: ROLE.into(),
                scope: SCOPE.into(),
                rules: Some(PolicyRules::default()),
                validate_only: true,
                ..Default::default()
            })
            .await
            .map(drop),
        "AssignmentService/ExportPolicies" => {
            a.export_policies(ExportPoliciesRequest {}).await.map(drop)
        }
        "AssignmentService/ImportPolicies" => a
            .import_policies(ImportPoliciesRequest {
                document: Some(PolicyDocument {
                    policies: vec![PolicyEntry {
                        role_id: ROLE.into(),
                        scope: SCOPE.into(),
                        rules: Some(PolicyRules::default()),
                    }],
                }),
                validate_only: true,
            })
            .await
            .map(drop),
        "AssignmentService/GetEffectivePolicy" => a
            .get_effective_policy(GetEffectivePolicyRequest {
                role_id: ROLE.into(),
                scope: SCOPE.into(),
            })
            .await
            .map(drop),
        "AssignmentService/GetPolicy" => a
            .get_policy(GetPolicyRequest {
                role_id: ROLE.into(),
                scope: SCOPE.into(),
            })
            .await
            .map(drop),
        "AssignmentService/CheckEligibility" => a
            .check_eligibility(CheckEligibilityRequest {
                principal_id: subject(),
                role_id: ROLE.into(),
                scope: SCOPE.into(),
            })
            .await
            .map(drop),
        "AssignmentService/CheckAccess" => a
            .check_access(CheckAccessRequest {
                principal_id: subject(),
                role_id: ROLE.into(),
                scope: SCOPE.into(),
                ..Default::default()
            })
            .await
            .map(drop),
        "AssignmentService/ListSchedules" => a
            .list_schedules(ListSchedulesRequest {
                role_id: ROLE.into(),
                scope: SCOPE.into(),
                ..Default::default()
            })
            .await
            .map(drop),
        "AssignmentService/ListRoleHolders" => a
            .list_role_holders(ListRoleHoldersRequest {
                role_id: ROLE.into(),
                scope: SCOPE.into(),
            })
            .await
            .map(drop),
        "AssignmentService/WatchAccessChanges" => a
            .watch_access_changes(WatchAccessChangesRequest::default())
            .await
            .map(drop),
        "AssignmentService/GetRole" => a
            .get_role(GetRoleRequest {
                role_id: ROLE.into(),
            })
            .await
            .map(drop),
        "AssignmentService/ListRoles" => a.list_roles(ListRolesRequest::default()).await.map(drop),
        "AssignmentService/CreateRole" => a
            .create_role(CreateRoleRequest {
                request_id: "m".into(),
                role: Some(Role {
                    display_name: "Matrix New".into(),
                    ..Default::default()
                }),
                validate_only: true,
            })
            .await
            .map(drop),
        "AssignmentService/UpdateRole" => a
            .update_role(UpdateRoleRequest {
                role: Some(f.custom_role.clone()),
                validate_only: true,
            })
            .await
            .map(drop),
        "AssignmentService/DeleteRole" => a
            .delete_role(DeleteRoleRequest {
                role_id: f.custom_role.id.clone(),
                validate_only: true,
            })
            .await
            .map(drop),
        "AssignmentService/UpsertPrincipals" => a
            .upsert_principals(UpsertPrincipalsRequest::default())
            .await
            .map(drop),
        "AssignmentService/GetPrincipal" => a
            .get_principal(GetPrincipalRequest {
                principal_id: subject(),
            })
            .await
            .map(drop),
        "AssignmentService/ListGroupsOf" => a
            .list_groups_of(ListGroupsOfRequest {
                principal_id: subject(),
                at: None,
            })
            .await
            .map(drop),
        "AssignmentService/ListEffectiveAssignments" => a
            .list_effective_assignments(ListEffectiveAssignmentsRequest {
                principal_id: subject(),
            })
            .await
            .map(drop),
        "AssignmentService/ListGroupMembers" => a
            .list_group_members(ListGroupMembersRequest {
                group_id: "g".into(),
            })
            .await
            .map(drop),
        "AssignmentInternalService/ProvisionWindow" => i
            .provision_window(ProvisionWindowRequest {
                request_id: "r".into(),
                principal_id: subject(),
                role_id: ROLE.into(),
                scope: SCOPE.into(),
                start_time: ts(f.now),
                end_time: ts(f.now + 3_600_000),
            })
            .await
            .map(drop),
        "AssignmentInternalService/RevokeWindow" => i
            .revoke_window(RevokeWindowRequest {
                request_id: "r".into(),
                decision_id: "d".into(),
            })
            .await
            .map(drop),
        "AssignmentInternalService/ExtendSchedule" => i
            .extend_schedule(ExtendScheduleRequest {
                schedule_id: f.schedule_id.clone(),
                end_time: ts(f.now + 40 * DAY_MS),
                decision_id: "d".into(),
            })
            .await
            .map(drop),
        "AssignmentInternalService/RenewSchedule" => i
            .renew_schedule(RenewScheduleRequest {
                schedule_id: f.schedule_id.clone(),
                end_time: ts(f.now + 40 * DAY_MS),
                decision_id: "d".into(),
            })
            .await
            .map(drop),
        "AssignmentInternalService/RemoveSchedules" => i
            .remove_schedules(RemoveSchedulesRequest {
                removals: vec![AssignmentInternalServiceRemoveScheduleRequest {
                    schedule_id: f.schedule_id.clone(),
                    decision_id: "item".into(),
                    justification: "matrix".into(),
                }],
            })
            .await
            .map(drop),
        "AssignmentInternalService/RemoveSchedule" => i
            .remove_schedule(AssignmentInternalServiceRemoveScheduleRequest {
                schedule_id: f.schedule_id.clone(),
                decision_id: "d".into(),
                justification: String::new(),
            })
            .await
            .map(drop),
        "AssignmentInternalService/ConvertSchedule" => i
            .convert_schedule(ConvertScheduleRequest {
                schedule_id: f.schedule_id.clone(),
                target_kind: ScheduleKind::Active.into(),
                decision_id: "d".into(),
            })
            .await
            .map(drop),
        other => panic!("docs/authorization.md names {other}, which this test cannot call yet"),
    }
}

/// The matrix rows: (method, expected verdict per caller column).
fn matrix() -> Vec<(String, Vec<String>)> {
    let doc = include_str!("../../docs/authorization.md");
    let section = doc
        .split("## The matrix (tested)")
        .nth(1)
        .expect("the matrix section");
    section
        .lines()
        .filter(|l| l.starts_with("| Assignment"))
        .map(|l| {
            let cells: Vec<String> = l
                .trim_matches('|')
                .split('|')
                .map(|c| c.trim().to_owned())
                .collect();
            (cells[0].clone(), cells[1..].to_vec())
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rpc_answers_every_kind_of_caller_as_docs_authorization_md_says() -> anyhow::Result<()>
{
    let h = Harness::start().await?;
    let now = pim_clock::Clock::now_millis(h.clock.as_ref());
    let mut admin = h
        .client(ServiceName::Assignment, &h.mfa_token(ADMIN))
        .assignment();
    for (principal, role, scope) in [
        ("pra-child", roles::PRIVILEGED_ROLE_ADMINISTRATOR, SCOPE),
        ("reader", roles::GLOBAL_READER, "/"),
        ("checker", roles::ACCESS_CHECKER, "/"),
    ] {
        admin
            .create_active_schedule(CreateActiveScheduleRequest {
                request_id: principal.into(),
                principal_id: principal.into(),
                role_id: role.into(),
                scope: scope.into(),
                justification: "the matrix".into(),
                ..Default::default()
            })
            .await?;
    }
    let schedule_id = admin
        .create_eligibility_schedule(CreateEligibilityScheduleRequest {
            request_id: "subject".into(),
            principal_id: "subject".into(),
            role_id: ROLE.into(),
            scope: SCOPE.into(),
            end_time: ts(now + 10 * DAY_MS),
            ..Default::default()
        })
        .await?
        .into_inner()
        .schedule
        .unwrap()
        .id;
    let custom_role = admin
        .create_role(CreateRoleRequest {
            request_id: "matrix".into(),
            role: Some(Role {
                display_name: "Matrix Role".into(),
                ..Default::default()
            }),
            validate_only: false,
        })
        .await?
        .into_inner()
        .role
        .unwrap();
    let fixture = Fixture {
        schedule_id,
        custom_role,
        now,
    };
    let callers = [
        h.mfa_token(ADMIN),
        h.mfa_token("pra-child"),
        h.mfa_token("reader"),
        h.mfa_token("checker"),
        h.mfa_token("plain"),
        h.service_token(ServiceName::Notification),
    ];
    let rows = matrix();
    assert!(
        rows.len() >= 31,
        "the matrix lists every assignment RPC ({} rows)",
        rows.len()
    );
    let mut wrong = Vec::new();
    for (method, expected) in &rows {
        for (column, token) in callers.iter().enumerate() {
            let outcome = call(method, &h.client(ServiceName::Assignment, token), &fixture).await;
            let verdict = match &outcome {
                Err(status) if status.code() == Code::PermissionDenied => "deny",
                Err(status) if status.code() == Code::Unauthenticated => "unauthenticated",
                _ => "allow",
            };
            if verdict != expected[column] {
                wrong.push(format!(
                    "{method} by caller {column}: expected {}, got {verdict} ({outcome:?})",
                    expected[column]
                ));
            }
        }
        let anonymous = PimClient::connect(
            h.url(ServiceName::Assignment),
            Credentials::Token(String::new()),
        )?;
        match call(method, &anonymous, &fixture).await {
            Err(status) if status.code() == Code::Unauthenticated => {}
            other => wrong.push(format!("{method} without a token: {other:?}")),
        }
    }
    assert!(
        wrong.is_empty(),
        "docs/authorization.md and the behaviour disagree:\n{}",
        wrong.join("\n")
    );
    h.stop().await;
    Ok(())
}
