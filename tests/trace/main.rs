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
        .eventually(Duration::from_secs(15), || {
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
    h.stop().await;
    telemetry.shutdown();
    Ok(())
}
