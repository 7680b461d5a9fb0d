//! Bad input, bad tokens and callers off the allow-list: each gets a clear refusal, and nothing
//! is written apart from the rate-limited security event.

use pim_auth::TokenSigner;
use pim_client::{Credentials, PimClient};
use pim_config::ServiceName;
use pim_db::stmt;
use pim_proto::assignment::v1::{CreateEligibilityScheduleRequest, ProvisionWindowRequest};
use pim_testkit::{ADMIN, Harness, OTHER_PRIVATE_KEY};
use sea_orm::{ConnectionTrait, DatabaseConnection};
use tonic::Code;
use tonic_types::StatusExt as _;

pub async fn count(db: &DatabaseConnection, sql: &str) -> anyhow::Result<i64> {
    let row = db.query_one_raw(stmt(db, sql, [])).await?;
    Ok(row
        .map(|r| r.try_get::<i64>("", "n"))
        .transpose()?
        .unwrap_or(0))
}

/// Outbox rows other than the security events and the one break-glass seed.
async fn business_events(h: &Harness, service: ServiceName) -> anyhow::Result<i64> {
    let all = count(
        h.service(service).db(),
        "SELECT COUNT(*) AS n FROM outbox WHERE event_type NOT LIKE '%.access_denied'",
    )
    .await?;
    Ok(all - 1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_get_field_violations_and_write_nothing() -> anyhow::Result<()> {
    let h = Harness::start().await?;
    let admin = h.client(ServiceName::Assignment, &h.mfa_token(ADMIN));
    let status = admin
        .assignment()
        .create_eligibility_schedule(CreateEligibilityScheduleRequest {
            principal_id: "alice".into(),
            role_id: String::new(),
            scope: "administrativeUnits/no-leading-slash".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    let details = status.get_error_details();
    let mut fields: Vec<String> = details
        .bad_request()
        .map(|b| b.field_violations.iter().map(|v| v.field.clone()).collect())
        .unwrap_or_default();
    fields.sort();
    assert_eq!(fields, ["role_id", "scope"]);
    assert_eq!(business_events(&h, ServiceName::Assignment).await?, 0);
    assert_eq!(
        count(
            h.service(ServiceName::Assignment).db(),
            "SELECT COUNT(*) AS n FROM schedules"
        )
        .await?,
        1
    );
    h.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_forged_expired_and_misdirected_tokens_are_unauthenticated() -> anyhow::Result<()> {
    let h = Harness::start().await?;
    let url = h.url(ServiceName::Assignment).to_owned();
    let good = h.signer().claims(ADMIN, 60);

    let other_key = TokenSigner::from_pem(
        &std::fs::read(OTHER_PRIVATE_KEY)?,
        "pim",
        "pim",
        h.clock.clone(),
    )?;
    let hs256 = TokenSigner::hs256(b"a-shared-secret", "pim", "pim", h.clock.clone());
    let mut wrong_audience = good.clone();
    wrong_audience.aud = "someone-else".into();
    // {"alg":"none"} with the admin's claims and no signature.
    let alg_none = {
        let header = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0";
        let body = h
            .signer()
            .sign(&good)?
            .split('.')
            .nth(1)
            .unwrap_or_default()
            .to_owned();
        format!("{header}.{body}.")
    };
    let expired = h.signer().sign(&good)?;

    let cases: Vec<(&str, Option<String>)> = vec![
        ("missing", None),
        ("alg none", Some(alg_none)),
        ("wrong key", Some(other_key.sign(&good)?)),
        ("wrong audience", Some(h.signer().sign(&wrong_audience)?)),
        ("HS256 where RS256 is configured", Some(hs256.sign(&good)?)),
        ("garbage", Some("not-a-jwt".into())),
    ];
    for (case, token) in cases {
        let request = CreateEligibilityScheduleRequest {
            principal_id: "mallory".into(),
            role_id: pim_client::roles::GLOBAL_ADMINISTRATOR.into(),
            scope: "/".into(),
            ..Default::default()
        };
        let status = match token {
            Some(token) => {
                PimClient::connect(&url, Credentials::Token(token))?
                    .assignment()
                    .create_eligibility_schedule(request)
                    .await
            }
            None => {
                let channel = pim_client::channel(&url, std::time::Duration::from_secs(5), None)?;
                pim_proto::assignment::v1::assignment_service_client::AssignmentServiceClient::new(
                    channel,
                )
                .create_eligibility_schedule(request)
                .await
            }
        }
        .unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated, "{case}: {status:?}");
    }

    h.clock.advance(chrono::Duration::seconds(120));
    let status = PimClient::connect(&url, Credentials::Token(expired))?
        .assignment()
        .check_access(pim_proto::assignment::v1::CheckAccessRequest {
            principal_id: ADMIN.into(),
            role_id: pim_client::roles::GLOBAL_ADMINISTRATOR.into(),
            scope: "/".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated, "expired");

    // Unauthenticated calls are counted, never stored.
    assert_eq!(business_events(&h, ServiceName::Assignment).await?, 0);
    assert_eq!(
        count(
            h.service(ServiceName::Assignment).db(),
            "SELECT COUNT(*) AS n FROM outbox WHERE event_type LIKE '%.access_denied'"
        )
        .await?,
        0
    );
    h.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn internal_rpcs_refuse_people_and_unlisted_services_with_a_security_event_only()
-> anyhow::Result<()> {
    let h = Harness::start().await?;
    let provision = ProvisionWindowRequest {
        request_id: "forged".into(),
        principal_id: "mallory".into(),
        role_id: pim_client::roles::GLOBAL_ADMINISTRATOR.into(),
        scope: "/".into(),
        start_time: Some(pim_proto::timestamp_from_millis(
            pim_clock::Clock::now_millis(h.clock.as_ref()),
        )),
        end_time: Some(pim_proto::timestamp_from_millis(
            pim_clock::Clock::now_millis(h.clock.as_ref()) + 3_600_000,
        )),
    };
    for token in [
        h.mfa_token(ADMIN),
        h.token("mallory"),
        h.service_token(ServiceName::Audit),
    ] {
        let status = h
            .client(ServiceName::Assignment, &token)
            .assignment_internal()
            .provision_window(provision.clone())
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::PermissionDenied);
    }
    // A person who is not an administrator may not make anyone eligible either.
    let status = h
        .client(ServiceName::Assignment, &h.token("mallory"))
        .assignment()
        .create_eligibility_schedule(CreateEligibilityScheduleRequest {
            principal_id: "mallory".into(),
            role_id: pim_client::roles::GLOBAL_ADMINISTRATOR.into(),
            scope: "/".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);

    let db = h.service(ServiceName::Assignment).db().clone();
    assert_eq!(count(&db, "SELECT COUNT(*) AS n FROM windows").await?, 0);
    assert_eq!(business_events(&h, ServiceName::Assignment).await?, 0);
    let denials = h
        .eventually(std::time::Duration::from_secs(10), || {
            let db = db.clone();
            async move {
                let n = count(&db, "SELECT COUNT(*) AS n FROM outbox WHERE event_type = 'assignment.access_denied'").await?;
                Ok((n == 4).then_some(n))
            }
        })
        .await?;
    assert_eq!(denials, 4);
    h.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_denials_is_stored_up_to_the_limit_and_then_summarised() -> anyhow::Result<()> {
    let h = Harness::start_with(pim_testkit::HarnessOptions {
        settings: vec![("PIM_SECURITY_EVENTS_PER_MINUTE".into(), "3".into())],
        ..Default::default()
    })
    .await?;
    let db = h.service(ServiceName::Assignment).db().clone();
    let stored = |expected: i64| {
        let db = db.clone();
        move || {
            let db = db.clone();
            async move {
                let n = count(&db, "SELECT COUNT(*) AS n FROM outbox WHERE event_type = 'assignment.access_denied'").await?;
                Ok((n == expected).then_some(()))
            }
        }
    };
    let mallory = h.client(ServiceName::Assignment, &h.token("mallory"));
    let forged = ProvisionWindowRequest {
        request_id: "flood".into(),
        ..Default::default()
    };
    for _ in 0..10 {
        let status = mallory
            .assignment_internal()
            .provision_window(forged.clone())
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::PermissionDenied);
    }
    h.eventually(std::time::Duration::from_secs(10), stored(3))
        .await?;

    // The next minute's first denial carries the count of those that were not stored.
    h.clock.advance(chrono::Duration::minutes(1));
    let mallory = h.client(ServiceName::Assignment, &h.token("mallory"));
    let _ = mallory
        .assignment_internal()
        .provision_window(forged)
        .await
        .unwrap_err();
    h.eventually(std::time::Duration::from_secs(10), stored(4))
        .await?;
    let row = db
        .query_one_raw(stmt(
            &db,
            "SELECT envelope FROM outbox WHERE event_type = 'assignment.access_denied' ORDER BY id DESC LIMIT 1",
            [],
        ))
        .await?
        .unwrap();
    let envelope: Vec<u8> = row.try_get("", "envelope")?;
    let event = <pim_proto::events::v1::Event as prost::Message>::decode(envelope.as_slice())?;
    let denial = <pim_proto::events::v1::AccessDenied as prost::Message>::decode(
        event.payload.unwrap_or_default().value.as_slice(),
    )?;
    assert_eq!(denial.suppressed_count, 7);
    assert_eq!(denial.caller_id, "mallory");
    h.stop().await;
    Ok(())
}
