//! `pim bench --suite notification`: the notification service and the assignment service (its
//! directory: names, addresses, admins, policies) started in-process, as [`Pim`] starts them,
//! with an SMTP server and an HTTP receiver of the bench's on loopback ([`receivers`]). The
//! events come from the bench's own producer ([`BenchProducer`], as `activation`), committed
//! as a producer commits them:
//!
//! 1. `activation.request_granted` at a fixed offered rate, each by a distinct requestor: from
//!    the commit to the SMTP server's `250` for the requestor's and the admin's e-mails, and to
//!    the receiver's `200` for one webhook subscription;
//! 2. fan-out: many subscriptions to `activation.request_submitted` on the one receiver, a burst
//!    of events, and the rate of deliveries from the first commit to the last one accepted.
//!
//! Everything it creates (databases, Redis keys) is removed at the end, also after a failure.

mod receivers;

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use pim_config::ServiceName;
use pim_events::NewEvent;
use pim_proto::{
    activation::v1::{ActivationRequest, RequestChanged, RequestStatus},
    assignment::v1::{Principal, PrincipalType, UpsertPrincipalsRequest},
    notification::v1::CreateSubscriptionRequest,
    timestamp_from_millis,
};

use self::receivers::{Accepted, Receiver};
use super::{
    BenchOptions, Sample,
    activation::{ADMIN, Pim},
    audit::await_consumed,
    producer::BenchProducer,
};

/// Events before the measured ones, so pools and connections are warm.
const WARM_UP: usize = 10;
/// How long the receivers may take to see everything after the last commit.
const SETTLE: Duration = Duration::from_secs(120);

pub(super) async fn run(options: &BenchOptions) -> anyhow::Result<()> {
    let smtp = Receiver::smtp().await?;
    let http = Receiver::http().await?;
    let mut pim = Pim::new(options);
    let result = async {
        let settings = [
            ("PIM_SMTP_HOST", "127.0.0.1".to_owned()),
            ("PIM_SMTP_PORT", smtp.addr.port().to_string()),
            ("PIM_SMTP_TLS", "none".to_owned()),
            ("PIM_SMTP_FROM", "PIM <pim@bench.example>".to_owned()),
            ("PIM_WEBHOOK_ALLOW_LOOPBACK", "true".to_owned()),
        ];
        let settings: Vec<(&str, &str)> = settings.iter().map(|(k, v)| (*k, v.as_str())).collect();
        pim.start_only(
            &[ServiceName::Assignment, ServiceName::Notification],
            &settings,
        )
        .await?;
        let requestors = WARM_UP + (options.notification_rate * options.seconds) as usize;
        people(&pim, requestors).await?;
        await_consumed(
            &pim,
            ServiceName::Notification,
            ServiceName::Assignment,
            Duration::from_secs(60),
        )
        .await?;
        let producer = BenchProducer::start(
            &options.database_url,
            pim.redis_url(),
            ServiceName::Activation,
            pim.stream(ServiceName::Activation),
        )
        .await?;
        let measured = async {
            let (email, webhook) = latency(&pim, &producer, &smtp, &http, options).await?;
            let rate = options.notification_rate;
            email.report(&format!("notification: committed to SMTP 250 at {rate}/s"));
            webhook.report(&format!(
                "notification: committed to webhook 200 at {rate}/s"
            ));
            fan_out(&pim, &producer, &http, options).await
        }
        .await;
        producer.remove().await?;
        measured
    }
    .await;
    pim.remove().await?;
    result
}

fn email_of(principal: &str) -> String {
    format!("{principal}@bench.example")
}

fn requestor(i: usize) -> String {
    format!("bench-user-{i}")
}

