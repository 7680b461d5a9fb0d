//! What each party sees: a requestor their own requests (filtered), and their live activations;
//! admins everyone's; strangers nothing.

use pim_config::ServiceName;
use pim_proto::activation::v1::{
    GetActivationRequestRequest, ListMyRequestsRequest, ListRequestsRequest, RequestStatus,
};
use pim_testkit::ADMIN;
use tonic::Code;

use super::{alice, alice_under, guide_policy, harness_with, submit, ticketed};
use crate::support::reason;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requestors_see_their_own_admins_see_all_and_strangers_nothing() -> anyhow::Result<()> {
    let h = harness_with(&[]).await?;
    alice_under(&h, guide_policy(Some("bob"))).await?;
    let pending = submit(&h, ticketed("q-1", 30)).await?;
    let refused = submit(
        &h,
        pim_proto::activation::v1::SubmitRequest {
            scope: "/administrativeUnits/au-9".into(),
            ..ticketed("q-2", 30)
        },
    )
    .await
    .unwrap_err();
    assert_eq!(reason(&refused), "NOT_ELIGIBLE");

    let mine = alice(&h)
        .activation()
        .list_my_requests(ListMyRequestsRequest {
            status: RequestStatus::PendingApproval.into(),
            ..Default::default()
        })
        .await?
        .into_inner()
        .requests;
    assert_eq!(mine.len(), 1);
    assert_eq!(mine[0].id, pending.id);
    let none = alice(&h)
        .activation()
        .list_my_requests(ListMyRequestsRequest {
            status: RequestStatus::Provisioned.into(),
            ..Default::default()
        })
        .await?
        .into_inner()
        .requests;
    assert!(none.is_empty());

    let bobs = h
        .client(ServiceName::Activation, &h.mfa_token("bob"))
        .activation();
    assert!(
        bobs.clone()
            .list_my_requests(ListMyRequestsRequest::default())
            .await?
            .into_inner()
            .requests
            .is_empty()
    );
    let hidden = bobs
        .clone()
        .get_activation_request(GetActivationRequestRequest {
            id: pending.id.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(hidden.code(), Code::NotFound);
    let not_admin = bobs
        .clone()
        .list_requests(ListRequestsRequest::default())
        .await
        .unwrap_err();
    assert_eq!(reason(&not_admin), "NOT_AUTHORIZED");

    let admin = h
        .client(ServiceName::Activation, &h.token(ADMIN))
        .activation();
    let all = admin
        .clone()
        .list_requests(ListRequestsRequest {
            principal_id: "alice".into(),
            ..Default::default()
        })
        .await?
        .into_inner()
        .requests;
    assert_eq!(all.len(), 1);
    let shown = admin
        .clone()
        .get_activation_request(GetActivationRequestRequest {
            id: pending.id.clone(),
        })
        .await?
        .into_inner()
        .request
        .unwrap();
    assert_eq!(shown.history.len(), 2, "submitted, case opened");
    h.stop().await;
    Ok(())
}
