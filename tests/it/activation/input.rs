//! Bad input on every field gets INVALID_ARGUMENT naming the field, and writes nothing.

use pim_config::ServiceName;
use pim_proto::activation::v1::{SubmitRequest, Ticket};
use tonic::Code;
use tonic_types::StatusExt as _;

use super::{alice_under, guide_policy, harness_with, submit, ticketed};
use crate::bad_input::count;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_bad_field_is_named_and_nothing_is_written() -> anyhow::Result<()> {
    let h = harness_with(&[]).await?;
    alice_under(&h, guide_policy(None)).await?;
    let duration = |seconds: i64| Some(pim_proto::Duration { seconds, nanos: 0 });
    let cases: Vec<(&str, SubmitRequest)> = vec![
        (
            "duration",
            SubmitRequest {
                duration: duration(-600),
                ..ticketed("bad-1", 30)
            },
        ),
        (
            "duration",
            SubmitRequest {
                duration: duration(i64::MAX),
                ..ticketed("bad-2", 30)
            },
        ),
        (
            "role_id",
            SubmitRequest {
                role_id: "no-such-role".into(),
                ..ticketed("bad-3", 30)
            },
        ),
        (
            "scope",
            SubmitRequest {
                scope: "/administrativeUnits//x".into(),
                ..ticketed("bad-4", 30)
            },
        ),
        (
            "justification",
            SubmitRequest {
                justification: "x".repeat(501),
                ..ticketed("bad-5", 30)
            },
        ),
        (
            "ticket.system",
            SubmitRequest {
                ticket: Some(Ticket {
                    system: String::new(),
                    number: "OPS-1".into(),
                }),
                ..ticketed("bad-6", 30)
            },
        ),
        (
            "request_id",
            SubmitRequest {
                request_id: String::new(),
                ..ticketed("", 30)
            },
        ),
    ];
    for (field, request) in cases {
        let refused = submit(&h, request).await.unwrap_err();
        assert_eq!(
            refused.code(),
            Code::InvalidArgument,
            "{field}: {refused:?}"
        );
        let fields: Vec<String> = refused
            .get_error_details()
            .bad_request()
            .map(|b| b.field_violations.iter().map(|v| v.field.clone()).collect())
            .unwrap_or_default();
        assert_eq!(fields, [field], "{refused:?}");
    }
    let db = h.service(ServiceName::Activation).db();
    assert_eq!(count(db, "SELECT COUNT(*) AS n FROM requests").await?, 0);
    assert_eq!(count(db, "SELECT COUNT(*) AS n FROM outbox").await?, 0);
    h.stop().await;
    Ok(())
}
