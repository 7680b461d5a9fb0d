//! Recipients follow the role policy's notification rules: approvers hear of cases, requestors
//! of decisions, admins of activations and assignments; levels none, critical and all, default
//! recipients and additional addresses are respected; disabled principals are skipped.

use std::time::Duration;

use pim_config::ServiceName;
use pim_proto::{
    activation::v1::RequestStatus,
    assignment::v1::{
        CreateEligibilityScheduleRequest, NotificationLevel, NotificationRule, NotificationRules,
        Principal, PrincipalType, UpsertPrincipalsRequest,
    },
    notification::v1::DeliveryStatus,
};
use pim_testkit::ADMIN;

use super::{email_of, settled, world};
use crate::{
    activation::{alice_under, approve, await_status, guide_policy, submit, ticketed},
    bad_input::count,
    support::{ROLE, SCOPE, make_eligible},
};

fn rule(level: NotificationLevel, defaults: bool, extra: &[&str]) -> Option<NotificationRule> {
    Some(NotificationRule {
        level: level.into(),
        default_recipients: defaults,
        additional_recipients: extra.iter().map(|e| (*e).into()).collect(),
    })
}

fn subjects_to(w: &super::World, who: &str) -> Vec<String> {
    let mut subjects: Vec<_> = w
        .smtp
        .messages_to(who)
        .into_iter()
        .map(|m| m.subject)
        .collect();
    subjects.sort();
    subjects
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approvers_hear_of_a_case_and_the_rules_levels_decide_everyone_else() -> anyhow::Result<()>
{
    let w = world(&[]).await?;
    let mut policy = guide_policy(Some("bob"));
    policy.notifications = Some(NotificationRules {
        // Nothing about eligibility: admins at none, the assignee only for critical messages.
        eligible_assignment_admin: rule(NotificationLevel::None, true, &[]),
        eligible_assignment_requestor: rule(NotificationLevel::Critical, true, &[]),
        // Approvers only for what asks them to act.
        activation_approver: rule(NotificationLevel::Critical, true, &[]),
        // The requestor hears nothing; activations go to the SOC's address, not the admins.
        activation_requestor: rule(NotificationLevel::None, true, &[]),
        activation_admin: rule(NotificationLevel::All, false, &["soc@example.test"]),
        ..Default::default()
    });
    alice_under(&w.h, policy).await?;
    let pending = submit(&w.h, ticketed("with-approval", 60)).await?;
    assert_eq!(pending.status(), RequestStatus::PendingApproval);

    // The approver is asked to act at once.
    let asked = settled(&w.h, "approval.case_opened", 1, DeliveryStatus::Delivered).await?;
    assert_eq!(asked[0].recipient, email_of("bob"));
    assert_eq!(asked[0].principal_id, "bob");
    approve(&w.h, "bob", &pending.case_id).await?;
    await_status(&w.h, &pending.id, RequestStatus::Provisioned).await?;
    let granted = settled(
        &w.h,
        "activation.request_granted",
        1,
        DeliveryStatus::Delivered,
    )
    .await?;
    assert_eq!(granted[0].recipient, "soc@example.test");
    assert_eq!(granted[0].principal_id, "");

    // Every event was consumed before we count what nobody should have received.
    let db = w.h.service(ServiceName::Notification).db();
    w.h.eventually(Duration::from_secs(30), || async {
        let decided = count(
            db,
            "SELECT COUNT(*) AS n FROM inbox i WHERE i.producer = 'approval' AND i.sequence >= 2",
        )
        .await?;
        Ok((decided >= 1).then_some(()))
    })
    .await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        subjects_to(&w, &email_of("bob")).len(),
        1,
        "only the request to act"
    );
    assert!(subjects_to(&w, &email_of("bob"))[0].contains("Approval needed"));
    assert!(subjects_to(&w, &email_of("alice")).is_empty(), "level none");
    assert!(
        subjects_to(&w, &email_of(ADMIN)).is_empty(),
        "level none / no defaults"
    );
    assert_eq!(subjects_to(&w, "soc@example.test").len(), 1);
    assert!(subjects_to(&w, &email_of("carol")).is_empty());
    w.h.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_assignment_reaches_the_assignee_and_the_admins_but_never_a_disabled_principal()
-> anyhow::Result<()> {
    let w = world(&[]).await?;
    make_eligible(&w.h, "alice", "alice-eligible").await?;
    let created = settled(
        &w.h,
        "assignment.schedule_created",
        2,
        DeliveryStatus::Delivered,
    )
    .await?;
    let mut to: Vec<_> = created.iter().map(|d| d.recipient.clone()).collect();
    to.sort();
    assert_eq!(to, [email_of(ADMIN), email_of("alice")]);
    let alice_mail = &w.smtp.messages_to(&email_of("alice"))[0];
    assert!(
        alice_mail.subject.contains("was made eligible"),
        "{}",
        alice_mail.subject
    );

    // Carol is disabled in the directory: an assignment to her reaches only the admins.
    let admin = w.h.client(ServiceName::Assignment, &w.h.mfa_token(ADMIN));
    admin
        .assignment()
        .upsert_principals(UpsertPrincipalsRequest {
            principals: vec![Principal {
                id: "carol".into(),
                r#type: PrincipalType::User.into(),
                display_name: "carol (display)".into(),
                email: email_of("carol"),
                enabled: false,
                ..Default::default()
            }],
            ..Default::default()
        })
        .await?;
    admin
        .assignment()
        .create_eligibility_schedule(CreateEligibilityScheduleRequest {
            request_id: "carol-eligible".into(),
            principal_id: "carol".into(),
            role_id: ROLE.into(),
            scope: SCOPE.into(),
            justification: "backfill".into(),
            ..Default::default()
        })
        .await?;
    settled(
        &w.h,
        "assignment.schedule_created",
        3,
        DeliveryStatus::Delivered,
    )
    .await?;
    assert!(w.smtp.messages_to(&email_of("carol")).is_empty());
    assert_eq!(w.smtp.messages_to(&email_of(ADMIN)).len(), 2);

    // A refused write is a security event, and the admins hear of it.
    let refused =
        w.h.client(ServiceName::Assignment, &w.h.mfa_token("bob"))
            .assignment()
            .create_eligibility_schedule(CreateEligibilityScheduleRequest {
                request_id: "bob-self".into(),
                principal_id: "bob".into(),
                role_id: ROLE.into(),
                scope: SCOPE.into(),
                justification: "let me in".into(),
                ..Default::default()
            })
            .await;
    assert!(refused.is_err());
    let denied = settled(
        &w.h,
        "assignment.access_denied",
        1,
        DeliveryStatus::Delivered,
    )
    .await?;
    assert_eq!(denied[0].recipient, email_of(ADMIN));
    assert!(
        denied[0].subject.contains("access denied"),
        "{}",
        denied[0].subject
    );
    w.h.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_escalation_reaches_only_the_escalation_approvers_and_the_decision_the_requestor()
-> anyhow::Result<()> {
    let w = world(&[]).await?;
    let mut policy = guide_policy(Some("bob"));
    if let Some(approval) = policy.approval.as_mut() {
        approval.stages[0].escalation_approvers = vec![pim_proto::assignment::v1::Approver {
            subject: Some(pim_proto::assignment::v1::approver::Subject::UserId(
                "carol".into(),
            )),
        }];
        approval.stages[0].escalation_after = Some(pim_proto::Duration {
            seconds: 3600,
            nanos: 0,
        });
    }
    alice_under(&w.h, policy).await?;
    let pending = submit(&w.h, ticketed("escalates", 60)).await?;
    let opened = settled(&w.h, "approval.case_opened", 1, DeliveryStatus::Delivered).await?;
    assert_eq!(
        opened[0].recipient,
        email_of("bob"),
        "carol is not asked yet"
    );

    super::advance(&w.h, 3_600_000 + 1_000);
    let escalated = settled(
        &w.h,
        "approval.case_escalated",
        1,
        DeliveryStatus::Delivered,
    )
    .await?;
    assert_eq!(
        escalated[0].recipient,
        email_of("carol"),
        "only the new approver"
    );
    let mail = &w.smtp.messages_to(&email_of("carol"))[0];
    assert!(mail.subject.contains("Escalated"), "{}", mail.subject);

    // Carol decides: the requestor and the other approver (bob) hear of it, carol does not.
    approve(&w.h, "carol", &pending.case_id).await?;
    let decided = settled(&w.h, "approval.case_decided", 2, DeliveryStatus::Delivered).await?;
    let mut to: Vec<_> = decided.iter().map(|d| d.recipient.clone()).collect();
    to.sort();
    assert_eq!(to, [email_of("alice"), email_of("bob")]);
    let alice_mail = w
        .smtp
        .messages_to(&email_of("alice"))
        .into_iter()
        .find(|m| m.subject.contains("approved"))
        .expect("the decision e-mail");
    assert!(
        alice_mail.text.contains("carol (display)"),
        "{}",
        alice_mail.text
    );
    w.h.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reminders_14_days_and_1_day_ahead_and_the_expiry_reach_only_the_holder()
-> anyhow::Result<()> {
    const DAY_MS: i64 = 86_400_000;
    let w = world(&[]).await?;
    let now = pim_clock::Clock::now_millis(w.h.clock.as_ref());
    w.h.client(ServiceName::Assignment, &w.h.mfa_token(ADMIN))
        .assignment()
        .create_eligibility_schedule(CreateEligibilityScheduleRequest {
            request_id: "twenty-days".into(),
            principal_id: "alice".into(),
            role_id: ROLE.into(),
            scope: SCOPE.into(),
            end_time: Some(pim_proto::timestamp_from_millis(now + 20 * DAY_MS)),
            justification: "project".into(),
            ..Default::default()
        })
        .await?;
    settled(
        &w.h,
        "assignment.schedule_created",
        2,
        DeliveryStatus::Delivered,
    )
    .await?;

    super::advance(&w.h, 6 * DAY_MS + 1_000);
    let first = settled(
        &w.h,
        "assignment.schedule_expiring",
        1,
        DeliveryStatus::Delivered,
    )
    .await?;
    assert_eq!(first[0].recipient, email_of("alice"));
    assert!(
        first[0].subject.contains("expires in 14 days"),
        "{}",
        first[0].subject
    );

    super::advance(&w.h, 13 * DAY_MS);
    let both = settled(
        &w.h,
        "assignment.schedule_expiring",
        2,
        DeliveryStatus::Delivered,
    )
    .await?;
    assert!(both.iter().any(|d| d.subject.contains("expires in 1 day")));
    super::advance(&w.h, DAY_MS);
    let expired = settled(
        &w.h,
        "assignment.schedule_expired",
        1,
        DeliveryStatus::Delivered,
    )
    .await?;
    assert_eq!(expired[0].recipient, email_of("alice"));
    assert!(
        expired[0].subject.contains("has expired"),
        "{}",
        expired[0].subject
    );
    // The admins were told of the assignment (and get their digests), never of its reminders.
    assert!(
        w.smtp
            .messages_to(&email_of(ADMIN))
            .iter()
            .all(|m| !m.subject.contains("expire"))
    );
    w.h.stop().await;
    Ok(())
}
