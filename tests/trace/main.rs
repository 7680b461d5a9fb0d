//! Telemetry as a collector receives it, over real OTLP/gRPC on loopback:
//! - one trace follows an activation with approval through activation, assignment, approval,
//!   notification (the approver's e-mail) and audit, with parent links across every gRPC call
//!   and stream hop, and each span under its own context's `service.name`;
//! - the metrics arrive: RPC duration by method and status, the relay's lag, the consumer
//!   groups' pending entries and lag, activations by status.
//!
//! The subscriber and the exporters are process-wide, so both tests share them (and one
//! receiver) through [`telemetry`].

#![allow(clippy::unwrap_used)]

// Shared with the `it` suite; this binary uses only part of it.
#[allow(dead_code)]
#[path = "../it/support.rs"]
mod support;

mod metrics;

use std::{
    collections::{HashMap, HashSet},
    sync::OnceLock,
    time::Duration,
};

use pim_config::ServiceName;
use pim_proto::{
    activation::v1::SubmitRequest,
    approval::v1::{DecideRequest, Decision},
    assignment::v1::{
        ApprovalRule, ApprovalStage, Approver, CreateEligibilityScheduleRequest, PolicyRules,
        Principal, PrincipalType, SetPolicyRequest, UpsertPrincipalsRequest, approver::Subject,
    },
};
use pim_telemetry::{TelemetryGuard, TelemetryOptions};
use pim_testkit::{ADMIN, Harness, HarnessOptions, OtlpReceiver, ReceivedSpan, SmtpServer};

/// What spans no context claims are exported as.
const PROCESS: &str = "pim-trace-test";

pub struct Telemetry {
    pub receiver: OtlpReceiver,
    pub guard: TelemetryGuard,
    _runtime: tokio::runtime::Runtime,
}

/// The process's telemetry, installed once, exporting to a receiver that lives as long as the
/// process: on a runtime of its own, since each test's runtime ends with the test.
pub fn telemetry() -> &'static Telemetry {
    static TELEMETRY: OnceLock<Telemetry> = OnceLock::new();
    TELEMETRY.get_or_init(|| {
        std::thread::spawn(|| {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .unwrap();
            let (receiver, guard) = runtime
                .block_on(async {
                    let receiver = OtlpReceiver::start().await?;
                    let mut options = TelemetryOptions::new(PROCESS);
                    options.log_filter = "warn".into();
                    options.log_json = false;
                    options.otlp_endpoint = Some(receiver.endpoint.clone());
                    options.metric_interval = Duration::from_millis(300);
                    options.resource_attributes =
                        vec![("deployment.environment".into(), "trace-test".into())];
                    options.contexts = ServiceName::ALL
                        .iter()
                        .map(|s| s.as_str().to_owned())
                        .collect();
                    let guard = pim_telemetry::init(&options)?;
                    anyhow::Ok((receiver, guard))
                })
                .unwrap();
            Telemetry {
                receiver,
                guard,
                _runtime: runtime,
            }
        })
        .join()
        .unwrap()
    })
}

