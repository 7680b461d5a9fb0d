//! Crash safety: a flow stopped at each step (`PIM_FAULT_POINTS`) is finished by the
//! reconciler after a restart, to the right final state with exactly one window.

use pim_config::ServiceName;
use pim_proto::activation::v1::RequestStatus;
use pim_testkit::Harness;
use tonic::Code;

use super::{
    alice_allowed, alice_under, approve, await_status, guide_policy, harness_with, submit,
    ticketed, windows_of,
};
use crate::bad_input::count;

/// Restarts the activation service as if after a crash, without the fault.
async fn restart_healthy(h: &mut Harness) -> anyhow::Result<()> {
    h.stop_service(ServiceName::Activation).await;
    h.set_setting("PIM_FAULT_POINTS", "");
    h.restart_service(ServiceName::Activation).await
}

/// The id of alice's only request.
async fn only_request(h: &Harness) -> anyhow::Result<String> {
    use sea_orm::ConnectionTrait as _;
    let db = h.service(ServiceName::Activation).db();
    let row = db
        .query_one_raw(pim_db::stmt(db, "SELECT id FROM requests", []))
        .await?
        .ok_or_else(|| anyhow::anyhow!("no request was stored"))?;
    Ok(row.try_get("", "id")?)
}

async fn cases_of(h: &Harness, request_id: &str) -> anyhow::Result<i64> {
    count(
        h.service(ServiceName::Approval).db(),
        &format!("SELECT COUNT(*) AS n FROM cases WHERE request_id = '{request_id}'"),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_approval_a_crash_before_or_after_provisioning_ends_with_one_window()
-> anyhow::Result<()> {
    for point in [
        "after_submit_recorded",
        "before_provision",
        "after_provisioned",
    ] {
        let mut h = harness_with(&[("PIM_FAULT_POINTS", point)]).await?;
        alice_under(&h, guide_policy(None)).await?;
        let crashed = submit(&h, ticketed("crash-1", 30)).await.unwrap_err();
        assert_eq!(crashed.code(), Code::Unavailable, "{point}");
        let id = only_request(&h).await?;
        restart_healthy(&mut h).await?;
        let granted = await_status(&h, &id, RequestStatus::Provisioned).await?;
        assert_eq!(windows_of(&h, &id).await?, 1, "{point}");
        assert!(alice_allowed(&h).await?, "{point}");
        // The client's retry finds the request, not a second one.
        let retried = submit(&h, ticketed("crash-1", 30)).await?;
        assert_eq!(retried.id, granted.id, "{point}");
        h.stop().await;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_approval_a_crash_at_each_step_ends_with_one_case_and_one_window() -> anyhow::Result<()>
{
    for point in [
        "after_submit_recorded",
        "after_case_opened",
        "before_provision",
    ] {
        let mut h = harness_with(&[("PIM_FAULT_POINTS", point)]).await?;
        alice_under(&h, guide_policy(Some("bob"))).await?;
        let submitted = submit(&h, ticketed("crash-2", 30)).await;
        let id = only_request(&h).await?;
        if point == "before_provision" {
            // The case opens; the crash comes after the approval is consumed.
            let pending = submitted?;
            approve(&h, "bob", &pending.case_id).await?;
            await_status(&h, &id, RequestStatus::PendingProvisioning).await?;
        } else {
            assert_eq!(submitted.unwrap_err().code(), Code::Unavailable, "{point}");
        }
        restart_healthy(&mut h).await?;
        if point != "before_provision" {
            let pending = h
                .eventually(std::time::Duration::from_secs(10), || async {
                    let request = super::request_status(&h, &id).await?;
                    Ok((!request.case_id.is_empty()).then_some(request))
                })
                .await?;
            assert_eq!(pending.status(), RequestStatus::PendingApproval, "{point}");
            approve(&h, "bob", &pending.case_id).await?;
        }
        await_status(&h, &id, RequestStatus::Provisioned).await?;
        assert_eq!(cases_of(&h, &id).await?, 1, "{point}");
        assert_eq!(windows_of(&h, &id).await?, 1, "{point}");
        assert!(alice_allowed(&h).await?, "{point}");
        h.stop().await;
    }
    Ok(())
}
