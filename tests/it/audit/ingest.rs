//! Every event of assignment, activation and approval becomes one chained record that names its
//! actor, target, role, scope, justification and ticket; a redelivered event writes nothing.

use std::time::Duration;

use pim_config::ServiceName;
use pim_events::{Publisher as _, RedisPublisher, stream_key};
use pim_proto::{
    activation::v1::RequestStatus,
    audit::v1::{AuditRecord, GetRecordRequest},
    events::v1::Event,
};
use prost::Message as _;
use sea_orm::ConnectionTrait as _;

use super::{auditor, harness, settled, verify};
use crate::{
    activation::{alice_under, approve, await_status, guide_policy, submit, ticketed},
    bad_input::count,
    support::{ROLE, SCOPE, audit_records, await_audited, make_eligible},
};

fn one<'a>(records: &'a [AuditRecord], event_type: &str) -> &'a AuditRecord {
    records
        .iter()
        .find(|r| r.event_type == event_type)
        .unwrap_or_else(|| panic!("no {event_type} record"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approved_activation_is_recorded_step_by_step_in_one_verifiable_chain()
-> anyhow::Result<()> {
    let h = harness().await?;
    alice_under(&h, guide_policy(Some("bob"))).await?;
    let pending = submit(&h, ticketed("alice-needs-approval", 30)).await?;
    assert_eq!(pending.status(), RequestStatus::PendingApproval);
    approve(&h, "bob", &pending.case_id).await?;
    await_status(&h, &pending.id, RequestStatus::Provisioned).await?;
    await_audited(
        &h,
        &auditor(&h),
        &[
            "assignment.policy_updated",
            "assignment.schedule_created",
            "activation.request_submitted",
            "activation.request_pending_approval",
            "approval.case_opened",
            "approval.case_decided",
            "assignment.window_provisioned",
            "activation.request_granted",
        ],
    )
    .await?;
    let records = settled(&h).await?;

    let policy = one(&records, "assignment.policy_updated");
    assert_eq!(policy.activity, "Update role setting in PIM");
    assert_eq!(policy.category, "policy");
    assert_eq!(
        (policy.actor_type.as_str(), policy.actor_id.as_str()),
        ("principal", pim_testkit::ADMIN)
    );
    assert_eq!(
        (policy.role_id.as_str(), policy.scope.as_str()),
        (ROLE, SCOPE)
    );

    let submitted = one(&records, "activation.request_submitted");
    assert_eq!(
        submitted.activity,
        "Add member to role requested (PIM activation)"
    );
    assert_eq!(submitted.category, "role_management");
    assert_eq!(submitted.actor_id, "alice");
    assert_eq!(submitted.target_type, "request");
    assert_eq!(submitted.subject, pending.id);
    assert_eq!(submitted.target_principal_id, "alice");
    assert_eq!(
        (submitted.role_id.as_str(), submitted.scope.as_str()),
        (ROLE, SCOPE)
    );
    assert_eq!(submitted.justification, "incident 4711");
    assert_eq!(submitted.ticket, "jira OPS-7");
    assert_eq!(submitted.result, "success");
    let payload: serde_json::Value = serde_json::from_str(&submitted.payload_json)?;
    assert_eq!(payload["request"]["principal_id"], "alice", "{payload}");

    let opened = one(&records, "approval.case_opened");
    assert_eq!(opened.category, "approval");
    assert_eq!(opened.target_type, "case");
    assert_eq!(opened.subject, pending.case_id);
    assert_eq!(opened.target_principal_id, "alice");
    let decided = one(&records, "approval.case_decided");
    assert_eq!(decided.activity, "Approval decision recorded in PIM");
    assert_eq!(decided.actor_id, "bob");

    let provisioned = one(&records, "assignment.window_provisioned");
    assert_eq!(
        provisioned.activity,
        "Add member to role completed (PIM activation)"
    );
    assert_eq!(
        (
            provisioned.actor_type.as_str(),
            provisioned.actor_id.as_str()
        ),
        ("service", "service:activation")
    );
    assert_eq!(provisioned.target_principal_id, "alice");
    assert_eq!(provisioned.correlation_id, pending.id);
    for record in &records {
        assert!(
            record.trace_id.is_empty()
                || (record.trace_id.len() == 32
                    && record.trace_id.bytes().all(|b| b.is_ascii_hexdigit())),
            "{}",
            record.trace_id
        );
        assert_eq!(
            record.producer,
            record.event_type.split('.').next().unwrap_or_default()
        );
    }

    // One dense chain: each record follows the hash of the one before it.
    let sequences: Vec<u64> = records.iter().map(|r| r.sequence).collect();
    assert_eq!(sequences, (1..=records.len() as u64).collect::<Vec<_>>());
    assert_eq!(records[0].prev_hash, "0".repeat(64));
    for pair in records.windows(2) {
        assert_eq!(
            pair[1].prev_hash, pair[0].hash,
            "record {}",
            pair[1].sequence
        );
    }
    // One record with its chain proof.
    let proof = auditor(&h)
        .audit()
        .get_record(GetRecordRequest {
            sequence: submitted.sequence,
        })
        .await?
        .into_inner()
        .record
        .unwrap_or_default();
    assert_eq!(&proof, submitted);
    assert_eq!(
        proof.prev_hash,
        records[submitted.sequence as usize - 2].hash
    );

    let verdict = verify(&h).await?;
    assert!(verdict.ok, "{verdict:?}");
    assert_eq!(verdict.records_checked, records.len() as u64);
    h.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redelivered_event_produces_no_second_record() -> anyhow::Result<()> {
    let h = harness().await?;
    make_eligible(&h, "alice", "alice-eligible").await?;
    let audit = auditor(&h);
    await_audited(&h, &audit, &["assignment.schedule_created"]).await?;
    let before = settled(&h).await?;
    let created = before
        .iter()
        .rfind(|r| r.event_type == "assignment.schedule_created")
        .ok_or_else(|| anyhow::anyhow!("no schedule record"))?
        .clone();

    // The producer's relay publishes the same event again, as it may after a crash.
    let assignment = h.service(ServiceName::Assignment).db();
    let row = assignment
        .query_one_raw(pim_db::stmt(
            assignment,
            "SELECT envelope, sequence FROM outbox WHERE event_id = $1",
            [created.event_id.clone().into()],
        ))
        .await?
        .ok_or_else(|| anyhow::anyhow!("no outbox row"))?;
    let mut event = Event::decode(row.try_get::<Vec<u8>>("", "envelope")?.as_slice())?;
    event.sequence = row.try_get::<i64>("", "sequence")? as u64;
    let publisher = RedisPublisher::connect(
        &h.redis_url,
        stream_key(&h.prefix, "assignment"),
        vec!["audit".into(), "activation".into()],
    )
    .await?;
    publisher.publish(&[event]).await?;
    // A later event on the same stream is recorded only after the copy was handled.
    make_eligible(&h, "bob", "bob-eligible").await?;
    h.eventually(Duration::from_secs(30), || async {
        let records = audit_records(&audit).await?;
        Ok(records
            .iter()
            .any(|r| {
                r.event_type == "assignment.schedule_created" && r.target_principal_id == "bob"
            })
            .then_some(()))
    })
    .await?;
    let after = settled(&h).await?;
    let copies = after
        .iter()
        .filter(|r| r.event_id == created.event_id)
        .count();
    assert_eq!(copies, 1, "the redelivered event was recorded again");
    let stored = count(
        h.service(ServiceName::Audit).db(),
        &format!(
            "SELECT COUNT(*) AS n FROM audit_log WHERE event_id = '{}'",
            created.event_id
        ),
    )
    .await?;
    assert_eq!(stored, 1);
    assert!(verify(&h).await?.ok);
    h.stop().await;
    Ok(())
}
