//! `pim bench --suite approval`: a real approval service, and the assignment service it asks
//! about people, started in-process on fresh PostgreSQL databases with Redis for their events
//! and a generated dev HS256 key, measured over real gRPC as an approver uses it:
//!
//! 1. `Decide` at a fixed offered rate, each call approving a distinct open single-stage case
//!    of quorum one that awaits the bench's approver (opened beforehand through `OpenCase` as
//!    the activation service);
//! 2. the first page of `ListAwaitingMe` for one approver among many open cases. These are
//!    seeded with SQL, in batches, as `store.rs` writes an opened case (the case, its
//!    approver, its first log line, the approver's inbox row and the stage's timeout), without
//!    the `case_opened` events nobody reads here.
//!
//! Everything it creates (databases, Redis keys) is removed at the end, also after a failure.

use std::{
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use pim_auth::TokenSigner;
use pim_client::{Credentials, PimClient, roles::SECURITY_ADMINISTRATOR};
use pim_clock::{SharedClock, SystemClock};
use pim_config::{ServiceName, Settings, Source};
use pim_host::{HostDeps, RunningService};
use pim_proto::{
    approval::v1::{
        CaseKind, CaseStatus, CaseSummary, DecideRequest, Decision, ListAwaitingMeRequest,
        OpenCaseRequest,
    },
    assignment::v1::{ApprovalRule, ApprovalStage, Approver, approver::Subject},
};
use prost::Message as _;
use sea_orm::{ConnectionTrait, DatabaseConnection, TransactionTrait, Value};
use tokio::net::TcpListener;

use super::{BenchOptions, Sample, delete_redis_keys};

/// The approver whose decisions are measured.
const DECIDER: &str = "bench-decider";
/// The approver whose inbox is listed.
const LISTER: &str = "bench-lister";
/// Approvers who await the seeded cases the lister does not.
const OTHER_APPROVERS: usize = 1_000;
/// Decisions before the measured ones, so pools and connections are warm.
const WARM_UP: usize = 50;
/// Cases per seeding transaction (10 parameters each stays far below PostgreSQL's 65,535).
const SEED_BATCH: usize = 1_000;
const PAGE: i32 = 50;
const STAGE_TIMEOUT_MS: i64 = 24 * 3600 * 1000;

pub(super) async fn run(options: &BenchOptions) -> anyhow::Result<()> {
    let mut system = BenchSystem::new(options);
    let result = async {
        system.start().await?;
        decide(&system, options).await?.report(&format!(
            "approval: Decide at {}/s (quorum 1)",
            options.decide_rate
        ));
        list_awaiting(&system, options).await?.report(&format!(
            "approval: ListAwaitingMe, {} of {} open",
            options.awaiting.min(PAGE as usize),
            options.cases
        ));
        anyhow::Ok(())
    }
    .await;
    system.remove().await?;
    result
}

/// The two services of one run, and what to remove afterwards.
struct BenchSystem {
    run_id: String,
    server_url: String,
    redis_url: String,
    prefix: String,
    secret: String,
    signer: TokenSigner,
    services: Vec<RunningService>,
    databases: Vec<String>,
}

impl BenchSystem {
    fn new(options: &BenchOptions) -> Self {
        let run_id = uuid::Uuid::new_v4().simple().to_string();
        // A fresh dev key per run: tokens of one run are worthless anywhere else.
        let secret = format!(
            "{}{}",
            uuid::Uuid::new_v4().simple(),
            uuid::Uuid::new_v4().simple()
        );
        let clock: SharedClock = Arc::new(SystemClock);
        Self {
            prefix: format!("bench:{run_id}:"),
            run_id,
            server_url: options.database_url.clone(),
            redis_url: options.redis_url.clone(),
            signer: TokenSigner::hs256(secret.as_bytes(), "pim", "pim", clock),
            secret,
            services: Vec::new(),
            databases: Vec::new(),
        }
    }

    /// Starts assignment (approval asks it about people) and approval, each on a database of
    /// its own, in dev mode with this run's HS256 key.
    async fn start(&mut self) -> anyhow::Result<()> {
        let mut base = Source::from_pairs([("PIM_AUTH_DEV_MODE", "true"), ("PIM_LOG", "warn")]);
        base.set("PIM_AUTH_DEV_HS256_SECRET", self.secret.clone());
        base.set("PIM_REDIS_URL", self.redis_url.clone());
        base.set("PIM_STREAM_PREFIX", self.prefix.clone());
        let mut listeners = Vec::new();
        for service in [ServiceName::Assignment, ServiceName::Approval] {
            let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await?;
            base.set(
                service.url_key(),
                format!("http://{}", listener.local_addr()?),
            );
            listeners.push((service, listener));
        }
        for (service, listener) in listeners {
            let name = self.database_name(service);
            pim_db::ensure_postgres_database(&self.server_url, &name).await?;
            self.databases.push(name);
            let mut source = base.clone();
            source.set("PIM_DATABASE_URL", self.database_url(service));
            let deps = HostDeps {
                clock: Arc::new(SystemClock),
                listener: Some(listener),
                local_bus: None,
            };
            let running = crate::start_service(Settings::load(service, &source)?, deps).await?;
            self.services.push(running);
        }
        Ok(())
    }

    fn database_url(&self, service: ServiceName) -> String {
        pim_db::with_database(&self.server_url, &self.database_name(service))
    }

    fn database_name(&self, service: ServiceName) -> String {
        format!("pim_bench_{}_{}", self.run_id, service.as_str())
    }

    fn client(&self, service: ServiceName, token: String) -> anyhow::Result<PimClient> {
        let url = self
            .services
            .iter()
            .find(|s| s.name == service)
            .map(RunningService::url)
            .ok_or_else(|| anyhow::anyhow!("{service} is not running"))?;
        PimClient::connect(&url, Credentials::Token(token))
    }

    fn person(&self, principal: &str) -> anyhow::Result<PimClient> {
        let token = self.signer.sign(&self.signer.claims(principal, 3600))?;
        self.client(ServiceName::Approval, token)
    }

    /// Stops the services, then drops their databases and deletes the run's Redis keys.
    async fn remove(self) -> anyhow::Result<()> {
        for service in self.services {
            service.shutdown().await;
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

fn single_stage(approver: &str) -> ApprovalRule {
    ApprovalRule {
        required: true,
        stages: vec![ApprovalStage {
            approvers: vec![Approver {
                subject: Some(Subject::UserId(approver.to_owned())),
            }],
            quorum: 1,
            timeout: Some(pim_proto::Duration {
                seconds: STAGE_TIMEOUT_MS / 1000,
                nanos: 0,
            }),
            ..Default::default()
        }],
        ..Default::default()
    }
}

fn summary(requestor: String) -> CaseSummary {
    CaseSummary {
        requestor_id: requestor,
        role_id: SECURITY_ADMINISTRATOR.to_owned(),
        scope: "/".to_owned(),
        justification: "bench".to_owned(),
        ..Default::default()
    }
}

/// Opens `n` cases awaiting [`DECIDER`] through `OpenCase`, as the activation service does.
async fn open_cases(system: &BenchSystem, n: usize) -> anyhow::Result<Vec<String>> {
    let activation = system.client(
        ServiceName::Approval,
        system
            .signer
            .service_token(ServiceName::Activation.as_str())?,
    )?;
    const IN_FLIGHT: usize = 8;
    let mut tasks = Vec::new();
    for worker in 0..IN_FLIGHT {
        let mut client = activation.approval_internal();
        let run_id = system.run_id.clone();
        tasks.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            for i in (worker..n).step_by(IN_FLIGHT) {
                let case = client
                    .open_case(OpenCaseRequest {
                        request_id: format!("{run_id}-{i}"),
                        kind: CaseKind::Activation.into(),
                        rule: Some(single_stage(DECIDER)),
                        policy_version: 1,
                        summary: Some(summary(format!("bench-requestor-{i}"))),
                    })
                    .await?
                    .into_inner()
                    .case
                    .unwrap_or_default();
                ids.push(case.id);
            }
            anyhow::Ok(ids)
        }));
    }
    let mut ids = Vec::with_capacity(n);
    for task in tasks {
        ids.extend(task.await??);
    }
    Ok(ids)
}

async fn decide(system: &BenchSystem, options: &BenchOptions) -> anyhow::Result<Sample> {
    let total = (options.decide_rate * options.seconds) as usize;
    let opened = Instant::now();
    let cases = open_cases(system, WARM_UP + total).await?;
    println!(
        "{:<44} {:>8} ops  {:>9.0} ops/s",
        "  (OpenCase beforehand, 8 in flight)",
        cases.len(),
        cases.len() as f64 / opened.elapsed().as_secs_f64()
    );
    let decider = system.person(DECIDER)?;
    let (warm_up, measured) = cases.split_at(WARM_UP.min(cases.len()));
    for case_id in warm_up {
        approve(decider.clone(), case_id.clone()).await?;
    }
    let mut ticker = tokio::time::interval(Duration::from_micros(
        1_000_000 / options.decide_rate.max(1),
    ));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let started = Instant::now();
    let mut calls = Vec::with_capacity(measured.len());
    for case_id in measured {
        ticker.tick().await;
        calls.push(tokio::spawn(approve(decider.clone(), case_id.clone())));
    }
    let mut latencies = Vec::with_capacity(calls.len());
    for call in calls {
        latencies.push(call.await??);
    }
    Ok(Sample {
        latencies,
        elapsed: started.elapsed(),
    })
}

/// Approves one case; its latency in microseconds. A refusal fails the run.
async fn approve(decider: PimClient, case_id: String) -> anyhow::Result<u64> {
    let started = Instant::now();
    let case = decider
        .approval()
        .decide(DecideRequest {
            case_id,
            decision: Decision::Approve.into(),
            justification: "bench".to_owned(),
        })
        .await?
        .into_inner()
        .case
        .unwrap_or_default();
    let latency = started.elapsed().as_micros() as u64;
    anyhow::ensure!(
        case.status() == CaseStatus::Approved,
        "case {} is {:?} after its only approval",
        case.id,
        case.status()
    );
    Ok(latency)
}

async fn list_awaiting(system: &BenchSystem, options: &BenchOptions) -> anyhow::Result<Sample> {
    let db = pim_db::connect(
        &system.database_url(ServiceName::Approval),
        pim_db::PoolSize { max: 2, min: 1 },
    )
    .await?;
    let seeding = Instant::now();
    let seeded = seed(&db, options.cases, options.awaiting).await;
    // The planner's statistics, as autovacuum would have them for tables this size.
    let analyzed = db.execute_unprepared("ANALYZE").await;
    db.close().await?;
    let mine = seeded?;
    analyzed?;
    println!(
        "{:<44} {:>8} rows {:>9.0} rows/s",
        format!("  (seeded {} open cases, {mine} mine)", options.cases),
        options.cases * 5,
        (options.cases * 5) as f64 / seeding.elapsed().as_secs_f64()
    );
    let lister = system.person(LISTER)?.approval();
    let first_page = || {
        let mut lister = lister.clone();
        async move {
            lister
                .list_awaiting_me(ListAwaitingMeRequest {
                    page_size: PAGE,
                    ..Default::default()
                })
                .await
        }
    };
    let page = first_page().await?.into_inner();
    anyhow::ensure!(
        page.cases.len() == mine.min(PAGE as usize),
        "the lister's first page holds {} cases, not {}",
        page.cases.len(),
        mine.min(PAGE as usize)
    );
    for _ in 0..WARM_UP {
        first_page().await?;
    }
    let started = Instant::now();
    let mut latencies = Vec::new();
    while started.elapsed() < Duration::from_secs(options.seconds) {
        let call = Instant::now();
        first_page().await?;
        latencies.push(call.elapsed().as_micros() as u64);
    }
    Ok(Sample {
        latencies,
        elapsed: started.elapsed(),
    })
}

/// Seeds `cases` open single-stage cases, `awaiting` of them (spread over the whole id range)
/// awaiting [`LISTER`] and the others spread over [`OTHER_APPROVERS`] approvers. Returns how
/// many await the lister.
async fn seed(db: &DatabaseConnection, cases: usize, awaiting: usize) -> anyhow::Result<usize> {
    let now = pim_clock::Clock::now_millis(&SystemClock);
    let every = (cases / awaiting.max(1)).max(1);
    let mut mine = 0;
    let mut first = 0;
    while first < cases {
        let batch = SEED_BATCH.min(cases - first);
        let rows: Vec<SeededCase> = (first..first + batch)
            .map(|i| {
                let approver = if i % every == 0 && mine < awaiting {
                    mine += 1;
                    LISTER.to_owned()
                } else {
                    format!("bench-approver-{}", i % OTHER_APPROVERS)
                };
                SeededCase {
                    id: uuid::Uuid::now_v7().to_string(),
                    request_id: format!("seeded-{i}"),
                    summary: summary(format!("bench-requestor-{}", i % 500)),
                    rule: single_stage(&approver),
                    approver,
                    opened_at_ms: now,
                }
            })
            .collect();
        let txn = db.begin().await?;
        insert(
            &txn,
            "cases (id, request_id, kind, requestor_id, role_id, scope, policy_version, opened_at_ms, summary, rule)",
            &rows,
            |c| {
                vec![
                    c.id.clone().into(),
                    c.request_id.clone().into(),
                    (CaseKind::Activation as i32).into(),
                    c.summary.requestor_id.clone().into(),
                    c.summary.role_id.clone().into(),
                    c.summary.scope.clone().into(),
                    1i64.into(),
                    c.opened_at_ms.into(),
                    c.summary.encode_to_vec().into(),
                    c.rule.encode_to_vec().into(),
                ]
            },
        )
        .await?;
        insert(
            &txn,
            "case_approvers (case_id, stage, principal_id, via_group_id, escalation)",
            &rows,
            |c| {
                vec![
                    c.id.clone().into(),
                    0i32.into(),
                    c.approver.clone().into(),
                    String::new().into(),
                    false.into(),
                ]
            },
        )
        .await?;
        insert(
            &txn,
            "case_log (case_id, seq, at_ms, actor_id, action, stage, justification)",
            &rows,
            |c| {
                vec![
                    c.id.clone().into(),
                    1i32.into(),
                    c.opened_at_ms.into(),
                    ServiceName::Activation.subject().into(),
                    "opened".into(),
                    0i32.into(),
                    String::new().into(),
                ]
            },
        )
        .await?;
        insert(
            &txn,
            "awaiting (principal_id, case_id, stage)",
            &rows,
            |c| vec![c.approver.clone().into(), c.id.clone().into(), 0i32.into()],
        )
        .await?;
        insert(
            &txn,
            "case_timers (case_id, stage, kind, due_ms)",
            &rows,
            |c| {
                vec![
                    c.id.clone().into(),
                    0i32.into(),
                    "timeout".into(),
                    (c.opened_at_ms + STAGE_TIMEOUT_MS).into(),
                ]
            },
        )
        .await?;
        txn.commit().await?;
        first += batch;
    }
    Ok(mine)
}

struct SeededCase {
    id: String,
    request_id: String,
    summary: CaseSummary,
    rule: ApprovalRule,
    approver: String,
    opened_at_ms: i64,
}

/// One multi-row INSERT of `rows` into `table (columns)`.
async fn insert(
    txn: &impl ConnectionTrait,
    table: &str,
    rows: &[SeededCase],
    values: impl Fn(&SeededCase) -> Vec<Value>,
) -> anyhow::Result<()> {
    let mut all = Vec::new();
    let mut tuples = Vec::with_capacity(rows.len());
    for row in rows {
        let row = values(row);
        tuples.push(format!(
            "({})",
            pim_db::placeholders(all.len() + 1, row.len())
        ));
        all.extend(row);
    }
    let sql = format!("INSERT INTO {table} VALUES {}", tuples.join(", "));
    txn.execute_raw(pim_db::stmt(txn, &sql, all)).await?;
    Ok(())
}