fn service_of(name: &str) -> String {
    format!("pim-{name}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_trace_follows_an_activation_with_approval_through_all_five_services()
-> anyhow::Result<()> {
    let telemetry = telemetry();
    let smtp = SmtpServer::start().await?;
    let h = Harness::start_with(HarnessOptions {
        settings: [
            ("PIM_SMTP_HOST", smtp.host()),
            ("PIM_SMTP_PORT", smtp.port().to_string()),
            ("PIM_SMTP_TLS", "none".into()),
            ("PIM_SMTP_FROM", "PIM <pim@example.test>".into()),
            ("PIM_DELIVERY_POLL_MS", "25".into()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect(),
        ..Default::default()
    })
    .await?;
    let pending = submit_for_approval(&h).await?;
    h.client(ServiceName::Approval, &h.token("bob"))
        .approval()
        .decide(DecideRequest {
            case_id: pending.case_id.clone(),
            decision: Decision::Approve.into(),
            justification: "incident confirmed".into(),
        })
        .await?;

    // The audit record of the submission names the trace; wait until the whole of it is in.
    let audit = h.client(ServiceName::Audit, &h.token(ADMIN));
    let records = support::await_audited(
        &h,
        &audit,
        &["activation.request_submitted", "activation.request_granted"],
    )
    .await?;
    let trace_id = records
        .iter()
        .find(|r| {
            r.event_type == "activation.request_submitted"
                && r.correlation_id == pending.correlation_id
        })
        .map(|r| r.trace_id.clone())
        .unwrap();
    assert!(!trace_id.is_empty(), "the audit record names its trace");
    let expected = [
        ("pim.activation.v1.ActivationService/Submit", "activation"),
        (
            "pim.assignment.v1.AssignmentService/CheckEligibility",
            "assignment",
        ),
        (
            "pim.approval.v1.ApprovalInternalService/OpenCase",
            "approval",
        ),
        ("approval.case_opened process", "notification"),
        ("deliver email", "notification"),
        ("approval.case_decided process", "activation"),
        ("activation.advance", "activation"),
        (
            "pim.assignment.v1.AssignmentInternalService/ProvisionWindow",
            "assignment",
        ),
        ("assignment.window_provisioned process", "audit"),
        ("activation.request_granted process", "audit"),
        ("activation.request_submitted publish", "activation"),
    ];
    let trace = h
        .eventually(Duration::from_secs(30), || {
            telemetry.guard.flush();
            let trace: Vec<ReceivedSpan> = telemetry
                .receiver
                .spans()
                .into_iter()
                .filter(|s| s.trace_id == trace_id)
                .collect();
            let complete = expected.iter().all(|(name, service)| {
                trace
                    .iter()
                    .any(|s| s.name == *name && s.service_name == service_of(service))
            }) && parents_arrived(&trace);
            async move { Ok(complete.then_some(trace)) }
        })
        .await
        .map_err(|e| {
            let names: Vec<String> = telemetry
                .receiver
                .spans()
                .into_iter()
                .filter(|s| s.trace_id == trace_id)
                .map(|s| format!("{} [{}]", s.name, s.service_name))
                .collect();
            anyhow::anyhow!("{e}: the trace has {names:#?}")
        })?;

    let services: HashSet<&str> = trace.iter().map(|s| s.service_name.as_str()).collect();
    for service in ServiceName::ALL {
        assert!(
            services.contains(service_of(service.as_str()).as_str()),
            "no span of {service} in the activation's trace: {services:?}"
        );
    }
    assert_every_span_is_its_services(&trace);
    assert_parent_links(&trace);
    assert_semantic_conventions(&trace);
    h.stop().await;
    Ok(())
}

/// Every span's parent (but the root's) has arrived too.
fn parents_arrived(trace: &[ReceivedSpan]) -> bool {
    let ids: HashSet<&str> = trace.iter().map(|s| s.span_id.as_str()).collect();
    trace
        .iter()
        .all(|s| s.parent_span_id.is_empty() || ids.contains(s.parent_span_id.as_str()))
}

fn by_id(trace: &[ReceivedSpan]) -> HashMap<&str, &ReceivedSpan> {
    trace.iter().map(|s| (s.span_id.as_str(), s)).collect()
}

fn one<'a>(trace: &'a [ReceivedSpan], name: &str, service: &str) -> &'a ReceivedSpan {
    trace
        .iter()
        .find(|s| s.name == name && s.service_name == service_of(service))
        .unwrap_or_else(|| panic!("no {name} span of {service}"))
}

/// The test's own client span, as a caller outside the system makes one: the trace's root.
fn is_callers_own(span: &ReceivedSpan) -> bool {
    span.parent_span_id.is_empty()
        && span.kind == "SPAN_KIND_CLIENT"
        && span.service_name == PROCESS
}

/// Server spans are the serving context's, consumer spans the consuming context's, steps
/// and deliveries the context doing them: none is left to the process's name.
fn assert_every_span_is_its_services(trace: &[ReceivedSpan]) {
    for span in trace {
        if is_callers_own(span) {
            continue;
        }
        assert_ne!(span.service_name, PROCESS, "{} has no context", span.name);
        let claimed = match span.kind.as_str() {
            "SPAN_KIND_SERVER" => span.attributes.get("pim.service"),
            "SPAN_KIND_CONSUMER" => span.attributes.get("messaging.consumer.group.name"),
            _ => None,
        };
        if let Some(context) = claimed {
            assert_eq!(span.service_name, service_of(context), "{}", span.name);
        }
    }
    assert_eq!(
        one(trace, "deliver email", "notification").kind,
        "SPAN_KIND_CLIENT"
    );
}

/// gRPC hops: a server span's parent is the caller's span, in the caller's service. Stream
/// hops: a consumer span's parent is the span that wrote the event, in the producer's.
fn assert_parent_links(trace: &[ReceivedSpan]) {
    let spans = by_id(trace);
    let submit = one(
        trace,
        "pim.activation.v1.ActivationService/Submit",
        "activation",
    );
    let root = spans[submit.parent_span_id.as_str()];
    assert!(
        is_callers_own(root) && root.name == submit.name,
        "Submit is served under the test's own client span, which starts the trace"
    );
    for name in [
        "pim.assignment.v1.AssignmentService/CheckEligibility",
        "pim.approval.v1.ApprovalInternalService/OpenCase",
    ] {
        let service = if name.contains("approval") {
            "approval"
        } else {
            "assignment"
        };
        assert_eq!(
            called_from(&spans, one(trace, name, service), "activation").span_id,
            submit.span_id,
            "{name} is called from the activation RPC"
        );
    }
    let provision = one(
        trace,
        "pim.assignment.v1.AssignmentInternalService/ProvisionWindow",
        "assignment",
    );
    let step = called_from(&spans, provision, "activation");
    assert_eq!(
        (step.name.as_str(), step.service_name.as_str()),
        ("activation.advance", "pim-activation"),
        "provisioning is a child of activation's step after the decision"
    );
    for consumer in trace.iter().filter(|s| s.kind == "SPAN_KIND_CONSUMER") {
        let producer = &consumer.attributes["event.producer"];
        let parent = spans[consumer.parent_span_id.as_str()];
        assert_eq!(
            parent.service_name,
            service_of(producer),
            "{} [{}] continues the producer's span, not {} [{}]",
            consumer.name,
            consumer.service_name,
            parent.name,
            parent.service_name
        );
    }
    let delivery = one(trace, "deliver email", "notification");
    let cause = spans[delivery.parent_span_id.as_str()];
    assert_eq!(
        (cause.name.as_str(), cause.service_name.as_str()),
        ("approval.case_opened process", "pim-notification"),
        "the approver's e-mail continues the event that asked for it"
    );
    // The decision is bob's own call: the step it causes links to it.
    let decided = one(trace, "approval.case_decided", "approval");
    assert_eq!(decided.links.len(), 1, "the decision step links to Decide");
}

/// The span that made the call `server` serves: the server span's parent is the caller's client
/// span of the same method, in `caller`'s service, and that span's parent is returned.
fn called_from<'a>(
    spans: &HashMap<&str, &'a ReceivedSpan>,
    server: &ReceivedSpan,
    caller: &str,
) -> &'a ReceivedSpan {
    let client = spans[server.parent_span_id.as_str()];
    assert_eq!(
        (
            client.kind.as_str(),
            client.name.as_str(),
            client.service_name.as_str()
        ),
        (
            "SPAN_KIND_CLIENT",
            server.name.as_str(),
            service_of(caller).as_str()
        ),
        "{} is served under the caller's client span",
        server.name
    );
    assert_eq!(
        client
            .attributes
            .get("rpc.response.status_code")
            .map(String::as_str),
        Some("OK")
    );
    spans[client.parent_span_id.as_str()]
}

