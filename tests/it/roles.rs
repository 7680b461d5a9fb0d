//! The role catalog: built-in roles are there and read-only; custom roles are managed by
//! administrators, and a role still assigned cannot be deleted.

use pim_client::roles;
use pim_config::ServiceName;
use pim_proto::assignment::v1::{
    CreateEligibilityScheduleRequest, CreateRoleRequest, DeleteRoleRequest, GetRoleRequest,
    ListRolesRequest, Role, UpdateRoleRequest,
};
use pim_testkit::{ADMIN, Harness};
use tonic::Code;
use tonic_types::StatusExt as _;

use crate::{bad_input::count, support::reason};

fn custom(name: &str) -> Role {
    Role {
        display_name: name.into(),
        description: "Restarts the payment workers".into(),
        permissions: vec!["payments/workers/restart".into()],
        privileged: true,
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn built_in_roles_are_listed_and_cannot_change() -> anyhow::Result<()> {
    let h = Harness::start().await?;
    let admin = h
        .client(ServiceName::Assignment, &h.mfa_token(ADMIN))
        .assignment();
    let mut reader = h
        .client(ServiceName::Assignment, &h.token("anyone"))
        .assignment();
    let mut all = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = reader
            .list_roles(ListRolesRequest {
                page_size: 10,
                page_token: page_token.clone(),
                privileged_only: false,
            })
            .await?
            .into_inner();
        all.extend(page.roles);
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    assert_eq!(all.len(), 23, "the catalog the deployment guides name");
    let ga = all
        .iter()
        .find(|r| r.id == roles::GLOBAL_ADMINISTRATOR)
        .unwrap();
    assert_eq!(ga.display_name, "Global Administrator");
    assert!(ga.built_in && ga.privileged);

    let mut admin = admin;
    let status = admin
        .update_role(UpdateRoleRequest {
            role: Some(Role {
                display_name: "Renamed".into(),
                ..ga.clone()
            }),
            validate_only: false,
        })
        .await
        .unwrap_err();
    assert_eq!(
        (status.code(), reason(&status).as_str()),
        (Code::FailedPrecondition, "BUILT_IN_ROLE")
    );
    let status = admin
        .delete_role(DeleteRoleRequest {
            role_id: ga.id.clone(),
            validate_only: false,
        })
        .await
        .unwrap_err();
    assert_eq!(reason(&status), "BUILT_IN_ROLE");
    h.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn custom_roles_are_created_updated_and_deleted_by_administrators_only() -> anyhow::Result<()>
{
    let h = Harness::start().await?;
    let mut admin = h
        .client(ServiceName::Assignment, &h.mfa_token(ADMIN))
        .assignment();
    let db = h.service(ServiceName::Assignment).db().clone();

    // A dry run answers like the real call and writes nothing.
    let dry = admin
        .create_role(CreateRoleRequest {
            request_id: "r1".into(),
            role: Some(custom("Payments Operator")),
            validate_only: true,
        })
        .await?
        .into_inner();
    assert_eq!(
        dry.role.as_ref().map(|r| r.display_name.as_str()),
        Some("Payments Operator")
    );
    assert_eq!(
        count(
            &db,
            "SELECT COUNT(*) AS n FROM roles WHERE built_in = FALSE"
        )
        .await?,
        0
    );

    let created = admin
        .create_role(CreateRoleRequest {
            request_id: "r1".into(),
            role: Some(custom("Payments Operator")),
            validate_only: false,
        })
        .await?
        .into_inner()
        .role
        .unwrap();
    assert!(!created.built_in);
    let again = admin
        .create_role(CreateRoleRequest {
            request_id: "r1".into(),
            role: Some(custom("Payments Operator")),
            validate_only: false,
        })
        .await?
        .into_inner()
        .role
        .unwrap();
    assert_eq!(again.id, created.id, "idempotent by request id");
    let duplicate = admin
        .create_role(CreateRoleRequest {
            request_id: "r2".into(),
            role: Some(custom("payments operator")),
            validate_only: false,
        })
        .await
        .unwrap_err();
    assert_eq!(duplicate.code(), Code::AlreadyExists);

    let invalid = admin
        .create_role(CreateRoleRequest {
            request_id: "r3".into(),
            role: Some(Role {
                display_name: String::new(),
                permissions: vec!["no-slash".into()],
                ..Default::default()
            }),
            validate_only: false,
        })
        .await
        .unwrap_err();
    assert_eq!(invalid.code(), Code::InvalidArgument);
    let fields: Vec<String> = invalid
        .get_error_details()
        .bad_request()
        .unwrap()
        .field_violations
        .iter()
        .map(|v| v.field.clone())
        .collect();
    assert_eq!(fields, ["role.display_name", "role.permissions[0]"]);

    let mut mallory = h
        .client(ServiceName::Assignment, &h.token("mallory"))
        .assignment();
    let status = mallory
        .create_role(CreateRoleRequest {
            request_id: "m".into(),
            role: Some(custom("Mallory's")),
            validate_only: false,
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);

    let mut renamed = created.clone();
    renamed.display_name = "Payments Operator (EU)".into();
    admin
        .update_role(UpdateRoleRequest {
            role: Some(renamed),
            validate_only: false,
        })
        .await?;
    let fetched = admin
        .get_role(GetRoleRequest {
            role_id: created.id.clone(),
        })
        .await?
        .into_inner()
        .role
        .unwrap();
    assert_eq!(fetched.display_name, "Payments Operator (EU)");

    // Assigned, it cannot be deleted.
    admin
        .create_eligibility_schedule(CreateEligibilityScheduleRequest {
            request_id: "e1".into(),
            principal_id: "alice".into(),
            role_id: created.id.clone(),
            scope: "/".into(),
            ..Default::default()
        })
        .await?;
    let status = admin
        .delete_role(DeleteRoleRequest {
            role_id: created.id.clone(),
            validate_only: false,
        })
        .await
        .unwrap_err();
    assert_eq!(reason(&status), "ROLE_IN_USE");
    let unknown = admin
        .create_eligibility_schedule(CreateEligibilityScheduleRequest {
            request_id: "e2".into(),
            principal_id: "alice".into(),
            role_id: "no-such-role".into(),
            scope: "/".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound);

    let types = count(&db, "SELECT COUNT(*) AS n FROM outbox WHERE event_type IN ('assignment.role_created', 'assignment.role_updated')").await?;
    assert_eq!(
        types, 2,
        "one event per change, none for the dry run or the replay"
    );
    h.stop().await;
    Ok(())
}
