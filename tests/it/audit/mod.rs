//! The audit trail end to end: records of real flows, the hash chain and its signed checkpoints,
//! tampering found by `VerifyChain` and by the independent Python verifier, the runtime role that
//! cannot rewrite the log, retention, filters and pagination, export, authorization and the CLI.

mod access;
mod cli;
mod export;
mod ingest;
mod keys;
mod query;
mod roles;
mod tamper;

use std::{path::Path, time::Duration};

use pim_cli::audit::{FileFormat, checkpoints_path, format::checkpoint_line};
use pim_client::PimClient;
use pim_config::ServiceName;
use pim_proto::audit::v1::{
    AuditRecord, Checkpoint, ExportFormat, ExportRecordsRequest, ListCheckpointsRequest,
    SearchRecordsRequest, VerifyChainRequest, VerifyChainResponse,
};
use pim_testkit::{ADMIN, Harness, HarnessOptions};
use sea_orm::ConnectionTrait as _;

use crate::support::{activate, audit_records, await_audited, make_eligible};

pub const CHECKPOINT_SECS: i64 = 60;

/// A harness whose audit timer looks every 20 ms and signs a checkpoint a minute (of the
/// manual clock) after the last one, plus `settings`.
pub async fn harness_with(settings: &[(&str, &str)]) -> anyhow::Result<Harness> {
    let mut all = vec![
        ("PIM_TIMER_INTERVAL_MS".to_owned(), "20".to_owned()),
        (
            "PIM_AUDIT_CHECKPOINT_INTERVAL_SECS".to_owned(),
            CHECKPOINT_SECS.to_string(),
        ),
    ];
    all.extend(
        settings
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
    );
    Harness::start_with(HarnessOptions {
        settings: all,
        ..Default::default()
    })
    .await
}

pub async fn harness() -> anyhow::Result<Harness> {
    harness_with(&[]).await
}

/// The audit service as the break-glass Global Administrator.
pub fn auditor(h: &Harness) -> PimClient {
    h.client(ServiceName::Audit, &h.token(ADMIN))
}

/// Alice becomes eligible and activates: records from assignment and activation.
pub async fn alice_activates(h: &Harness) -> anyhow::Result<Vec<AuditRecord>> {
    make_eligible(h, "alice", "alice-eligible").await?;
    let alice = h.client(ServiceName::Activation, &h.mfa_token("alice"));
    activate(&alice, "alice-activates", 60).await?;
    await_audited(
        h,
        &auditor(h),
        &[
            "assignment.schedule_created",
            "activation.request_submitted",
            "assignment.window_provisioned",
            "activation.request_granted",
        ],
    )
    .await?;
    settled(h).await
}

/// The newest record's sequence (0 when there is none).
pub async fn head(h: &Harness) -> anyhow::Result<u64> {
    Ok(auditor(h)
        .audit()
        .search_records(SearchRecordsRequest {
            page_size: 1,
            ..Default::default()
        })
        .await?
        .into_inner()
        .records
        .first()
        .map(|r| r.sequence)
        .unwrap_or(0))
}

/// The head, once no new record has arrived for a few polls.
pub async fn quiet(h: &Harness) -> anyhow::Result<u64> {
    let mut last = head(h).await?;
    let mut quiet = 0;
    while quiet < 4 {
        tokio::time::sleep(Duration::from_millis(75)).await;
        let now = head(h).await?;
        if now == last {
            quiet += 1;
        } else {
            quiet = 0;
        }
        last = now;
    }
    Ok(last)
}

/// Every record, once no new one has arrived for a few polls.
pub async fn settled(h: &Harness) -> anyhow::Result<Vec<AuditRecord>> {
    quiet(h).await?;
    audit_records(&auditor(h)).await
}

/// Moves the clock past the checkpoint interval and waits for the checkpoint of the newest
/// record, then for the record that announces it.
pub async fn checkpoint(h: &Harness) -> anyhow::Result<Checkpoint> {
    let head = quiet(h).await?;
    h.clock
        .advance(chrono::Duration::seconds(CHECKPOINT_SECS + 1));
    let audit = auditor(h);
    // Signing verifies the chain since the last checkpoint first: long after a bulk load.
    let checkpoint = h
        .eventually(Duration::from_secs(120), || {
            let audit = audit.clone();
            async move {
                let all = audit
                    .audit()
                    .list_checkpoints(ListCheckpointsRequest {
                        page_size: 1000,
                        ..Default::default()
                    })
                    .await?
                    .into_inner()
                    .checkpoints;
                Ok(all.into_iter().find(|c| c.sequence >= head))
            }
        })
        .await?;
    let subject = checkpoint.sequence.to_string();
    h.eventually(Duration::from_secs(30), || {
        let audit = audit.clone();
        let subject = subject.clone();
        async move {
            let newest = audit
                .audit()
                .search_records(SearchRecordsRequest {
                    page_size: 20,
                    ..Default::default()
                })
                .await?
                .into_inner()
                .records;
            Ok(newest
                .iter()
                .any(|r| r.event_type == "audit.checkpoint_signed" && r.subject == subject)
                .then_some(()))
        }
    })
    .await?;
    quiet(h).await?;
    Ok(checkpoint)
}

