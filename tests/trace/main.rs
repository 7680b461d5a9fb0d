//! One trace follows an activation: the activation RPC, the calls it makes to assignment, and
//! the audit consumer's handling of the resulting event, as received by a real OTLP endpoint.

#![allow(clippy::unwrap_used)]

// Shared with the `it` suite; this binary uses only part of it.
#[allow(dead_code)]
#[path = "../it/support.rs"]
mod support;

use std::time::Duration;

use pim_config::ServiceName;
use pim_telemetry::TelemetryOptions;
use pim_testkit::{ADMIN, Harness, OtlpReceiver};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_trace_spans_the_activation_rpc_its_assignment_calls_and_the_audit_consumer()
-> anyhow::Result<()> {
    let receiver = OtlpReceiver::start().await?;
    let telemetry = pim_telemetry::init(&TelemetryOptions {
        service_name: "pim-trace-test".into(),
        log_filter: "warn".into(),
        log_json: false,
        trace_filter: "info".into(),
        otlp_endpoint: Some(receiver.endpoint.clone()),
    })?;
    let h = Harness::start().await?;
    support::make_eligible(&h, "alice", "trace-eligible").await?;
    let alice = h.client(ServiceName::Activation, &h.mfa_token("alice"));
    let granted = support::activate(&alice, "trace-activate", 30)
        .await?
        .request
        .unwrap_or_default();

    let audit = h.client(ServiceName::Audit, &h.token(ADMIN));
    let records = support::await_audited(
        &h,
        &audit,
        &[
            "assignment.window_provisioned",
            "activation.request_granted",
        ],
    )
    .await?;
    let provisioned = records
        .iter()
        .find(|r| r.event_type == "assignment.window_provisioned" && r.correlation_id == granted.id)
        .unwrap();

    // Find the activation RPC's trace and everything in it, once the exporter has flushed.
    let spans = h
        .eventually(Duration::from_secs(30), || {
            telemetry.flush();
            let spans = receiver.spans();
            let consumed = spans.iter().any(|s| {
                s.name == "assignment.window_provisioned process"
                    && s.trace_id == provisioned.trace_id
            });
            async move { Ok(consumed.then_some(spans)) }
        })
        .await?;
    let submit = spans
        .iter()
        .find(|s| s.name == "pim.activation.v1.ActivationService/Submit")
        .unwrap();
    let trace: Vec<&str> = spans
        .iter()
        .filter(|s| s.trace_id == submit.trace_id)
        .map(|s| s.name.as_str())
        .collect();
    for expected in [
        "pim.assignment.v1.AssignmentService/CheckEligibility",
        "pim.assignment.v1.AssignmentInternalService/ProvisionWindow",
        "assignment.window_provisioned process",
        "activation.request_granted process",
    ] {
        assert!(
            trace.contains(&expected),
            "{expected} is not in the activation's trace: {trace:?}"
        );
    }
    assert_eq!(
        provisioned.trace_id, submit.trace_id,
        "the audit record carries the same trace id"
    );
    let provision = spans
        .iter()
        .find(|s| {
            s.name == "pim.assignment.v1.AssignmentInternalService/ProvisionWindow"
                && s.trace_id == submit.trace_id
        })
        .unwrap();
    assert_eq!(
        provision.parent_span_id, submit.span_id,
        "assignment's span is a child of the activation RPC"
    );

    // With approval, the request's trace goes on through the approver's decision: the case's
    // events, the provisioning the decision causes and its audit record all carry it.
    approval_continues_the_trace(&h).await?;
    h.stop().await;
    telemetry.shutdown();
    Ok(())
}

async fn approval_continues_the_trace(h: &Harness) -> anyhow::Result<()> {
    use pim_proto::{
        activation::v1::SubmitRequest,
        approval::v1::{DecideRequest, Decision},
        assignment::v1::{
            ApprovalRule, ApprovalStage, Approver, CreateEligibilityScheduleRequest, PolicyRules,
            SetPolicyRequest, approver::Subject,
        },
    };
    let role = pim_client::roles::SECURITY_READER;
    let admin = h.client(ServiceName::Assignment, &h.mfa_token(ADMIN));
    admin
        .assignment()
        .set_policy(SetPolicyRequest {
            role_id: role.into(),
            scope: support::SCOPE.into(),
            rules: Some(PolicyRules {
                approval: Some(ApprovalRule {
                    required: true,
                    stages: vec![ApprovalStage {
                        approvers: vec![Approver {
                            subject: Some(Subject::UserId("bob".into())),
                        }],
                        quorum: 1,
                        timeout: Some(pim_proto::Duration {
                            seconds: 3600,
                            nanos: 0,
                        }),
                        ..Default::default()
                    }],
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await?;
    admin
        .assignment()
        .create_eligibility_schedule(CreateEligibilityScheduleRequest {
            request_id: "trace-carol".into(),
            principal_id: "carol".into(),
            role_id: role.into(),
            scope: support::SCOPE.into(),
            ..Default::default()
        })
        .await?;
    let pending = h
        .client(ServiceName::Activation, &h.mfa_token("carol"))
        .activation()
        .submit(SubmitRequest {
            role_id: role.into(),
            ..support::activation("trace-approved", 30)
        })
        .await?
        .into_inner()
        .request
        .unwrap_or_default();
    h.client(ServiceName::Approval, &h.token("bob"))
        .approval()
        .decide(DecideRequest {
            case_id: pending.case_id.clone(),
            decision: Decision::Approve.into(),
            justification: "incident confirmed".into(),
        })
        .await?;
    let expected = [
        (
            "activation.request_submitted",
            pending.correlation_id.as_str(),
        ),
        ("approval.case_opened", pending.id.as_str()),
        ("approval.case_decided", pending.id.as_str()),
        (
            "activation.request_granted",
            pending.correlation_id.as_str(),
        ),
        ("assignment.window_provisioned", pending.id.as_str()),
    ];
    let audit = h.client(ServiceName::Audit, &h.token(ADMIN));
    let records = h
        .eventually(Duration::from_secs(30), || async {
            let records = support::audit_records(&audit).await?;
            // Audit reads five streams independently, so the records of one
            // request arrive in no fixed order: wait for every one we check.
            let done = expected.iter().all(|(event_type, correlation)| {
                records
                    .iter()
                    .any(|r| r.event_type == *event_type && r.correlation_id == *correlation)
            });
            Ok(done.then_some(records))
        })
        .await?;
    let trace_of = |event_type: &str, correlation: &str| {
        records
            .iter()
            .find(|r| r.event_type == event_type && r.correlation_id == correlation)
            .map(|r| r.trace_id.clone())
            .unwrap_or_else(|| panic!("no {event_type} record for {correlation}"))
    };
    let submitted = trace_of("activation.request_submitted", &pending.correlation_id);
    assert!(!submitted.is_empty());
    for (event_type, correlation) in &expected[1..] {
        assert_eq!(
            trace_of(event_type, correlation),
            submitted,
            "{event_type} continues the submission's trace"
        );
    }
    Ok(())
}
