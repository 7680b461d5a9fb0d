//! The metrics a collector receives while one activation goes through.

use std::time::Duration;

use pim_config::ServiceName;
use pim_testkit::{ADMIN, Harness, ReceivedMetric};

use crate::{support, telemetry};

/// Whether some received point of `name` has every one of `attributes`.
fn point<'a>(
    metrics: &'a [ReceivedMetric],
    name: &str,
    attributes: &[(&str, &str)],
) -> Option<&'a ReceivedMetric> {
    metrics.iter().rev().find(|m| {
        m.name == name
            && attributes
                .iter()
                .all(|(k, v)| m.attributes.get(*k).map(String::as_str) == Some(*v))
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rpc_stream_outbox_and_activation_metrics_arrive_over_otlp() -> anyhow::Result<()> {
    let telemetry = telemetry();
    let h = Harness::start().await?;
    support::make_eligible(&h, "alice", "metrics-eligible").await?;
    support::activate(
        &h.client(ServiceName::Activation, &h.mfa_token("alice")),
        "metrics-activate",
        30,
    )
    .await?;
    // A refused call counts too, under its status.
    let refused = h
        .client(ServiceName::Activation, "not-a-token")
        .activation()
        .submit(support::activation("metrics-refused", 30))
        .await;
    assert_eq!(
        refused.err().map(|s| s.code()),
        Some(tonic::Code::Unauthenticated)
    );
    let audit = h.client(ServiceName::Audit, &h.token(ADMIN));
    support::await_audited(&h, &audit, &["activation.request_granted"]).await?;

    let stream = format!("{}events:activation", h.prefix);
    let submit = "pim.activation.v1.ActivationService/Submit";
    let expected: Vec<(&str, Vec<(&str, &str)>)> = vec![
        (
            "rpc.server.call.duration",
            vec![
                ("rpc.system.name", "grpc"),
                ("rpc.method", submit),
                ("rpc.response.status_code", "OK"),
            ],
        ),
        (
            "rpc.server.call.duration",
            vec![
                ("rpc.method", submit),
                ("rpc.response.status_code", "UNAUTHENTICATED"),
            ],
        ),
        (
            "pim.stream.consumer.pending",
            vec![
                ("messaging.destination.name", stream.as_str()),
                ("messaging.consumer.group.name", "audit"),
            ],
        ),
        (
            "pim.stream.consumer.lag",
            vec![
                ("messaging.destination.name", stream.as_str()),
                ("messaging.consumer.group.name", "notification"),
            ],
        ),
        ("pim.outbox.relay.lag", vec![("pim.producer", "activation")]),
        ("pim.outbox.backlog", vec![("pim.producer", "assignment")]),
        (
            "pim.activation.requests",
            vec![("pim.activation.status", "provisioned")],
        ),
    ];
    let metrics = h
        .eventually(Duration::from_secs(30), || {
            telemetry.guard.flush();
            let metrics = telemetry.receiver.metrics();
            let all = expected
                .iter()
                .all(|(name, attributes)| point(&metrics, name, attributes).is_some());
            async move { Ok(all.then_some(metrics)) }
        })
        .await
        .map_err(|e| {
            let mut names: Vec<String> = telemetry
                .receiver
                .metrics()
                .into_iter()
                .map(|m| format!("{} {:?}", m.name, m.attributes))
                .collect();
            names.sort();
            names.dedup();
            anyhow::anyhow!("{e}: received {names:#?}")
        })?;

    let ok = point(&metrics, expected[0].0, &expected[0].1).unwrap();
    assert_eq!(ok.unit, "s");
    assert!(ok.value >= 1.0, "one Submit at least: {ok:?}");
    assert_eq!(ok.service_name, "pim-trace-test");
    let pending = point(&metrics, expected[2].0, &expected[2].1).unwrap();
    assert_eq!(pending.unit, "{entry}");
    let granted = point(&metrics, expected[6].0, &expected[6].1).unwrap();
    assert!(granted.value >= 1.0, "{granted:?}");
    h.stop().await;
    Ok(())
}
