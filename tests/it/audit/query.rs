//! Filters find exactly the matching records in both orders, and keyset pages neither miss nor
//! repeat a record while new records arrive.

use std::collections::BTreeSet;

use pim_config::ServiceName;
use pim_proto::{
    assignment::v1::CreateEligibilityScheduleRequest,
    audit::v1::{AuditRecord, RecordFilter, RecordOrder, SearchRecordsRequest},
};
use pim_testkit::{ADMIN, Harness};

use super::{auditor, harness, settled};
use crate::support::{ROLE, SCOPE, activate, await_audited, make_eligible, reason};

async fn eligible_at(h: &Harness, principal: &str, scope: &str) -> anyhow::Result<()> {
    h.client(ServiceName::Assignment, &h.mfa_token(ADMIN))
        .assignment()
        .create_eligibility_schedule(CreateEligibilityScheduleRequest {
            request_id: format!("{principal}-{scope}"),
            principal_id: principal.into(),
            role_id: ROLE.into(),
            scope: scope.into(),
            justification: "query test".into(),
            ..Default::default()
        })
        .await?;
    Ok(())
}

/// Every record matching `filter`, read in pages of 2 in `order`.
async fn search_all(
    h: &Harness,
    filter: &RecordFilter,
    order: RecordOrder,
) -> anyhow::Result<Vec<AuditRecord>> {
    let mut records = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = auditor(h)
            .audit()
            .search_records(SearchRecordsRequest {
                filter: Some(filter.clone()),
                page_size: 2,
                page_token: page_token.clone(),
                order: order.into(),
            })
            .await?
            .into_inner();
        records.extend(page.records);
        if page.next_page_token.is_empty() {
            return Ok(records);
        }
        page_token = page.next_page_token;
    }
}

fn ts(millis: i64) -> Option<pim_proto::Timestamp> {
    Some(pim_proto::timestamp_from_millis(millis))
}

