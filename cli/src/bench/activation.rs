//! `pim bench --suite activation`: all five services started in-process, as `pim dev` starts
//! them, but on fresh PostgreSQL databases with Redis for their events, a generated dev HS256
//! key and a clock the bench can move forward. Measured over real gRPC as people use it:
//!
//! 1. activation without approval at a fixed offered rate, each request a distinct eligible
//!    principal: from `Submit` to the first `CheckAccess` that answers allowed;
//! 2. sustained activation throughput, many `Submit`s in flight, and how long until every
//!    consumer (audit and notification among them) has consumed every event;
//! 3. from the approver's `Decide` returning to `CheckAccess` allowed, polled back to back;
//! 4. how late `activation.request_expired` appears in activation's outbox after the window
//!    ended: the windows of run 1 (5 minutes, the shortest allowed) are brought due by moving
//!    the services' clock, so they end one after another at the rate they were activated.
//!
//! The in-process system here ([`Pim`]) is also what the reviews suite runs on. Everything it
//! creates (databases, Redis keys) is removed at the end, also after a failure.

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicI64, Ordering},
    },
    time::{Duration, Instant},
};

use chrono::{DateTime, Utc};
use pim_auth::TokenSigner;
use pim_client::{Credentials, PimClient, roles::SECURITY_ADMINISTRATOR};
use pim_clock::{Clock, SystemClock};
use pim_config::{ServiceName, Settings, Source};
use pim_host::{HostDeps, RunningService};
use pim_proto::{
    activation::v1::{ActivationRequest, RequestAction, RequestStatus, SubmitRequest},
    approval::v1::{DecideRequest, Decision},
    assignment::v1::{
        ApprovalRule, ApprovalStage, Approver, CheckAccessRequest,
        CreateEligibilityScheduleRequest, EnablementRule, ExpirationRule, PolicyRules,
        SetPolicyRequest, approver::Subject,
    },
    events::v1::Event,
};
use prost::Message as _;
use sea_orm::{ConnectionTrait, DatabaseConnection};
use tokio::net::TcpListener;

use super::{BenchOptions, Sample, delete_redis_keys};

/// The break-glass Global Administrator of the run: sets policies and makes people eligible.
pub(super) const ADMIN: &str = "bench-admin";
/// The role's policy at this scope asks for MFA and a justification, not for approval.
const DIRECT_SCOPE: &str = "/administrativeUnits/bench-direct";
/// The role's policy at this scope asks for [`APPROVER`]'s approval as well.
const APPROVED_SCOPE: &str = "/administrativeUnits/bench-approved";
const APPROVER: &str = "bench-approver";
/// Activations before the measured ones, so pools and connections are warm.
const WARM_UP: usize = 20;
/// Eligibility schedules created at once beforehand.
const SETUP_IN_FLIGHT: usize = 8;
/// Windows of run 1 and 4: the shortest the service allows, so the expiry run moves the clock
/// as little as possible.
const SHORT_WINDOW_MIN: i64 = 5;
/// Windows of the other runs: long enough never to end during the expiry run.
const LONG_WINDOW_MIN: i64 = 60;
/// How far ahead of the first end the expiry run sets the clock.
const EXPIRY_LEAD_MS: i64 = 1_000;