pub async fn verify(h: &Harness) -> anyhow::Result<VerifyChainResponse> {
    Ok(auditor(h)
        .audit()
        .verify_chain(VerifyChainRequest::default())
        .await?
        .into_inner())
}

/// The whole trail exported as one file, and its checkpoints, over the streaming RPC.
pub async fn export_all(
    h: &Harness,
    format: ExportFormat,
) -> anyhow::Result<(Vec<u8>, Vec<Checkpoint>)> {
    let mut stream = auditor(h)
        .audit()
        .export_records(ExportRecordsRequest {
            format: format.into(),
            ..Default::default()
        })
        .await?
        .into_inner();
    let mut data = Vec::new();
    let mut checkpoints = Vec::new();
    while let Some(message) = stream.message().await? {
        data.extend(message.data);
        checkpoints.extend(message.checkpoints);
    }
    Ok((data, checkpoints))
}

/// Writes an export and its checkpoint file into a fresh directory; returns the export's path.
pub fn write_export(
    dir: &Path,
    name: &str,
    data: &[u8],
    checkpoints: &[Checkpoint],
) -> anyhow::Result<std::path::PathBuf> {
    std::fs::create_dir_all(dir)?;
    let path = dir.join(name);
    std::fs::write(&path, data)?;
    let lines: String = checkpoints.iter().map(checkpoint_line).collect();
    std::fs::write(checkpoints_path(&path), lines)?;
    Ok(path)
}

pub fn scratch_dir() -> std::path::PathBuf {
    std::env::temp_dir().join(format!("pim-audit-test-{}", uuid::Uuid::new_v4().simple()))
}

/// The hex of the audit service's public checkpoint key.
pub async fn public_key_hex(h: &Harness) -> anyhow::Result<String> {
    let key = auditor(h)
        .audit()
        .get_signing_key(pim_proto::audit::v1::GetSigningKeyRequest {})
        .await?
        .into_inner();
    Ok(key.public_key.iter().map(|b| format!("{b:02x}")).collect())
}

/// A Python 3 with the `cryptography` package: `python3` on the PATH, or Debian's.
fn python() -> anyhow::Result<&'static str> {
    for candidate in ["python3", "/usr/bin/python3"] {
        let works = std::process::Command::new(candidate)
            .args([
                "-c",
                "import cryptography.hazmat.primitives.asymmetric.ed25519",
            ])
            .output()
            .is_ok_and(|o| o.status.success());
        if works {
            return Ok(candidate);
        }
    }
    anyhow::bail!("no python3 with the cryptography package: apt-get install python3-cryptography")
}

/// Runs `tools/verify-audit.py` on `file`: (verified, what it printed).
pub fn python_verifier(
    file: &Path,
    public_key: &str,
    strict: bool,
) -> anyhow::Result<(bool, String)> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../tools/verify-audit.py");
    let mut command = std::process::Command::new(python()?);
    command
        .arg(script)
        .arg(file)
        .args(["--public-key", public_key]);
    if strict {
        command.arg("--strict");
    }
    let output = command.output()?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    anyhow::ensure!(
        matches!(output.status.code(), Some(0 | 1)),
        "the verifier failed to run: {text}"
    );
    Ok((output.status.success(), text))
}

/// Exports the trail as CSV and runs the independent verifier on it.
pub async fn python_verdict(h: &Harness, format: FileFormat) -> anyhow::Result<(bool, String)> {
    let (data, checkpoints) = export_all(
        h,
        match format {
            FileFormat::Csv => ExportFormat::Csv,
            FileFormat::Jsonl => ExportFormat::Jsonl,
        },
    )
    .await?;
    let name = match format {
        FileFormat::Csv => "audit.csv",
        FileFormat::Jsonl => "audit.jsonl",
    };
    let dir = scratch_dir();
    let path = write_export(&dir, name, &data, &checkpoints)?;
    let verdict = python_verifier(&path, &public_key_hex(h).await?, false);
    let _ = std::fs::remove_dir_all(dir);
    verdict
}

/// Runs SQL on the audit database as its owner (the harness connects as the superuser that ran
/// the migrations).
pub async fn as_owner(h: &Harness, sql: &str) -> Result<(), sea_orm::DbErr> {
    h.service(ServiceName::Audit)
        .db()
        .execute_unprepared(sql)
        .await
        .map(drop)
}

/// What an attacker with the owner's password does: switch the append-only trigger off, change
/// the log, switch it on again.
pub async fn tamper(h: &Harness, sql: &str) -> anyhow::Result<()> {
    as_owner(
        h,
        &format!(
            "ALTER TABLE audit_log DISABLE TRIGGER audit_log_append_only; {sql}; \
             ALTER TABLE audit_log ENABLE TRIGGER audit_log_append_only;"
        ),
    )
    .await?;
    Ok(())
}