fn millis(t: &Option<pim_proto::Timestamp>) -> i64 {
    t.as_ref()
        .map(pim_proto::millis_from_timestamp)
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_filter_finds_exactly_the_matching_records_in_both_orders() -> anyhow::Result<()> {
    let h = harness().await?;
    make_eligible(&h, "alice", "alice-eligible").await?;
    h.clock.advance(chrono::Duration::minutes(1));
    let middle = pim_clock::Clock::now_millis(h.clock.as_ref());
    let alice = h.client(ServiceName::Activation, &h.mfa_token("alice"));
    activate(&alice, "alice-activates", 30).await?;
    eligible_at(&h, "bob", &format!("{SCOPE}/groups/g1")).await?;
    eligible_at(&h, "carol", "/administrativeUnits/au-10").await?;
    h.clock.advance(chrono::Duration::minutes(1));
    let late = pim_clock::Clock::now_millis(h.clock.as_ref());
    eligible_at(&h, "dave", "/administrativeUnits/au-2").await?;
    // Alice may not assign: a security event, a failure.
    let denied = h
        .client(ServiceName::Assignment, &h.mfa_token("alice"))
        .assignment()
        .create_eligibility_schedule(CreateEligibilityScheduleRequest {
            request_id: "alice-tries".into(),
            principal_id: "alice".into(),
            role_id: ROLE.into(),
            scope: SCOPE.into(),
            ..Default::default()
        })
        .await;
    assert_eq!(denied.unwrap_err().code(), tonic::Code::PermissionDenied);
    await_audited(
        &h,
        &auditor(&h),
        &["assignment.access_denied", "activation.request_granted"],
    )
    .await?;
    let all = settled(&h).await?;
    let granted = all
        .iter()
        .find(|r| r.event_type == "activation.request_granted")
        .ok_or_else(|| anyhow::anyhow!("no grant"))?
        .clone();

    type Oracle = Box<dyn Fn(&AuditRecord) -> bool>;
    let under_scope =
        |r: &AuditRecord| r.scope == SCOPE || r.scope.starts_with(&format!("{SCOPE}/"));
    let correlation = granted.correlation_id.clone();
    let trace = all
        .iter()
        .map(|r| r.trace_id.clone())
        .find(|t| !t.is_empty());
    let mut cases: Vec<(&str, RecordFilter, Oracle)> = vec![
        (
            "actor",
            RecordFilter {
                actor_id: "alice".into(),
                ..Default::default()
            },
            Box::new(|r| r.actor_id == "alice"),
        ),
        (
            "target",
            RecordFilter {
                target_principal_id: "bob".into(),
                ..Default::default()
            },
            Box::new(|r| r.target_principal_id == "bob"),
        ),
        (
            "role",
            RecordFilter {
                role_id: ROLE.into(),
                ..Default::default()
            },
            Box::new(|r| r.role_id == ROLE),
        ),
        (
            "scope and below",
            RecordFilter {
                scope: SCOPE.into(),
                ..Default::default()
            },
            Box::new(under_scope),
        ),
        (
            "everything under /",
            RecordFilter {
                scope: "/".into(),
                ..Default::default()
            },
            Box::new(|r| r.scope.starts_with('/')),
        ),
        (
            "activity",
            RecordFilter {
                activity: "Add member to role completed (PIM activation)".into(),
                ..Default::default()
            },
            Box::new(|r| r.event_type == "assignment.window_provisioned"),
        ),
        (
            "category",
            RecordFilter {
                category: "security".into(),
                ..Default::default()
            },
            Box::new(|r| r.category == "security"),
        ),
        (
            "result",
            RecordFilter {
                result: "failure".into(),
                ..Default::default()
            },
            Box::new(|r| r.result == "failure"),
        ),
        (
            "correlation",
            RecordFilter {
                correlation_id: correlation.clone(),
                ..Default::default()
            },
            Box::new(move |r| r.correlation_id == correlation),
        ),
        (
            "time range",
            RecordFilter {
                start_time: ts(middle),
                end_time: ts(late),
                ..Default::default()
            },
            Box::new(move |r| (middle..late).contains(&millis(&r.occurred_at))),
        ),
        (
            "actor in a scope",
            RecordFilter {
                actor_id: ADMIN.into(),
                scope: SCOPE.into(),
                ..Default::default()
            },
            Box::new(move |r| r.actor_id == ADMIN && under_scope(r)),
        ),
    ];
    if let Some(trace) = trace {
        let wanted = trace.clone();
        cases.push((
            "trace",
            RecordFilter {
                trace_id: trace,
                ..Default::default()
            },
            Box::new(move |r| r.trace_id == wanted),
        ));
    }
    for (name, filter, oracle) in &cases {
        let expected: Vec<u64> = all
            .iter()
            .filter(|r| oracle(r))
            .map(|r| r.sequence)
            .collect();
        assert!(
            !expected.is_empty(),
            "{name}: the fixture has no matching record"
        );
        assert!(
            expected.len() < all.len(),
            "{name}: the filter must leave something out"
        );
        let oldest: Vec<u64> = search_all(&h, filter, RecordOrder::OldestFirst)
            .await?
            .iter()
            .map(|r| r.sequence)
            .collect();
        assert_eq!(oldest, expected, "{name}, oldest first");
        let newest: Vec<u64> = search_all(&h, filter, RecordOrder::Unspecified)
            .await?
            .iter()
            .map(|r| r.sequence)
            .collect();
        let mut reversed = expected.clone();
        reversed.reverse();
        assert_eq!(newest, reversed, "{name}, newest first by default");
    }
    let denial = all
        .iter()
        .find(|r| r.event_type == "assignment.access_denied")
        .ok_or_else(|| anyhow::anyhow!("no denial record"))?;
    assert_eq!(
        (denial.actor_id.as_str(), denial.result_reason.as_str()),
        ("alice", "NOT_AUTHORIZED")
    );

    // Bad input is named field by field.
    for (request, field) in [
        (
            SearchRecordsRequest {
                page_size: 5000,
                ..Default::default()
            },
            "page_size",
        ),
        (
            SearchRecordsRequest {
                page_token: "x".into(),
                ..Default::default()
            },
            "page_token",
        ),
        (
            SearchRecordsRequest {
                filter: Some(RecordFilter {
                    category: "gossip".into(),
                    ..Default::default()
                }),
                ..Default::default()
            },
            "filter.category",
        ),
        (
            SearchRecordsRequest {
                filter: Some(RecordFilter {
                    scope: "administrativeUnits".into(),
                    ..Default::default()
                }),
                ..Default::default()
            },
            "filter.scope",
        ),
        (
            SearchRecordsRequest {
                filter: Some(RecordFilter {
                    start_time: ts(late),
                    end_time: ts(middle),
                    ..Default::default()
                }),
                ..Default::default()
            },
            "filter.end_time",
        ),
        (
            SearchRecordsRequest {
                filter: Some(RecordFilter {
                    result: "maybe".into(),
                    ..Default::default()
                }),
                ..Default::default()
            },
            "filter.result",
        ),
    ] {
        let status = auditor(&h)
            .audit()
            .search_records(request)
            .await
            .unwrap_err();
        assert_eq!(status.code(), tonic::Code::InvalidArgument, "{field}");
        assert!(
            status.message().contains(field),
            "{field}: {}",
            status.message()
        );
        assert_eq!(reason(&status), "");
    }
    h.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_miss_and_repeat_no_record_while_new_records_arrive() -> anyhow::Result<()> {
    let h = harness().await?;
    for i in 0..6 {
        eligible_at(&h, &format!("p{i}"), SCOPE).await?;
    }
    let before = settled(&h).await?;
    let audit = auditor(&h);
    let page = |order: RecordOrder, token: String| {
        let audit = audit.clone();
        async move {
            anyhow::Ok(
                audit
                    .audit()
                    .search_records(SearchRecordsRequest {
                        filter: None,
                        page_size: 2,
                        page_token: token,
                        order: order.into(),
                    })
                    .await?
                    .into_inner(),
            )
        }
    };
    // Newest first: the pages walk down from the newest record seen at the first page, whatever
    // arrives meanwhile.
    let mut seen = Vec::new();
    let mut token = String::new();
    let mut arrivals = 0;
    loop {
        let next = page(RecordOrder::NewestFirst, token).await?;
        seen.extend(next.records.iter().map(|r| r.sequence));
        eligible_at(&h, &format!("newcomer{arrivals}"), SCOPE).await?;
        arrivals += 1;
        if next.next_page_token.is_empty() {
            break;
        }
        token = next.next_page_token;
    }
    let top = before.last().map(|r| r.sequence).unwrap_or_default();
    assert!(seen[0] >= top);
    let expected: Vec<u64> = (1..=seen[0]).rev().collect();
    assert_eq!(seen, expected, "newest first, with {arrivals} arrivals");

    // Oldest first: dense and in order, new records included as they come.
    let mut seen = Vec::new();
    let mut token = String::new();
    for i in 0.. {
        let next = page(RecordOrder::OldestFirst, token).await?;
        seen.extend(next.records.iter().map(|r| r.sequence));
        if i < 3 {
            eligible_at(&h, &format!("late{i}"), SCOPE).await?;
        }
        if next.next_page_token.is_empty() {
            break;
        }
        token = next.next_page_token;
    }
    let unique: BTreeSet<u64> = seen.iter().copied().collect();
    assert_eq!(unique.len(), seen.len(), "a record repeated");
    assert_eq!(
        seen,
        (1..=seen.len() as u64).collect::<Vec<_>>(),
        "a record missed"
    );
    h.stop().await;
    Ok(())
}
