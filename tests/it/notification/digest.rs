//! The admins' weekly digest, at the period's end on the clock the test moves.

use pim_proto::{activation::v1::RequestStatus, notification::v1::DeliveryStatus};
use pim_testkit::ADMIN;

use super::{advance, email_of, settled, world};
use crate::activation::{alice_under, guide_policy, submit, ticketed};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_week_later_the_admins_get_a_digest_of_assignments_activations_and_pending_approvals()
-> anyhow::Result<()> {
    let w = world(&[]).await?;
    alice_under(&w.h, guide_policy(Some("bob"))).await?;
    let pending = submit(&w.h, ticketed("waits", 60)).await?;
    assert_eq!(pending.status(), RequestStatus::PendingApproval);
    settled(&w.h, "approval.case_opened", 1, DeliveryStatus::Delivered).await?;
    assert!(
        super::deliveries_of_type(&w.h, "notification.digest")
            .await?
            .is_empty(),
        "nothing before the period ends"
    );

    advance(&w.h, 7 * 24 * 3_600_000 + 3_600_000);
    let digest = settled(&w.h, "notification.digest", 1, DeliveryStatus::Delivered).await?;
    assert_eq!(digest[0].recipient, email_of(ADMIN));
    let mail = w
        .smtp
        .messages_to(&email_of(ADMIN))
        .into_iter()
        .find(|m| m.subject.contains("Digest"))
        .expect("the digest e-mail");
    assert!(mail.subject.starts_with("PIM: Digest"), "{}", mail.subject);
    for line in [
        "Activations granted:        0",
        "Assignments created:        2", // alice's, and the break-glass seed at start
        "Approval requests opened:   1",
        "Approvals pending now:      1",
    ] {
        assert!(
            mail.text.contains(line),
            "{line} missing from {}",
            mail.text
        );
    }
    assert_eq!(mail.html_parts, 1);
    w.h.stop().await;
    Ok(())
}