pub(super) async fn run(options: &BenchOptions) -> anyhow::Result<()> {
    let mut pim = Pim::new(options);
    let result = async {
        pim.start(&[]).await?;
        set_policies(&pim).await?;
        let total = (options.activation_rate * options.seconds) as usize;
        let latency_group = Group::new(&pim, "direct", WARM_UP + total, DIRECT_SCOPE)?;
        let throughput_group = Group::new(&pim, "sustained", options.activations, DIRECT_SCOPE)?;
        let approval_group = Group::new(
            &pim,
            "approved",
            WARM_UP + options.approvals,
            APPROVED_SCOPE,
        )?;
        let setup = Instant::now();
        let mut eligible = 0;
        for group in [&latency_group, &throughput_group, &approval_group] {
            eligible += make_eligible(&pim, group).await?;
        }
        println!(
            "{:<44} {:>8} ops  {:>9.0} ops/s",
            format!("  (made eligible beforehand, {SETUP_IN_FLIGHT} in flight)"),
            eligible,
            eligible as f64 / setup.elapsed().as_secs_f64()
        );
        pim.await_drained(Duration::from_secs(60)).await?;

        let (submit, allowed, short_windows) =
            submit_to_allowed(&pim, &latency_group, options).await?;
        submit.report(&format!(
            "activation: Submit at {}/s (no approval)",
            options.activation_rate
        ));
        allowed.report(&format!(
            "activation: Submit to access at {}/s",
            options.activation_rate
        ));
        pim.await_drained(Duration::from_secs(60)).await?;

        sustained(&pim, &throughput_group, options.in_flight).await?;
        pim.await_drained(Duration::from_secs(120)).await?;

        let (decide, allowed) = approve_to_allowed(&pim, &approval_group).await?;
        decide.report("activation: approver's Decide (quorum 1)");
        allowed.report("activation: Decide returned to access");
        pim.await_drained(Duration::from_secs(60)).await?;

        expiry_lateness(&pim, &short_windows)
            .await?
            .report("activation: request_expired after the end");
        anyhow::Ok(())
    }
    .await;
    pim.remove().await?;
    result
}

/// The wall clock moved forward by an offset the bench sets: time flows as usual for the
/// services, and the bench can bring windows' ends near without waiting minutes for them.
pub(super) struct BenchClock {
    offset_ms: AtomicI64,
}

impl Clock for BenchClock {
    fn now(&self) -> DateTime<Utc> {
        pim_clock::from_millis(SystemClock.now_millis() + self.offset_ms.load(Ordering::SeqCst))
    }
}

impl BenchClock {
    pub(super) fn advance(&self, ms: i64) {
        self.offset_ms.fetch_add(ms, Ordering::SeqCst);
    }

    /// The wall-clock instant, in microseconds, at which this clock reads `clock_ms`.
    fn wall_us_at(&self, clock_ms: i64) -> i64 {
        (clock_ms - self.offset_ms.load(Ordering::SeqCst)) * 1000
    }
}

/// The five services of one run, and what to remove afterwards.
pub(super) struct Pim {
    run_id: String,
    server_url: String,
    redis_url: String,
    prefix: String,
    secret: String,
    pub(super) clock: Arc<BenchClock>,
    signer: TokenSigner,
    services: Vec<RunningService>,
    databases: Vec<String>,
    /// The bench's own connections to each database, so its reads use no service's pool.
    readers: HashMap<ServiceName, DatabaseConnection>,
}

impl Pim {
    pub(super) fn new(options: &BenchOptions) -> Self {
        let run_id = uuid::Uuid::new_v4().simple().to_string();
        // A fresh dev key per run: tokens of one run are worthless anywhere else.
        let secret = format!(
            "{}{}",
            uuid::Uuid::new_v4().simple(),
            uuid::Uuid::new_v4().simple()
        );
        let clock = Arc::new(BenchClock {
            offset_ms: AtomicI64::new(0),
        });
        Self {
            prefix: format!("bench:{run_id}:"),
            run_id,
            server_url: options.database_url.clone(),
            redis_url: options.redis_url.clone(),
            signer: TokenSigner::hs256(secret.as_bytes(), "pim", "pim", clock.clone()),
            secret,
            clock,
            services: Vec::new(),
            databases: Vec::new(),
            readers: HashMap::new(),
        }
    }

    /// Starts all five contexts, each on a database of its own, in dev mode with this run's
    /// HS256 key, the bench's clock and `settings` over the defaults.
    pub(super) async fn start(&mut self, settings: &[(&str, &str)]) -> anyhow::Result<()> {
        self.start_only(&ServiceName::ALL, settings).await
    }