/// Syncs the admin and `n` requestors, enabled and with addresses, into the directory.
async fn people(pim: &Pim, n: usize) -> anyhow::Result<()> {
    let principals = std::iter::once(ADMIN.to_owned())
        .chain((0..n).map(requestor))
        .map(|id| Principal {
            display_name: id.clone(),
            email: email_of(&id),
            r#type: PrincipalType::User.into(),
            enabled: true,
            id,
            ..Default::default()
        })
        .collect::<Vec<_>>();
    let admin = pim.client(ServiceName::Assignment, ADMIN)?;
    for chunk in principals.chunks(500) {
        admin
            .assignment()
            .upsert_principals(UpsertPrincipalsRequest {
                principals: chunk.to_vec(),
                ..Default::default()
            })
            .await?;
    }
    Ok(())
}

async fn subscribe(pim: &Pim, url: String, event_type: &str) -> anyhow::Result<()> {
    pim.client(ServiceName::Notification, ADMIN)?
        .notification()
        .create_subscription(CreateSubscriptionRequest {
            request_id: uuid::Uuid::new_v4().to_string(),
            url,
            event_types: vec![event_type.to_owned()],
            description: "bench receiver".into(),
            ..Default::default()
        })
        .await?;
    Ok(())
}

/// What requestor `i`'s activation looks like when it is granted or submitted.
fn activation_event(event_type: &str, i: usize) -> NewEvent {
    let now = pim_clock::Clock::now_millis(&pim_clock::SystemClock);
    let id = uuid::Uuid::now_v7().to_string();
    let principal = requestor(i);
    let request = ActivationRequest {
        id: id.clone(),
        request_id: format!("bench-{i}"),
        principal_id: principal.clone(),
        role_id: pim_client::roles::SECURITY_ADMINISTRATOR.to_owned(),
        scope: "/".to_owned(),
        status: RequestStatus::Provisioned.into(),
        justification: format!("Incident INC{i:07}: on-call change"),
        start_time: Some(timestamp_from_millis(now)),
        end_time: Some(timestamp_from_millis(now + 3_600_000)),
        ..Default::default()
    };
    NewEvent::new(
        event_type,
        id,
        pim_proto::pack(&RequestChanged {
            request: Some(request),
        }),
    )
    .by(&principal)
}

/// Latencies of e-mails (to the requestor and the admins) and of webhooks, from the commit of
/// their event to their acceptance; warm-up events not counted.
async fn latency(
    pim: &Pim,
    producer: &BenchProducer,
    smtp: &Receiver,
    http: &Receiver,
    options: &BenchOptions,
) -> anyhow::Result<(Sample, Sample)> {
    subscribe(
        pim,
        http_url(http, "/latency"),
        "activation.request_granted",
    )
    .await?;
    let total = WARM_UP + (options.notification_rate * options.seconds) as usize;
    let mut ticker = tokio::time::interval(Duration::from_micros(
        1_000_000 / options.notification_rate.max(1),
    ));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let started = Instant::now();
    let mut commits = Vec::with_capacity(total);
    for i in 0..total {
        ticker.tick().await;
        let producer = producer.clone();
        commits.push(tokio::spawn(async move {
            producer
                .commit(activation_event("activation.request_granted", i))
                .await
        }));
    }
    let mut committed_us = Vec::with_capacity(total);
    for commit in commits {
        committed_us.push(commit.await??);
    }
    // Every event is one webhook; e-mails (requestor and admins) follow until none has come
    // for a second after the webhooks are in.
    await_count(http, total, SETTLE).await?;
    let mut quiet_since = (Instant::now(), smtp.count());
    while quiet_since.0.elapsed() < Duration::from_secs(1) {
        tokio::time::sleep(Duration::from_millis(50)).await;
        if smtp.count() != quiet_since.1 {
            quiet_since = (Instant::now(), smtp.count());
        }
    }
    let elapsed = started.elapsed();
    let mails = smtp.take();
    anyhow::ensure!(
        mails.len() >= total,
        "{} e-mails for {total} activations",
        mails.len()
    );
    let email = mails
        .iter()
        .filter_map(|mail| {
            let i = requestor_in(&mail.data).filter(|i| *i >= WARM_UP)?;
            Some((mail.at_us - committed_us.get(i)?).max(0) as u64)
        })
        .collect();
    let webhook = webhook_latencies(&http.take(), WARM_UP);
    Ok((
        Sample {
            latencies: email,
            elapsed,
        },
        Sample {
            latencies: webhook,
            elapsed,
        },
    ))
}

