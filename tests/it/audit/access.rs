//! Who may read what: PIM's administrators and readers at `/` read, verify and export
//! everything; anyone else reads only the records where they are the actor or the target, and
//! nobody writes through the API (it has no write method).

use pim_client::{PimClient, roles};
use pim_config::ServiceName;
use pim_proto::{
    assignment::v1::CreateActiveScheduleRequest,
    audit::v1::{
        AuditRecord, ExportFormat, ExportRecordsRequest, GetRecordRequest, GetSigningKeyRequest,
        ListCheckpointsRequest, ListRecordsRequest, SearchRecordsRequest, VerifyChainRequest,
    },
};
use pim_testkit::ADMIN;
use tonic::Code;

use super::{alice_activates, harness, settled};
use crate::support::reason;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sees {
    Everything,
    Own,
    Unauthenticated,
}

async fn outcome<T>(call: impl Future<Output = Result<T, tonic::Status>>) -> Result<T, Code> {
    call.await.map_err(|s| s.code())
}

/// Every read RPC as `client`, checked against what `sees` promises for `me`.
async fn check(
    client: &PimClient,
    me: &str,
    sees: Sees,
    all: &[AuditRecord],
) -> anyhow::Result<()> {
    let audit = || client.audit();
    let alices = all
        .iter()
        .find(|r| r.target_principal_id == "alice" && r.actor_id == "alice")
        .ok_or_else(|| anyhow::anyhow!("no record of alice"))?;
    let admins = all
        .iter()
        .find(|r| r.actor_id == ADMIN && r.target_principal_id != me)
        .ok_or_else(|| anyhow::anyhow!("no record of the admin"))?;
    let list = outcome(audit().list_records(ListRecordsRequest {
        page_size: 1000,
        ..Default::default()
    }))
    .await;
    let search = outcome(audit().search_records(SearchRecordsRequest {
        page_size: 1000,
        ..Default::default()
    }))
    .await;
    let get_other = outcome(audit().get_record(GetRecordRequest {
        sequence: admins.sequence,
    }))
    .await;
    let get_alices = outcome(audit().get_record(GetRecordRequest {
        sequence: alices.sequence,
    }))
    .await;
    let verify = outcome(audit().verify_chain(VerifyChainRequest::default())).await;
    let export = outcome(audit().export_records(ExportRecordsRequest {
        format: ExportFormat::Csv.into(),
        ..Default::default()
    }))
    .await;
    let checkpoints = outcome(audit().list_checkpoints(ListCheckpointsRequest::default())).await;
    let key = outcome(audit().get_signing_key(GetSigningKeyRequest {})).await;
    match sees {
        Sees::Everything => {
            assert_eq!(
                list.map(|r| r.into_inner().records.len()),
                Ok(all.len()),
                "{me}"
            );
            assert_eq!(
                search.map(|r| r.into_inner().records.len()),
                Ok(all.len()),
                "{me}"
            );
            assert!(get_other.is_ok() && get_alices.is_ok(), "{me}");
            assert!(verify.is_ok_and(|v| v.into_inner().ok), "{me}");
            assert!(export.is_ok() && checkpoints.is_ok() && key.is_ok(), "{me}");
        }
        Sees::Own => {
            let mine = |r: &AuditRecord| r.actor_id == me || r.target_principal_id == me;
            let expected: Vec<u64> = all.iter().filter(|r| mine(r)).map(|r| r.sequence).collect();
            let listed: Vec<u64> = list
                .map_err(|c| anyhow::anyhow!("{me}: {c:?}"))?
                .into_inner()
                .records
                .iter()
                .map(|r| r.sequence)
                .collect();
            assert_eq!(listed, expected, "{me}");
            let mut searched: Vec<u64> = search
                .map_err(|c| anyhow::anyhow!("{me}: {c:?}"))?
                .into_inner()
                .records
                .iter()
                .map(|r| r.sequence)
                .collect();
            searched.reverse();
            assert_eq!(searched, expected, "{me}");
            assert_eq!(get_other.map(drop), Err(Code::PermissionDenied), "{me}");
            let alice_may = me == "alice";
            assert_eq!(get_alices.is_ok(), alice_may, "{me}");
            assert_eq!(verify.map(drop), Err(Code::PermissionDenied), "{me}");
            assert_eq!(export.map(drop), Err(Code::PermissionDenied), "{me}");
            assert_eq!(checkpoints.map(drop), Err(Code::PermissionDenied), "{me}");
            assert!(key.is_ok(), "{me}: the public key is for everyone");
        }
        Sees::Unauthenticated => {
            for code in [
                list.map(drop),
                search.map(drop),
                get_other.map(drop),
                verify.map(drop),
                export.map(drop),
                checkpoints.map(drop),
                key.map(drop),
            ] {
                assert_eq!(code, Err(Code::Unauthenticated));
            }
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readers_see_everything_and_everyone_else_only_their_own_records() -> anyhow::Result<()> {
    let h = harness().await?;
    let mut admin = h
        .client(ServiceName::Assignment, &h.mfa_token(ADMIN))
        .assignment();
    let readers = [
        ("pra", roles::PRIVILEGED_ROLE_ADMINISTRATOR),
        ("secadmin", roles::SECURITY_ADMINISTRATOR),
        ("secreader", roles::SECURITY_READER),
        ("greader", roles::GLOBAL_READER),
    ];
    for (principal, role) in readers {
        admin
            .create_active_schedule(CreateActiveScheduleRequest {
                request_id: principal.into(),
                principal_id: principal.into(),
                role_id: role.into(),
                scope: "/".into(),
                justification: "audit readers".into(),
                ..Default::default()
            })
            .await?;
    }
    alice_activates(&h).await?;
    let all = settled(&h).await?;
    let client = |principal: &str| h.client(ServiceName::Audit, &h.token(principal));

    check(&client(ADMIN), ADMIN, Sees::Everything, &all).await?;
    for (principal, _) in readers {
        check(&client(principal), principal, Sees::Everything, &all).await?;
    }
    check(&client("alice"), "alice", Sees::Own, &all).await?;
    check(&client("mallory"), "mallory", Sees::Own, &all).await?;
    let service = h.client(ServiceName::Audit, &h.service_token(ServiceName::Approval));
    check(&service, "service:approval", Sees::Own, &all).await?;
    check(
        &h.client(ServiceName::Audit, "not-a-token"),
        "anonymous",
        Sees::Unauthenticated,
        &all,
    )
    .await?;

    // A reader at a narrower scope is not a reader of the trail.
    admin
        .create_active_schedule(CreateActiveScheduleRequest {
            request_id: "narrow".into(),
            principal_id: "narrow".into(),
            role_id: roles::GLOBAL_READER.into(),
            scope: crate::support::SCOPE.into(),
            justification: "a scoped reader".into(),
            ..Default::default()
        })
        .await?;
    let refused = client("narrow")
        .audit()
        .verify_chain(VerifyChainRequest::default())
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied);
    assert_eq!(reason(&refused), "NOT_AUTHORIZED");
    h.stop().await;
    Ok(())
}