    /// Starts only `services`, as [`Pim::start`] does; the others' URLs stay unreachable. For
    /// suites that measure one consumer without the others consuming the same events beside it.
    pub(super) async fn start_only(
        &mut self,
        services: &[ServiceName],
        settings: &[(&str, &str)],
    ) -> anyhow::Result<()> {
        let mut base = Source::from_pairs([
            ("PIM_AUTH_DEV_MODE", "true"),
            ("PIM_LOG", "warn"),
            ("PIM_BREAK_GLASS_PRINCIPALS", ADMIN),
        ]);
        base.set("PIM_AUTH_DEV_HS256_SECRET", self.secret.clone());
        base.set("PIM_REDIS_URL", self.redis_url.clone());
        base.set("PIM_STREAM_PREFIX", self.prefix.clone());
        for (key, value) in settings {
            base.set(*key, *value);
        }
        let mut listeners = Vec::new();
        for service in services.iter().copied() {
            let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await?;
            base.set(
                service.url_key(),
                format!("http://{}", listener.local_addr()?),
            );
            listeners.push((service, listener));
        }
        for (service, _) in &listeners {
            let name = self.database_name(*service);
            pim_db::ensure_postgres_database(&self.server_url, &name).await?;
            self.databases.push(name);
        }
        for (service, listener) in listeners {
            let mut source = base.clone();
            source.set("PIM_DATABASE_URL", self.database_url(service));
            let deps = HostDeps {
                clock: self.clock.clone(),
                listener: Some(listener),
                local_bus: None,
            };
            let running = crate::start_service(Settings::load(service, &source)?, deps).await?;
            self.services.push(running);
            let reader = pim_db::connect(
                &self.database_url(service),
                pim_db::PoolSize { max: 2, min: 1 },
            )
            .await?;
            self.readers.insert(service, reader);
        }
        Ok(())
    }

    pub(super) fn database_url(&self, service: ServiceName) -> String {
        pim_db::with_database(&self.server_url, &self.database_name(service))
    }

    fn database_name(&self, service: ServiceName) -> String {
        format!("pim_bench_{}_{}", self.run_id, service.as_str())
    }

    /// The bench's own connection to `service`'s database.
    pub(super) fn reader(&self, service: ServiceName) -> anyhow::Result<&DatabaseConnection> {
        self.readers
            .get(&service)
            .ok_or_else(|| anyhow::anyhow!("{service} is not running"))
    }

    pub(super) fn redis_url(&self) -> &str {
        &self.redis_url
    }

    /// The Redis stream `producer` publishes to in this run.
    pub(super) fn stream(&self, producer: ServiceName) -> String {
        pim_events::stream_key(&self.prefix, producer.as_str())
    }

    pub(super) fn url(&self, service: ServiceName) -> anyhow::Result<String> {
        self.services
            .iter()
            .find(|s| s.name == service)
            .map(RunningService::url)
            .ok_or_else(|| anyhow::anyhow!("{service} is not running"))
    }

    /// A person's token, after a fresh sign-in with MFA.
    pub(super) fn token(&self, principal: &str) -> anyhow::Result<String> {
        let mut claims = self.signer.claims(principal, 3600);
        claims.amr.push("mfa".into());
        Ok(self.signer.sign(&claims)?)
    }

    /// One channel per service, shared by every person's client, as one front end would.
    pub(super) fn channel(
        &self,
        service: ServiceName,
    ) -> anyhow::Result<tonic::transport::Channel> {
        pim_client::channel(&self.url(service)?, Duration::from_secs(10), None)
    }

    pub(super) fn client(
        &self,
        service: ServiceName,
        principal: &str,
    ) -> anyhow::Result<PimClient> {
        Ok(PimClient::new(
            self.channel(service)?,
            Credentials::Token(self.token(principal)?),
        ))
    }

