//! Timers only announce: a schedule's expiry is announced 14 days and 1 day ahead and when it
//! passes, each once, judged by the clock the test moves.

use std::time::Duration;

use pim_config::ServiceName;
use pim_proto::assignment::v1::CreateEligibilityScheduleRequest;
use pim_testkit::{ADMIN, Harness, HarnessOptions};

use crate::{
    bad_input::count,
    support::{ROLE, SCOPE},
};

const DAY_MS: i64 = 86_400_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expiry_is_announced_fourteen_days_and_one_day_ahead_and_when_it_passes_once_each()
-> anyhow::Result<()> {
    let h = Harness::start_with(HarnessOptions {
        settings: vec![("PIM_TIMER_INTERVAL_MS".into(), "20".into())],
        ..Default::default()
    })
    .await?;
    let now = pim_clock::Clock::now_millis(h.clock.as_ref());
    h.client(ServiceName::Assignment, &h.mfa_token(ADMIN))
        .assignment()
        .create_eligibility_schedule(CreateEligibilityScheduleRequest {
            request_id: "twenty-days".into(),
            principal_id: "alice".into(),
            role_id: ROLE.into(),
            scope: SCOPE.into(),
            end_time: Some(pim_proto::timestamp_from_millis(now + 20 * DAY_MS)),
            ..Default::default()
        })
        .await?;
    let db = h.service(ServiceName::Assignment).db().clone();
    let announced = |event_type: &'static str, expected: i64| {
        let db = db.clone();
        move || {
            let db = db.clone();
            async move {
                let n = count(
                    &db,
                    &format!("SELECT COUNT(*) AS n FROM outbox WHERE event_type = '{event_type}'"),
                )
                .await?;
                anyhow::ensure!(n <= expected, "{event_type} announced {n} times");
                Ok((n == expected).then_some(()))
            }
        }
    };
    let within = Duration::from_secs(10);

    h.clock
        .advance(chrono::Duration::milliseconds(6 * DAY_MS - 1));
    h.eventually(within, announced("assignment.schedule_expiring", 0))
        .await?;
    h.clock.advance(chrono::Duration::milliseconds(1));
    h.eventually(within, announced("assignment.schedule_expiring", 1))
        .await?;

    h.clock.advance(chrono::Duration::milliseconds(13 * DAY_MS));
    h.eventually(within, announced("assignment.schedule_expiring", 2))
        .await?;
    assert_eq!(
        count(
            &db,
            "SELECT COUNT(*) AS n FROM outbox WHERE event_type = 'assignment.schedule_expired'"
        )
        .await?,
        0
    );

    h.clock.advance(chrono::Duration::milliseconds(DAY_MS));
    h.eventually(within, announced("assignment.schedule_expired", 1))
        .await?;
    // Later ticks announce nothing again.
    h.clock.advance(chrono::Duration::milliseconds(DAY_MS));
    h.eventually(within, announced("assignment.schedule_expired", 1))
        .await?;
    assert_eq!(
        count(&db, "SELECT COUNT(*) AS n FROM schedule_announcements").await?,
        3
    );
    h.stop().await;
    Ok(())
}
