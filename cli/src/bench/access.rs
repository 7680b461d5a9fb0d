//! `pim bench --suite access`: `CheckAccess` over a large directory, against the empty RPC of
//! the same server. The assignment service runs as its own process (`pim serve assignment`), as
//! operators run it, so that its cold start and its memory are its own:
//!
//! 1. the data set is written straight into a fresh database: `--access-schedules` schedules
//!    (a tenth of them held by groups) over a tenth as many users, a hundredth as many groups
//!    and as many leaf scopes four levels deep; each user belongs to 5 groups;
//! 2. cold start: from spawning the process to its first SERVING health check (the index is
//!    loaded before the port opens);
//! 3. 64 concurrent streams over 8 connections, closed loop, alternating the empty RPC (the
//!    health check) and `CheckAccess` three times each; half of the checks are meant to be
//!    allowed, and the share actually allowed is reported;
//! 4. `CheckAccess` at half of its measured maximum, paced over the 64 streams: p50/p99;
//! 5. the process's resident memory (now and peak);
//! 6. propagation: a second replica on the same database; a schedule created on the first, then
//!    `CheckAccess` polled on the second, without a revision, until allowed.

use std::{
    process::Stdio,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use pim_auth::TokenSigner;
use pim_client::{Credentials, PimClient};
use pim_clock::{SharedClock, SystemClock};
use pim_config::ServiceName;
use pim_proto::assignment::v1::{
    CheckAccessRequest, CreateActiveScheduleRequest,
    assignment_service_client::AssignmentServiceClient,
};
use sea_orm::{ConnectionTrait, DatabaseConnection};
use tokio::process::{Child, Command};
use tonic::{
    metadata::MetadataValue,
    service::{Interceptor, interceptor::InterceptedService},
    transport::Channel,
};

use super::{BenchOptions, Sample};

const ADMIN: &str = "bench-admin";
const STREAMS: usize = 64;
const CONNECTIONS: usize = 8;
const ROLES: usize = 20;
/// A role nobody holds: the denied half of the checks ask for it.
const UNHELD_ROLE: &str = "bench-role-unheld";
/// Queries prepared beforehand and cycled through.
const QUERIES: usize = 20_000;
const PROPAGATIONS: usize = 200;
/// Far in the future: time-bound schedules of the data set never end during the run.
const FAR_END_MS: i64 = 4_102_444_800_000;

/// The shape of the data set.
#[derive(Clone, Copy)]
struct Shape {
    schedules: u64,
    users: u64,
    groups: u64,
    leaves: u64,
}

impl Shape {
    fn of(schedules: usize) -> Self {
        let schedules = schedules.max(1_000) as u64;
        Self {
            schedules,
            users: schedules / 10,
            groups: schedules / 100,
            leaves: schedules / 100,
        }
    }

    /// Schedule `n`'s scope: leaf `j`'s ancestor at `level` (1 to 4). Written the same way in
    /// SQL by [`seed`].
    fn scope(j: u64, level: u64) -> String {
        let mut scope = format!("/subscriptions/s{}", j % 10);
        if level >= 2 {
            scope.push_str(&format!("/resourceGroups/rg{}", j % 100));
        }
        if level >= 3 {
            scope.push_str(&format!("/providers/p{}", j % 1000));
        }
        if level >= 4 {
            scope.push_str(&format!("/resources/r{j}"));
        }
        scope
    }

    /// Schedule `n`: (holder, role, leaf, level, active).
    fn schedule(&self, n: u64) -> (String, String, u64, u64, bool) {
        let holder = if n < self.schedules / 10 {
            format!("g{}", n % self.groups)
        } else {
            format!("u{}", n % self.users)
        };
        let role = format!("bench-role-{}", (n * 31) % ROLES as u64);
        (
            holder,
            role,
            (n * 7) % self.leaves,
            1 + n % 4,
            !n.is_multiple_of(3),
        )
    }
}

/// Writes the data set with set-based SQL; the formulas match [`Shape::schedule`].
async fn seed(db: &DatabaseConnection, shape: Shape) -> anyhow::Result<()> {
    let Shape {
        schedules,
        users,
        groups,
        leaves,
    } = shape;
    let tenth = schedules / 10;
    let statements = [
        format!(
            "INSERT INTO principals (id, kind, display_name, email, enabled, guest, break_glass, updated_at_ms) \
             SELECT 'u' || i, 'user', 'User ' || i, 'u' || i || '@bench.test', TRUE, FALSE, FALSE, 0 \
             FROM generate_series(0, {users} - 1) i"
        ),
        format!(
            "INSERT INTO principals (id, kind, display_name, email, enabled, guest, break_glass, updated_at_ms) \
             SELECT 'g' || i, 'group', 'Group ' || i, '', TRUE, FALSE, FALSE, 0 \
             FROM generate_series(0, {groups} - 1) i"
        ),
        format!(
            "INSERT INTO group_members (group_id, member_id) \
             SELECT 'g' || ((i * 7 + k * 1999) % {groups}), 'u' || i \
             FROM generate_series(0, {users} - 1) i, generate_series(0, 4) k ON CONFLICT DO NOTHING"
        ),
        format!(
            "INSERT INTO schedules (id, kind, principal_id, role_id, scope, start_ms, end_ms, created_by, created_at_ms) \
             SELECT 'bench-' || n, \
               CASE WHEN n % 3 = 0 THEN 'eligible' ELSE 'active' END, \
               CASE WHEN n < {tenth} THEN 'g' || (n % {groups}) ELSE 'u' || (n % {users}) END, \
               'bench-role-' || ((n * 31) % {ROLES}), \
               '/subscriptions/s' || ((n * 7) % {leaves} % 10) \
                 || CASE WHEN n % 4 >= 1 THEN '/resourceGroups/rg' || ((n * 7) % {leaves} % 100) ELSE '' END \
                 || CASE WHEN n % 4 >= 2 THEN '/providers/p' || ((n * 7) % {leaves} % 1000) ELSE '' END \
                 || CASE WHEN n % 4 >= 3 THEN '/resources/r' || ((n * 7) % {leaves}) ELSE '' END, \
               0, CASE WHEN n % 2 = 0 THEN NULL ELSE {FAR_END_MS} END, 'bench', 0 \
             FROM generate_series(0, {schedules} - 1) n"
        ),
        "ANALYZE".to_owned(),
    ];
    for sql in statements {
        db.execute_unprepared(&sql).await?;
    }
    Ok(())
}

/// Half allowed (a user's active schedule, asked at a leaf below its scope), half denied (a
/// role nobody holds, at a leaf), in a fixed pseudo-random order.
fn queries(shape: Shape) -> Vec<CheckAccessRequest> {
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut queries = Vec::with_capacity(QUERIES);
    while queries.len() < QUERIES {
        if queries.len() % 2 == 0 {
            let n = shape.schedules / 10 + next() % (shape.schedules - shape.schedules / 10);
            let (holder, role, leaf, _, active) = shape.schedule(n);
            if !active {
                continue;
            }
            queries.push(CheckAccessRequest {
                principal_id: holder,
                role_id: role,
                scope: Shape::scope(leaf, 4),
                ..Default::default()
            });
        } else {
            queries.push(CheckAccessRequest {
                principal_id: format!("u{}", next() % shape.users),
                role_id: UNHELD_ROLE.into(),
                scope: Shape::scope(next() % shape.leaves, 4),
                ..Default::default()
            });
        }
    }
    queries
}

/// One `pim serve assignment` process.
struct Replica {
    child: Child,
    url: String,
}

impl Replica {
    async fn spawn(env: &[(String, String)]) -> anyhow::Result<(Self, Duration)> {
        let port = {
            let probe = std::net::TcpListener::bind("127.0.0.1:0")?;
            probe.local_addr()?.port()
        };
        let started = Instant::now();
        let child = Command::new(std::env::current_exe()?)
            .args(["serve", "assignment"])
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env("PIM_LISTEN_ADDR", format!("127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()?;
        let url = format!("http://127.0.0.1:{port}");
        let mut replica = Self { child, url };
        loop {
            if let Some(status) = replica.child.try_wait()? {
                anyhow::bail!("pim serve assignment exited with {status}");
            }
            if started.elapsed() > Duration::from_secs(300) {
                anyhow::bail!("pim serve assignment was not ready within 300 s");
            }
            if serving(&replica.url).await {
                return Ok((replica, started.elapsed()));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// CPU time the process has used, user and system, in seconds.
    fn cpu_seconds(&self) -> anyhow::Result<f64> {
        let pid = self
            .child
            .id()
            .ok_or_else(|| anyhow::anyhow!("the replica has exited"))?;
        cpu_seconds_of(&format!("/proc/{pid}/stat"))
    }

    /// Resident memory now and at its peak, in MiB, from /proc.
    fn memory_mib(&self) -> anyhow::Result<(f64, f64)> {
        let pid = self
            .child
            .id()
            .ok_or_else(|| anyhow::anyhow!("the replica has exited"))?;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
        let field = |name: &str| -> anyhow::Result<f64> {
            let line = status
                .lines()
                .find(|l| l.starts_with(name))
                .ok_or_else(|| anyhow::anyhow!("no {name} in /proc/{pid}/status"))?;
            let kib: f64 = line
                .split_whitespace()
                .nth(1)
                .ok_or_else(|| anyhow::anyhow!("malformed {name}"))?
                .parse()?;
            Ok(kib / 1024.0)
        };
        Ok((field("VmRSS:")?, field("VmHWM:")?))
    }
}

fn own_cpu_seconds() -> anyhow::Result<f64> {
    cpu_seconds_of("/proc/self/stat")
}

/// utime + stime of a /proc/…/stat file, in seconds (Linux counts them in 1/100 s).
fn cpu_seconds_of(path: &str) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(path)?;
    // The command name, in parentheses, may hold spaces: count fields after its end.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .ok_or_else(|| anyhow::anyhow!("malformed {path}"))?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| -> anyhow::Result<f64> {
        Ok(fields
            .get(i)
            .ok_or_else(|| anyhow::anyhow!("short {path}"))?
            .parse::<f64>()?)
    };
    // After the name: state is field 3 of the file, utime 14 and stime 15.
    Ok((ticks(11)? + ticks(12)?) / 100.0)
}

async fn serving(url: &str) -> bool {
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
    let Ok(channel) = pim_client::channel(url, Duration::from_secs(2), None) else {
        return false;
    };
    HealthClient::new(channel)
        .check(HealthCheckRequest::default())
        .await
        .is_ok_and(|r| r.into_inner().status == 1)
}

fn channels(url: &str) -> anyhow::Result<Vec<Channel>> {
    (0..CONNECTIONS)
        .map(|_| pim_client::channel(url, Duration::from_secs(10), None))
        .collect()
}

/// A backend service's CheckAccess client, as generated, presenting its token: the same client
/// stack as the health check's, so that the comparison measures the server.
fn checker(
    channel: Channel,
    token: &str,
) -> anyhow::Result<
    AssignmentServiceClient<InterceptedService<Channel, impl Interceptor + Clone + use<>>>,
> {
    let bearer: MetadataValue<_> = format!("Bearer {token}").parse()?;
    Ok(AssignmentServiceClient::with_interceptor(
        channel,
        move |mut request: tonic::Request<()>| {
            request
                .metadata_mut()
                .insert("authorization", bearer.clone());
            Ok(request)
        },
    ))
}

/// Closed loop: `STREAMS` callers for `seconds`; calls per second.
async fn closed_loop(
    channels: &[Channel],
    token: &str,
    queries: &Arc<Vec<CheckAccessRequest>>,
    check_access: bool,
    seconds: u64,
    allowed: &Arc<AtomicU64>,
) -> anyhow::Result<f64> {
    let stop = Arc::new(AtomicBool::new(false));
    let calls = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for stream in 0..STREAMS {
        let channel = channels[stream % channels.len()].clone();
        let (stop, calls, queries, allowed) = (
            stop.clone(),
            calls.clone(),
            queries.clone(),
            allowed.clone(),
        );
        let token = token.to_owned();
        tasks.push(tokio::spawn(async move {
            let mut health = tonic_health::pb::health_client::HealthClient::new(channel.clone());
            let mut assignment = checker(channel, &token)?;
            let mut i = stream * 7919;
            while !stop.load(Ordering::Relaxed) {
                if check_access {
                    let answer = assignment
                        .check_access(queries[i % queries.len()].clone())
                        .await?
                        .into_inner();
                    if answer.allowed {
                        allowed.fetch_add(1, Ordering::Relaxed);
                    }
                } else {
                    health
                        .check(tonic_health::pb::HealthCheckRequest::default())
                        .await?;
                }
                calls.fetch_add(1, Ordering::Relaxed);
                i += 1;
            }
            anyhow::Ok(())
        }));
    }
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    let done = calls.load(Ordering::Relaxed);
    let elapsed = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        task.await??;
    }
    Ok(done as f64 / elapsed.as_secs_f64())
}

/// `rate` calls per second for `seconds`, paced: sends are due every `1 / rate` s, taken in
/// turn by the `STREAMS` streams, and released by a thread of their own that sleeps with the
/// kernel's high-resolution timer. (tokio's timer has a resolution of 1 ms, which would release
/// `rate / 1000` sends at once on every tick, and measure that burst rather than the service.) A
/// stream still busy when its next send is due sends as soon as it is free. Each call's latency is
/// measured from when it was sent.
async fn paced(
    channels: &[Channel],
    token: &str,
    queries: &Arc<Vec<CheckAccessRequest>>,
    rate: f64,
    seconds: u64,
) -> anyhow::Result<Sample> {
    let per_stream = ((rate * seconds as f64) as usize / STREAMS).max(1);
    let mut releases = Vec::with_capacity(STREAMS);
    let mut tasks = Vec::with_capacity(STREAMS);
    for stream in 0..STREAMS {
        let mut client = checker(channels[stream % channels.len()].clone(), token)?;
        let queries = queries.clone();
        let (release, mut due) = tokio::sync::mpsc::unbounded_channel::<()>();
        releases.push(release);
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(per_stream);
            let mut i = 0;
            while due.recv().await.is_some() {
                let query = queries[(stream * 7919 + i * 13) % queries.len()].clone();
                let sent = Instant::now();
                client.check_access(query).await?;
                latencies.push(sent.elapsed().as_micros() as u64);
                i += 1;
            }
            anyhow::Ok(latencies)
        }));
    }
    let interval = Duration::from_secs_f64(1.0 / rate);
    let started = Instant::now();
    let pacer = std::thread::spawn(move || {
        let first = Instant::now() + Duration::from_millis(10);
        for n in 0..per_stream * STREAMS {
            let due = first + interval * n as u32;
            let now = Instant::now();
            if due > now {
                std::thread::sleep(due - now);
            }
            // A stream that has failed has dropped its receiver; its task reports why.
            let _ = releases[n % STREAMS].send(());
        }
    });
    let mut latencies = Vec::with_capacity(per_stream * STREAMS);
    for task in tasks {
        latencies.extend(task.await??);
    }
    pacer
        .join()
        .map_err(|_| anyhow::anyhow!("the pacing thread panicked"))?;
    Ok(Sample {
        latencies,
        elapsed: started.elapsed(),
    })
}