    /// Waits until every consumer has consumed every event its producers have written: the
    /// system is quiet again.
    pub(super) async fn await_drained(&self, within: Duration) -> anyhow::Result<Duration> {
        let started = Instant::now();
        loop {
            let mut behind = Vec::new();
            for producer in ServiceName::ALL {
                let db = self.reader(producer)?;
                let unsequenced = count(
                    db,
                    "SELECT COUNT(*) AS n FROM outbox WHERE sequence IS NULL",
                    [],
                )
                .await?;
                let produced =
                    count(db, "SELECT COALESCE(MAX(sequence), 0) AS n FROM outbox", []).await?;
                if unsequenced > 0 {
                    behind.push(format!("{producer}: {unsequenced} not yet relayed"));
                }
                for consumer in pim_host::consumers_of(producer) {
                    let consumed = count(
                        self.reader(consumer)?,
                        "SELECT COUNT(*) AS n FROM inbox WHERE producer = $1",
                        [producer.as_str().into()],
                    )
                    .await?;
                    if consumed < produced {
                        behind.push(format!(
                            "{consumer}: {consumed} of {produced} from {producer}"
                        ));
                    }
                }
            }
            if behind.is_empty() {
                return Ok(started.elapsed());
            }
            anyhow::ensure!(
                started.elapsed() < within,
                "events not consumed within {within:?}: {}",
                behind.join(", ")
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Stops the services, then drops their databases and deletes the run's Redis keys.
    pub(super) async fn remove(self) -> anyhow::Result<()> {
        // Consumers first, so none of them calls a peer that is already gone.
        for service in self.services.into_iter().rev() {
            service.shutdown().await;
        }
        for (_, reader) in self.readers {
            reader.close().await?;
        }
        let admin = sea_orm::Database::connect(&self.server_url).await?;
        for name in &self.databases {
            admin
                .execute_unprepared(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
                .await?;
        }
        admin.close().await?;
        delete_redis_keys(&self.redis_url, &self.prefix).await?;
        Ok(())
    }
}

/// The single number a query answers as `n`.
pub(super) async fn count(
    db: &DatabaseConnection,
    sql: &str,
    values: impl IntoIterator<Item = sea_orm::Value>,
) -> anyhow::Result<i64> {
    let row = db.query_one_raw(pim_db::stmt(db, sql, values)).await?;
    Ok(row
        .map(|r| r.try_get::<i64>("", "n"))
        .transpose()?
        .unwrap_or_default())
}

fn minutes(n: i64) -> Option<pim_proto::Duration> {
    Some(pim_proto::Duration {
        seconds: n * 60,
        nanos: 0,
    })
}

/// Security Administrator: MFA and a justification everywhere, at most 8 hours; at
/// [`APPROVED_SCOPE`] also [`APPROVER`]'s approval.
async fn set_policies(pim: &Pim) -> anyhow::Result<()> {
    let admin = pim.client(ServiceName::Assignment, ADMIN)?;
    for (scope, approver) in [(DIRECT_SCOPE, None), (APPROVED_SCOPE, Some(APPROVER))] {
        let rules = PolicyRules {
            activation_expiration: Some(ExpirationRule {
                permanent_allowed: false,
                maximum_duration: minutes(8 * 60),
            }),
            activation_enablement: Some(EnablementRule {
                mfa_required: true,
                justification_required: true,
                ticket_required: false,
            }),
            approval: Some(ApprovalRule {
                required: approver.is_some(),
                stages: approver
                    .map(|a| ApprovalStage {
                        approvers: vec![Approver {
                            subject: Some(Subject::UserId(a.to_owned())),
                        }],
                        quorum: 1,
                        timeout: minutes(24 * 60),
                        ..Default::default()
                    })
                    .into_iter()
                    .collect(),
                ..Default::default()
            }),
            ..Default::default()
        };
        admin
            .assignment()
            .set_policy(SetPolicyRequest {
                role_id: SECURITY_ADMINISTRATOR.to_owned(),
                scope: scope.to_owned(),
                rules: Some(rules),
                ..Default::default()
            })
            .await?;
    }
    Ok(())
}

/// People of one run, each eligible for the role at `scope`, each with a client of their own
/// (their token) over the shared channel.
struct Group {
    people: Vec<Person>,
    scope: &'static str,
}

#[derive(Clone)]
struct Person {
    id: String,
    activation: PimClient,
}

impl Group {
    fn new(pim: &Pim, name: &str, n: usize, scope: &'static str) -> anyhow::Result<Self> {
        let channel = pim.channel(ServiceName::Activation)?;
        let people = (0..n)
            .map(|i| {
                let id = format!("bench-{name}-{i}");
                let activation =
                    PimClient::new(channel.clone(), Credentials::Token(pim.token(&id)?));
                Ok(Person { id, activation })
            })
            .collect::<anyhow::Result<_>>()?;
        Ok(Self { people, scope })
    }
}

/// Makes every person of `group` eligible through the assignment API, as the admin.
async fn make_eligible(pim: &Pim, group: &Group) -> anyhow::Result<usize> {
    let admin = pim.client(ServiceName::Assignment, ADMIN)?;
    let mut tasks = Vec::new();
    for worker in 0..SETUP_IN_FLIGHT {
        let mut client = admin.assignment();
        let ids: Vec<String> = group
            .people
            .iter()
            .skip(worker)
            .step_by(SETUP_IN_FLIGHT)
            .map(|p| p.id.clone())
            .collect();
        let scope = group.scope;
        tasks.push(tokio::spawn(async move {
            for id in &ids {
                client
                    .create_eligibility_schedule(CreateEligibilityScheduleRequest {
                        request_id: format!("eligible-{id}"),
                        principal_id: id.clone(),
                        role_id: SECURITY_ADMINISTRATOR.to_owned(),
                        scope: scope.to_owned(),
                        justification: "bench".to_owned(),
                        ..Default::default()
                    })
                    .await?;
            }
            anyhow::Ok(ids.len())
        }));
    }
    let mut made = 0;
    for task in tasks {
        made += task.await??;
    }
    Ok(made)
}

fn activation(person: &Person, scope: &str, window_min: i64) -> SubmitRequest {
    SubmitRequest {
        request_id: format!("{}-activate", person.id),
        action: RequestAction::SelfActivate.into(),
        role_id: SECURITY_ADMINISTRATOR.to_owned(),
        scope: scope.to_owned(),
        duration: minutes(window_min),
        justification: "bench".to_owned(),
        ..Default::default()
    }
}

/// Submits one activation; the request and the call's latency in microseconds.
async fn submit(
    person: &Person,
    scope: &str,
    window_min: i64,
) -> anyhow::Result<(ActivationRequest, u64)> {
    let started = Instant::now();
    let request = person
        .activation
        .activation()
        .submit(activation(person, scope, window_min))
        .await?
        .into_inner()
        .request
        .unwrap_or_default();
    Ok((request, started.elapsed().as_micros() as u64))
}

/// Asks CheckAccess back to back until `principal` may act as the role at `scope`.
async fn await_allowed(checker: &PimClient, principal: &str, scope: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut assignment = checker.assignment();
    loop {
        let allowed = assignment
            .check_access(CheckAccessRequest {
                principal_id: principal.to_owned(),
                role_id: SECURITY_ADMINISTRATOR.to_owned(),
                scope: scope.to_owned(),
                ..Default::default()
            })
            .await?
            .into_inner()
            .allowed;
        if allowed {
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "{principal} was not allowed within 30 s"
        );
    }
}

/// One activation with the latencies of its Submit and of Submit to access allowed.
async fn activate_to_allowed(
    person: Person,
    checker: PimClient,
    scope: &'static str,
) -> anyhow::Result<(u64, u64, ActivationRequest)> {
    let started = Instant::now();
    let (request, submitted) = submit(&person, scope, SHORT_WINDOW_MIN).await?;
    anyhow::ensure!(
        request.status() == RequestStatus::Provisioned,
        "{}'s activation is {:?}, not provisioned",
        person.id,
        request.status()
    );
    await_allowed(&checker, &person.id, scope).await?;
    Ok((submitted, started.elapsed().as_micros() as u64, request))
}

/// Run 1: one activation every `1/rate` s, each in its own task; returns the samples and the
/// windows (request id, end) for the expiry run.
async fn submit_to_allowed(
    pim: &Pim,
    group: &Group,
    options: &BenchOptions,
) -> anyhow::Result<(Sample, Sample, Vec<(String, i64)>)> {
    let checker = pim.client(ServiceName::Assignment, ADMIN)?;
    let (warm_up, measured) = group.people.split_at(WARM_UP.min(group.people.len()));
    let mut windows = Vec::with_capacity(group.people.len());
    for person in warm_up {
        let (_, _, request) =
            activate_to_allowed(person.clone(), checker.clone(), group.scope).await?;
        windows.push(request);
    }
    let mut ticker = tokio::time::interval(Duration::from_micros(
        1_000_000 / options.activation_rate.max(1),
    ));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let started = Instant::now();
    let mut calls = Vec::with_capacity(measured.len());
    for person in measured {
        ticker.tick().await;
        calls.push(tokio::spawn(activate_to_allowed(
            person.clone(),
            checker.clone(),
            group.scope,
        )));
    }
    let (mut submits, mut allowed) = (Vec::new(), Vec::new());
    for call in calls {
        let (submitted, to_allowed, request) = call.await??;
        submits.push(submitted);
        allowed.push(to_allowed);
        windows.push(request);
    }
    let elapsed = started.elapsed();
    let windows = windows
        .into_iter()
        .map(|r| {
            let end = r
                .end_time
                .as_ref()
                .map(pim_proto::millis_from_timestamp)
                .unwrap_or_default();
            (r.id, end)
        })
        .collect();
    Ok((
        Sample {
            latencies: submits,
            elapsed,
        },
        Sample {
            latencies: allowed,
            elapsed,
        },
        windows,
    ))
}

/// Run 2: `in_flight` people submit at once, as fast as answers come; then how long until
/// every consumer has caught up.
async fn sustained(pim: &Pim, group: &Group, in_flight: usize) -> anyhow::Result<()> {
    let in_flight = in_flight.max(1);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for worker in 0..in_flight {
        let people: Vec<Person> = group
            .people
            .iter()
            .skip(worker)
            .step_by(in_flight)
            .cloned()
            .collect();
        let scope = group.scope;
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(people.len());
            for person in &people {
                let (request, latency) = submit(person, scope, LONG_WINDOW_MIN).await?;
                anyhow::ensure!(
                    request.status() == RequestStatus::Provisioned,
                    "{}'s activation is {:?}, not provisioned",
                    person.id,
                    request.status()
                );
                latencies.push(latency);
            }
            anyhow::Ok(latencies)
        }));
    }
    let mut latencies = Vec::with_capacity(group.people.len());
    for task in tasks {
        latencies.extend(task.await??);
    }
    let submitted = started.elapsed();
    let n = latencies.len();
    Sample {
        latencies,
        elapsed: submitted,
    }
    .report(&format!("activation: sustained, {in_flight} in flight"));
    pim.await_drained(Duration::from_secs(300)).await?;
    let drained = started.elapsed();
    println!(
        "{:<44} {:>8} ops  {:>9.0} ops/s  (caught up {:.2} s after the last Submit)",
        "  (until every consumer caught up)",
        n,
        n as f64 / drained.as_secs_f64(),
        (drained - submitted).as_secs_f64()
    );
    Ok(())
}

/// Run 3: each person's request waits for approval; then, one at a time, the approver
/// approves, and access is polled back to back from the moment Decide returned.
async fn approve_to_allowed(pim: &Pim, group: &Group) -> anyhow::Result<(Sample, Sample)> {
    let mut cases = Vec::with_capacity(group.people.len());
    for person in &group.people {
        let (request, _) = submit(person, group.scope, LONG_WINDOW_MIN).await?;
        anyhow::ensure!(
            request.status() == RequestStatus::PendingApproval && !request.case_id.is_empty(),
            "{}'s activation is {:?} without a case, not pending approval",
            person.id,
            request.status()
        );
        cases.push((person.id.clone(), request.case_id));
    }
    // Quiet again: the cases' events (notification, audit) are consumed before measuring.
    pim.await_drained(Duration::from_secs(60)).await?;
    let approver = pim.client(ServiceName::Approval, APPROVER)?;
    let checker = pim.client(ServiceName::Assignment, ADMIN)?;
    let (mut decides, mut allowed) = (Vec::new(), Vec::new());
    let started = Instant::now();
    for (i, (principal, case_id)) in cases.into_iter().enumerate() {
        let decide = Instant::now();
        approver
            .approval()
            .decide(DecideRequest {
                case_id,
                decision: Decision::Approve.into(),
                justification: "bench".to_owned(),
            })
            .await?;
        let decided = Instant::now();
        await_allowed(&checker, &principal, group.scope).await?;
        if i >= WARM_UP {
            decides.push((decided - decide).as_micros() as u64);
            allowed.push(decided.elapsed().as_micros() as u64);
        }
    }
    let elapsed = started.elapsed();
    Ok((
        Sample {
            latencies: decides,
            elapsed,
        },
        Sample {
            latencies: allowed,
            elapsed,
        },
    ))
}

/// Run 4: moves the clock to [`EXPIRY_LEAD_MS`] before the first of `windows` ends, so they
/// end one after another in real time; each one's lateness is from the wall-clock moment the
/// services' clock passes its end to the moment its `activation.request_expired` row is
/// visible in activation's outbox (polled every 2 ms).
async fn expiry_lateness(pim: &Pim, windows: &[(String, i64)]) -> anyhow::Result<Sample> {
    let db = pim.reader(ServiceName::Activation)?;
    let ends: HashMap<&str, i64> = windows
        .iter()
        .map(|(id, end)| (id.as_str(), *end))
        .collect();
    let first_end = windows
        .iter()
        .map(|(_, end)| *end)
        .min()
        .unwrap_or_default();
    let last_seen = count(db, "SELECT COALESCE(MAX(id), 0) AS n FROM outbox", []).await?;
    let now = pim.clock.now_millis();
    pim.clock.advance(first_end - now - EXPIRY_LEAD_MS);
    let moved = super::chrono_now_us();
    let started = Instant::now();
    let mut after = last_seen;
    let mut latencies = Vec::with_capacity(windows.len());
    while latencies.len() < windows.len() {
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(120),
            "only {} of {} expiries announced within 120 s",
            latencies.len(),
            windows.len()
        );
        let rows = db
            .query_all_raw(pim_db::stmt(
                db,
                "SELECT id, event_type, envelope FROM outbox WHERE id > $1 ORDER BY id",
                [after.into()],
            ))
            .await?;
        let seen = super::chrono_now_us();
        for row in rows {
            after = row.try_get::<i64>("", "id")?;
            if row.try_get::<String>("", "event_type")? != "activation.request_expired" {
                continue;
            }
            let envelope: Vec<u8> = row.try_get("", "envelope")?;
            let event = Event::decode(envelope.as_slice())?;
            let Some(end) = ends.get(event.subject.as_str()) else {
                anyhow::bail!(
                    "request {} expired, but it was not one of the run's",
                    event.subject
                );
            };
            let due = pim.clock.wall_us_at(*end).max(moved);
            latencies.push((seen - due).max(0) as u64);
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    Ok(Sample {
        latencies,
        elapsed: started.elapsed(),
    })
}