fn http_url(http: &Receiver, path: &str) -> String {
    format!("http://{}{path}", http.addr)
}

/// The index of the first `bench-user-<n>` a message names (its subject names the requestor).
fn requestor_in(raw: &[u8]) -> Option<usize> {
    let text = String::from_utf8_lossy(raw);
    let at = text.find("bench-user-")? + "bench-user-".len();
    let digits: String = text[at..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

/// From each webhook's correlation id (its commit time) to its acceptance, skipping the first
/// `skip` commits.
fn webhook_latencies(requests: &[Accepted], skip: usize) -> Vec<u64> {
    let mut committed: Vec<(i64, i64)> = requests
        .iter()
        .filter_map(|request| {
            let body = request.data.splitn(2, |b| *b == b' ').nth(1)?;
            let json: serde_json::Value = serde_json::from_slice(body).ok()?;
            let at: i64 = json["data"]["correlation_id"].as_str()?.parse().ok()?;
            Some((at, request.at_us))
        })
        .collect();
    committed.sort_unstable();
    committed
        .into_iter()
        .skip(skip)
        .map(|(at, accepted)| (accepted - at).max(0) as u64)
        .collect()
}

async fn await_count(receiver: &Receiver, n: usize, within: Duration) -> anyhow::Result<()> {
    let started = Instant::now();
    while receiver.count() < n {
        anyhow::ensure!(
            started.elapsed() < within,
            "{} of {n} messages accepted within {within:?}",
            receiver.count()
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    Ok(())
}

/// `fanout_subscriptions` subscriptions on the one receiver, `fanout_events` events committed
/// back to back; deliveries per second from the first commit to the last acceptance.
async fn fan_out(
    pim: &Pim,
    producer: &BenchProducer,
    http: &Receiver,
    options: &BenchOptions,
) -> anyhow::Result<()> {
    let subscriptions = options.fanout_subscriptions.max(1);
    for k in 0..subscriptions {
        subscribe(
            pim,
            http_url(http, &format!("/fanout/{k}")),
            "activation.request_submitted",
        )
        .await?;
    }
    http.take();
    let deliveries = subscriptions * options.fanout_events;
    let started = Instant::now();
    for i in 0..options.fanout_events {
        producer
            .commit(activation_event("activation.request_submitted", i))
            .await?;
    }
    let committed = started.elapsed();
    await_count(http, deliveries, SETTLE).await?;
    let elapsed = started.elapsed();
    let accepted = http.take();
    let per_subscription = accepted.iter().fold(HashMap::new(), |mut seen, request| {
        let path = request
            .data
            .split(|b| *b == b' ')
            .next()
            .unwrap_or_default();
        *seen.entry(path.to_vec()).or_insert(0usize) += 1;
        seen
    });
    anyhow::ensure!(
        accepted.len() == deliveries && per_subscription.len() == subscriptions,
        "{} deliveries to {} subscriptions, expected {deliveries} to {subscriptions}",
        accepted.len(),
        per_subscription.len()
    );
    println!(
        "{:<44} {:>8} dlvs {:>9.0} dlvs/s  (events committed in {:.2} s, all accepted in {:.2} s)",
        format!(
            "notification: fan-out, {} events x {subscriptions}",
            options.fanout_events
        ),
        deliveries,
        deliveries as f64 / elapsed.as_secs_f64(),
        committed.as_secs_f64(),
        elapsed.as_secs_f64()
    );
    Sample {
        latencies: webhook_latencies(&accepted, 0),
        elapsed,
    }
    .report("notification: fan-out, commit to accepted");
    Ok(())
}
