//! The deployment plan's flow, recommendations, and recurrence.

use std::time::Duration;

use pim_config::ServiceName;
use pim_proto::approval::v1::{
    AcceptRecommendationsRequest, DecideReviewItemsRequest, DefaultDecision, ReviewDecision,
    ReviewDefinition, ReviewInstanceStatus, ReviewItemDecision, ReviewRecurrence, ReviewSettings,
    ReviewerKind,
};
use pim_testkit::ADMIN;

use super::{
    DAY_MS, advance, approval, await_instances, define, ga_review, global_admin, instances,
    is_global_admin, items,
};
use crate::support::{ROLE, SCOPE, await_audited, make_eligible};

fn decision(item_id: &str, decision: ReviewDecision, justification: &str) -> ReviewItemDecision {
    ReviewItemDecision {
        item_id: item_id.into(),
        decision: decision.into(),
        justification: justification.into(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_global_administrators_review_themselves_and_denials_are_removed() -> anyhow::Result<()>
{
    let h = crate::approval::harness().await?;
    let members = ["gina", "hank", "ivan", "judy"];
    for m in members {
        global_admin(&h, m).await?;
    }
    let definition = define(&h, ADMIN, ga_review(DefaultDecision::Deny)).await?;
    let instance = await_instances(&h, ADMIN, &definition.id, 1).await?;
    let all = items(&h, ADMIN, &instance.id).await?;
    let mut reviewed: Vec<&str> = all.iter().map(|i| i.principal_id.as_str()).collect();
    reviewed.sort();
    assert_eq!(
        reviewed, members,
        "every member, and never the break-glass account"
    );

    let item_of = |who: &str| {
        all.iter()
            .find(|i| i.principal_id == who)
            .unwrap()
            .id
            .clone()
    };
    // Members see only their own item.
    assert_eq!(items(&h, "gina", "").await?.len(), 1);
    let unjustified = approval(&h, "gina")
        .approval()
        .decide_review_items(DecideReviewItemsRequest {
            decisions: vec![decision(&item_of("gina"), ReviewDecision::Approve, "")],
        })
        .await?
        .into_inner()
        .results;
    assert_eq!(unjustified[0].code, "INVALID_ARGUMENT");
    for (who, verdict, why) in [
        ("gina", ReviewDecision::Approve, "I run the tenant"),
        ("hank", ReviewDecision::Approve, "on-call lead"),
        ("ivan", ReviewDecision::Deny, "moved to another team"),
    ] {
        let results = approval(&h, who)
            .approval()
            .decide_review_items(DecideReviewItemsRequest {
                decisions: vec![decision(&item_of(who), verdict, why)],
            })
            .await?
            .into_inner()
            .results;
        assert_eq!(results[0].code, "OK", "{who}: {}", results[0].message);
    }

    advance(&h, 3 * DAY_MS);
    h.eventually(Duration::from_secs(30), || async {
        let now = instances(&h, ADMIN, &definition.id).await?;
        Ok((now[0].status() == ReviewInstanceStatus::Applied).then_some(()))
    })
    .await?;
    assert!(is_global_admin(&h, "gina").await?);
    assert!(is_global_admin(&h, "hank").await?);
    assert!(!is_global_admin(&h, "ivan").await?, "denied");
    assert!(
        !is_global_admin(&h, "judy").await?,
        "silent, and the default is Deny"
    );
    let after = items(&h, ADMIN, &instance.id).await?;
    let judy = after.iter().find(|i| i.principal_id == "judy").unwrap();
    assert_eq!(
        (judy.decision(), judy.decided_by.as_str()),
        (ReviewDecision::Deny, "")
    );
    assert!(judy.applied);

    // The audit trail shows who decided what.
    let audit = h.client(ServiceName::Audit, &h.token(ADMIN));
    let records = await_audited(&h, &audit, &["approval.review_decision_applied"]).await?;
    let mut deciders: Vec<String> = records
        .iter()
        .filter(|r| r.event_type == "approval.review_item_decided")
        .map(|r| r.actor_id.clone())
        .collect();
    deciders.sort();
    assert_eq!(
        deciders,
        ["", "gina", "hank", "ivan"],
        "three people and the default"
    );
    h.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recent_activations_are_recommended_approve_and_idle_eligibility_deny() -> anyhow::Result<()>
{
    let h = crate::activation::harness_with(&[]).await?;
    crate::activation::alice_under(&h, crate::activation::guide_policy(None)).await?;
    make_eligible(&h, "carol", "carol-eligible").await?;
    crate::activation::submit(&h, crate::activation::ticketed("recent", 30)).await?;
    // The approval context learns of the activation from activation's events.
    h.eventually(Duration::from_secs(30), || async {
        let n = crate::bad_input::count(
            h.service(ServiceName::Approval).db(),
            "SELECT COUNT(*) AS n FROM activation_history",
        )
        .await?;
        Ok((n == 1).then_some(()))
    })
    .await?;
    let definition = define(
        &h,
        ADMIN,
        ReviewDefinition {
            display_name: "Security Administrators of au-1".into(),
            role_ids: vec![ROLE.into()],
            scope: SCOPE.into(),
            include_eligible: true,
            reviewer_kind: ReviewerKind::Admins.into(),
            recurrence: ReviewRecurrence::OneTime.into(),
            instance_duration_days: 7,
            settings: Some(ReviewSettings {
                recommendations_enabled: true,
                default_decision: DefaultDecision::None.into(),
                ..Default::default()
            }),
            ..Default::default()
        },
    )
    .await?;
    let instance = await_instances(&h, ADMIN, &definition.id, 1).await?;
    let all = items(&h, ADMIN, &instance.id).await?;
    let of = |who: &str| all.iter().find(|i| i.principal_id == who).unwrap().clone();
    let (alice, carol) = (of("alice"), of("carol"));
    assert_eq!(alice.recommendation(), ReviewDecision::Approve);
    assert_eq!(
        alice.recommendation_reason,
        "activated 1 time(s) in the last 30 days"
    );
    assert_eq!(carol.recommendation(), ReviewDecision::Deny);
    assert_eq!(
        carol.recommendation_reason,
        "not activated in the last 30 days"
    );
    assert_eq!(
        alice.reviewer_ids,
        [ADMIN],
        "the administrators at the scope review"
    );

    let accepted = approval(&h, ADMIN)
        .approval()
        .accept_recommendations(AcceptRecommendationsRequest {
            instance_id: instance.id.clone(),
        })
        .await?
        .into_inner()
        .items;
    let mut decided: Vec<(String, ReviewDecision)> = accepted
        .iter()
        .map(|i| (i.principal_id.clone(), i.decision()))
        .collect();
    decided.sort();
    assert_eq!(
        decided,
        [
            ("alice".to_owned(), ReviewDecision::Approve),
            ("carol".to_owned(), ReviewDecision::Deny)
        ]
    );
    h.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quarterly_review_starts_its_next_instance_three_months_later() -> anyhow::Result<()> {
    let h = crate::approval::harness().await?;
    global_admin(&h, "gina").await?;
    let mut quarterly = ga_review(DefaultDecision::None);
    quarterly.recurrence = ReviewRecurrence::Quarterly.into();
    quarterly.instance_duration_days = 7;
    let definition = define(&h, ADMIN, quarterly).await?;
    let first = await_instances(&h, ADMIN, &definition.id, 1).await?;
    let start = pim_proto::millis_from_timestamp(first.start_time.as_ref().unwrap());
    let next = pim_clock::from_millis(start)
        .checked_add_months(chrono::Months::new(3))
        .unwrap()
        .timestamp_millis();

    let now = pim_clock::Clock::now_millis(h.clock.as_ref());
    advance(&h, next - 1 - now);
    // The first instance completing shows that the timers ran at this instant.
    h.eventually(Duration::from_secs(30), || async {
        let all = instances(&h, ADMIN, &definition.id).await?;
        Ok((all[0].status() != ReviewInstanceStatus::InProgress).then_some(()))
    })
    .await?;
    assert_eq!(
        instances(&h, ADMIN, &definition.id).await?.len(),
        1,
        "not a millisecond early"
    );
    advance(&h, 1);
    let second = await_instances(&h, ADMIN, &definition.id, 2).await?;
    assert_eq!(
        pim_proto::millis_from_timestamp(second.start_time.as_ref().unwrap()),
        next
    );
    h.stop().await;
    Ok(())
}