/// From a schedule created on `primary` to `CheckAccess` allowed on `replica`, without a
/// revision: how long the replica's follower takes.
async fn propagation(primary: &str, replica: &str, signer: &TokenSigner) -> anyhow::Result<Sample> {
    let mut admin_claims = signer.claims(ADMIN, 3600);
    admin_claims.amr.push("mfa".into());
    let admin = signer.sign(&admin_claims)?;
    let reader = signer.service_token("audit")?;
    let mut writer = PimClient::new(
        pim_client::channel(primary, Duration::from_secs(10), None)?,
        Credentials::Token(admin),
    )
    .assignment();
    let mut checker = PimClient::new(
        pim_client::channel(replica, Duration::from_secs(10), None)?,
        Credentials::Token(reader),
    )
    .assignment();
    let started = Instant::now();
    let mut latencies = Vec::with_capacity(PROPAGATIONS);
    for i in 0..PROPAGATIONS {
        let principal = format!("propagation-{i}");
        writer
            .create_active_schedule(CreateActiveScheduleRequest {
                request_id: principal.clone(),
                principal_id: principal.clone(),
                role_id: pim_client::roles::SECURITY_READER.into(),
                scope: "/subscriptions/s0".into(),
                justification: "propagation bench".into(),
                ..Default::default()
            })
            .await?;
        let written = Instant::now();
        loop {
            let answer = checker
                .check_access(CheckAccessRequest {
                    principal_id: principal.clone(),
                    role_id: pim_client::roles::SECURITY_READER.into(),
                    scope: "/subscriptions/s0".into(),
                    ..Default::default()
                })
                .await?
                .into_inner();
            if answer.allowed {
                break;
            }
            if written.elapsed() > Duration::from_secs(10) {
                anyhow::bail!("{principal}'s schedule did not reach the replica within 10 s");
            }
        }
        latencies.push(written.elapsed().as_micros() as u64);
    }
    Ok(Sample {
        latencies,
        elapsed: started.elapsed(),
    })
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

pub(super) async fn run(options: &BenchOptions) -> anyhow::Result<()> {
    let shape = Shape::of(options.access_schedules);
    let name = format!("pim_bench_access_{}", uuid::Uuid::new_v4().simple());
    pim_db::ensure_postgres_database(&options.database_url, &name).await?;
    let url = pim_db::with_database(&options.database_url, &name);
    let result = measure(options, shape, &url).await;
    let admin = sea_orm::Database::connect(&options.database_url).await?;
    admin
        .execute_unprepared(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
        .await?;
    result
}

async fn measure(options: &BenchOptions, shape: Shape, url: &str) -> anyhow::Result<()> {
    crate::migrate_service(ServiceName::Assignment, url).await?;
    let db = pim_db::connect(url, pim_db::PoolSize { max: 2, min: 1 }).await?;
    let seeding = Instant::now();
    seed(&db, shape).await?;
    println!(
        "  (data set: {} schedules, {} users in 5 groups each, {} groups, {} leaf scopes 4 deep; written in {:.1} s)",
        shape.schedules,
        shape.users,
        shape.groups,
        shape.leaves,
        seeding.elapsed().as_secs_f64()
    );
    db.close().await?;

    let secret = format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    );
    let clock: SharedClock = Arc::new(SystemClock);
    let signer = TokenSigner::hs256(secret.as_bytes(), "pim", "pim", clock);
    let env: Vec<(String, String)> = [
        ("PIM_DATABASE_URL", url.to_owned()),
        ("PIM_REDIS_URL", options.redis_url.clone()),
        (
            "PIM_STREAM_PREFIX",
            format!("bench:{}:", uuid::Uuid::new_v4().simple()),
        ),
        ("PIM_AUTH_DEV_MODE", "true".to_owned()),
        ("PIM_AUTH_DEV_HS256_SECRET", secret),
        ("PIM_BREAK_GLASS_PRINCIPALS", ADMIN.to_owned()),
        ("PIM_LOG", "warn".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();

    let (primary, cold_start) = Replica::spawn(&env).await?;
    println!(
        "{:<44} {:>9.2} s",
        "access: cold start to SERVING",
        cold_start.as_secs_f64()
    );
    let token = signer.service_token("audit")?;
    let queries = Arc::new(queries(shape));
    let connections = channels(&primary.url)?;
    let uncounted = Arc::new(AtomicU64::new(0));
    // Warm both paths, then alternate, so that drift of the machine hits both alike.
    closed_loop(&connections, &token, &queries, true, 1, &uncounted).await?;
    closed_loop(&connections, &token, &queries, false, 1, &uncounted).await?;
    let (mut empty, mut checks) = (Vec::new(), Vec::new());
    let allowed = Arc::new(AtomicU64::new(0));
    let mut check_seconds = 0.0;
    // CPU seconds of the service and of this load generator, per kind of call.
    let (mut empty_cpu, mut check_cpu) = ((0.0, 0.0, 0.0), (0.0, 0.0, 0.0));
    let account =
        |cpu: &mut (f64, f64, f64), before: (f64, f64), rate: f64| -> anyhow::Result<()> {
            let after = (primary.cpu_seconds()?, own_cpu_seconds()?);
            cpu.0 += after.0 - before.0;
            cpu.1 += after.1 - before.1;
            cpu.2 += rate * options.seconds as f64;
            Ok(())
        };
    for _ in 0..3 {
        let before = (primary.cpu_seconds()?, own_cpu_seconds()?);
        let rate = closed_loop(
            &connections,
            &token,
            &queries,
            false,
            options.seconds,
            &uncounted,
        )
        .await?;
        account(&mut empty_cpu, before, rate)?;
        empty.push(rate);
        let before = (primary.cpu_seconds()?, own_cpu_seconds()?);
        let rate = closed_loop(
            &connections,
            &token,
            &queries,
            true,
            options.seconds,
            &allowed,
        )
        .await?;
        account(&mut check_cpu, before, rate)?;
        check_seconds += rate * options.seconds as f64;
        checks.push(rate);
    }
    for (name, (service, generator, calls)) in
        [("empty RPC", empty_cpu), ("CheckAccess", check_cpu)]
    {
        println!(
            "{:<44} {:>9.1} µs service  {:.1} µs load generator",
            format!("access: CPU per call, {name}"),
            service * 1e6 / calls.max(1.0),
            generator * 1e6 / calls.max(1.0)
        );
    }
    let (empty, check) = (median(empty), median(checks));
    println!(
        "{:<44} {:>9.0} ops/s",
        format!("access: empty RPC, {STREAMS} streams (median of 3)"),
        empty
    );
    println!(
        "{:<44} {:>9.0} ops/s  {:.1} % of the empty RPC  ({:.1} % allowed)",
        format!("access: CheckAccess, {STREAMS} streams (median of 3)"),
        check,
        100.0 * check / empty,
        100.0 * allowed.load(Ordering::Relaxed) as f64 / check_seconds.max(1.0)
    );
    let half = (check / 2.0).max(1.0);
    paced(&connections, &token, &queries, half, options.seconds)
        .await?
        .report(&format!("access: CheckAccess at {half:.0}/s (half of max)"));
    let (rss, peak) = primary.memory_mib()?;
    println!(
        "{:<44} {:>9.0} MiB  (peak {:.0} MiB)",
        "access: service resident memory", rss, peak
    );

    let (replica, replica_start) = Replica::spawn(&env).await?;
    println!(
        "{:<44} {:>9.2} s",
        "access: second replica cold start",
        replica_start.as_secs_f64()
    );
    propagation(&primary.url, &replica.url, &signer)
        .await?
        .report("access: write on one replica to allowed on another");
    drop(replica);
    drop(primary);
    Ok(())
}