fn assert_semantic_conventions(trace: &[ReceivedSpan]) {
    let submit = one(
        trace,
        "pim.activation.v1.ActivationService/Submit",
        "activation",
    );
    for (key, value) in [
        ("rpc.system.name", "grpc"),
        ("rpc.method", "pim.activation.v1.ActivationService/Submit"),
        ("rpc.response.status_code", "OK"),
    ] {
        assert_eq!(
            submit.attributes.get(key).map(String::as_str),
            Some(value),
            "{key}"
        );
    }
    let consumed = one(trace, "activation.request_granted process", "audit");
    for (key, value) in [
        ("messaging.system", "redis"),
        ("messaging.operation.type", "process"),
        ("messaging.destination.name", "events:activation"),
        ("messaging.consumer.group.name", "audit"),
    ] {
        assert_eq!(
            consumed.attributes.get(key).map(String::as_str),
            Some(value),
            "{key}"
        );
    }
    let delivery = one(trace, "deliver email", "notification");
    assert_eq!(
        delivery
            .attributes
            .get("pim.notification.outcome")
            .map(String::as_str),
        Some("delivered")
    );
    // The database work of the provisioning call is in the trace, statement by statement,
    // with the statement's text and never its values.
    let provision = one(
        trace,
        "pim.assignment.v1.AssignmentInternalService/ProvisionWindow",
        "assignment",
    );
    let statements: Vec<&ReceivedSpan> = trace
        .iter()
        .filter(|s| s.attributes.contains_key("db.system.name"))
        .filter(|s| s.parent_span_id == provision.span_id)
        .collect();
    assert!(
        statements.iter().any(|s| s.name == "INSERT"),
        "no INSERT span under ProvisionWindow"
    );
    for statement in &statements {
        assert_eq!(statement.kind, "SPAN_KIND_CLIENT");
        assert_eq!(statement.service_name, service_of("assignment"));
        assert_eq!(statement.attributes["db.system.name"], "postgresql");
        assert!(!statement.attributes["db.query.text"].contains("carol@example.test"));
    }
    // The relay's publish of the submission, a child of the span that wrote it.
    let published = one(trace, "activation.request_submitted publish", "activation");
    assert_eq!(published.kind, "SPAN_KIND_PRODUCER");
    assert_eq!(
        published
            .attributes
            .get("messaging.operation.type")
            .map(String::as_str),
        Some("send")
    );
}

/// Bob approves Security Reader for carol; both have mail addresses, so bob is mailed.
async fn submit_for_approval(
    h: &Harness,
) -> anyhow::Result<pim_proto::activation::v1::ActivationRequest> {
    let role = pim_client::roles::SECURITY_READER;
    let admin = h.client(ServiceName::Assignment, &h.mfa_token(ADMIN));
    admin
        .assignment()
        .upsert_principals(UpsertPrincipalsRequest {
            principals: ["bob", "carol"]
                .iter()
                .map(|id| Principal {
                    id: (*id).into(),
                    r#type: PrincipalType::User.into(),
                    display_name: (*id).into(),
                    email: format!("{id}@example.test"),
                    enabled: true,
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        })
        .await?;
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
    Ok(h.client(ServiceName::Activation, &h.mfa_token("carol"))
        .activation()
        .submit(SubmitRequest {
            role_id: role.into(),
            ..support::activation("trace-approved", 30)
        })
        .await?
        .into_inner()
        .request
        .unwrap_or_default())
}
