//! `pim audit list|show|export|verify|key`: read, export and verify the audit trail. Every
//! command is one or a few calls of `pim.audit.v1.AuditService`; `verify --file` checks an
//! export offline with the format of `docs/audit-format.md`.

use std::{
    io::{IsTerminal as _, Write as _},
    path::{Path, PathBuf},
};

use anyhow::Context as _;
use clap::{Subcommand, ValueEnum};
use pim_audit::export::Format;
pub use pim_audit::signing::CheckpointVerifier;
pub use pim_audit::{export as format, offline, record};
use pim_client::PimClient;
use pim_proto::audit::v1::{
    AuditRecord, ChainBreak, Checkpoint, ExportFormat, ExportRecordsRequest, GetRecordRequest,
    GetSigningKeyRequest, RecordFilter, RecordOrder, SearchRecordsRequest, VerifyChainRequest,
};
use serde_json::json;

use crate::admin::{Output, readable, table};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FileFormat {
    Csv,
    Jsonl,
}

impl From<FileFormat> for Format {
    fn from(format: FileFormat) -> Self {
        match format {
            FileFormat::Csv => Format::Csv,
            FileFormat::Jsonl => Format::Jsonl,
        }
    }
}

/// Filters of `pim audit list`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ListFilters {
    /// Occurred at or after this instant (RFC 3339).
    #[arg(long)]
    pub since: Option<String>,
    /// Occurred before this instant (RFC 3339).
    #[arg(long)]
    pub until: Option<String>,
    #[arg(long)]
    pub actor: Option<String>,
    /// The principal the records are about.
    #[arg(long)]
    pub target: Option<String>,
    /// A role id.
    #[arg(long)]
    pub role: Option<String>,
    /// This scope and every scope below it.
    #[arg(long)]
    pub scope: Option<String>,
    #[arg(long)]
    pub activity: Option<String>,
    /// role_management, group_management, policy, approval, review, notification or security.
    #[arg(long)]
    pub category: Option<String>,
    /// success or failure.
    #[arg(long)]
    pub result: Option<String>,
    #[arg(long)]
    pub correlation_id: Option<String>,
    #[arg(long)]
    pub trace_id: Option<String>,
}

// Parsed once per process: the size of the filter variant costs nothing worth a Box.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, Subcommand)]
pub enum AuditCommand {
    /// Records, newest first, filtered.
    List {
        #[command(flatten)]
        filters: ListFilters,
        /// Records per page (at most 1000).
        #[arg(long, default_value_t = 50)]
        limit: i32,
        #[arg(long)]
        oldest_first: bool,
        /// Continue from the `next page` token a previous list printed.
        #[arg(long, default_value = "")]
        page_token: String,
    },
    /// One record with its chain proof.
    Show { sequence: u64 },
    /// Stream the trail to FILE (and its checkpoints to FILE.checkpoints.jsonl).
    Export {
        #[arg(long, value_enum, default_value = "csv")]
        format: FileFormat,
        /// Recorded at or after this instant (RFC 3339).
        #[arg(long)]
        since: Option<String>,
        /// Recorded before this instant (RFC 3339).
        #[arg(long)]
        until: Option<String>,
        #[arg(short = 'o', long = "out")]
        out: PathBuf,
    },
    /// Verify the live chain (a range of it), or an exported FILE offline.
    Verify {
        #[arg(long, default_value_t = 0)]
        from: u64,
        #[arg(long, default_value_t = 0)]
        to: u64,
        /// An export to verify offline instead of the live chain.
        #[arg(long)]
        file: Option<PathBuf>,
        /// Default: by the file's extension.
        #[arg(long, value_enum)]
        format: Option<FileFormat>,
        /// Default: FILE.checkpoints.jsonl.
        #[arg(long)]
        checkpoints: Option<PathBuf>,
        /// Hex of the trusted Ed25519 public key, then any earlier ones, comma-separated;
        /// default: the one the service publishes now.
        #[arg(long)]
        public_key: Option<String>,
    },
    /// The public key that verifies checkpoints.
    Key,
}

/// What a command printed, and whether it found a failure (exit non-zero).
#[derive(Debug)]
pub struct Rendered {
    pub text: String,
    pub failed: bool,
}

fn ok(text: String) -> Rendered {
    Rendered {
        text,
        failed: false,
    }
}

fn instant(text: &Option<String>, what: &str) -> anyhow::Result<Option<pim_proto::Timestamp>> {
    text.as_deref()
        .map(|t| {
            chrono::DateTime::parse_from_rfc3339(t)
                .map(|t| pim_proto::timestamp_from_millis(t.timestamp_millis()))
                .with_context(|| format!("{what} {t:?} is not an RFC 3339 instant"))
        })
        .transpose()
}

fn record_json(r: &AuditRecord) -> serde_json::Value {
    let millis = |t: Option<&pim_proto::Timestamp>| {
        record::instant(t.map(pim_proto::millis_from_timestamp).unwrap_or_default())
    };
    json!({
        "sequence": r.sequence,
        "occurred_at": millis(r.occurred_at.as_ref()),
        "recorded_at": millis(r.recorded_at.as_ref()),
        "activity": r.activity,
        "category": r.category,
        "result": r.result,
        "result_reason": r.result_reason,
        "actor_type": r.actor_type,
        "actor_id": r.actor_id,
        "target_type": r.target_type,
        "subject": r.subject,
        "target_principal_id": r.target_principal_id,
        "role_id": r.role_id,
        "scope": r.scope,
        "justification": r.justification,
        "ticket": r.ticket,
        "event_type": r.event_type,
        "event_id": r.event_id,
        "producer": r.producer,
        "producer_sequence": r.producer_sequence,
        "correlation_id": r.correlation_id,
        "trace_id": r.trace_id,
        "payload_type": r.payload_type,
        "payload": serde_json::from_str::<serde_json::Value>(&r.payload_json).unwrap_or_default(),
        "prev_hash": r.prev_hash,
        "hash": r.hash,
    })
}

pub async fn run(
    command: AuditCommand,
    audit: &PimClient,
    output: Output,
) -> anyhow::Result<Rendered> {
    match command {
        AuditCommand::List {
            filters,
            limit,
            oldest_first,
            page_token,
        } => {
            let filter = RecordFilter {
                start_time: instant(&filters.since, "--since")?,
                end_time: instant(&filters.until, "--until")?,
                actor_id: filters.actor.unwrap_or_default(),
                target_principal_id: filters.target.unwrap_or_default(),
                role_id: filters.role.unwrap_or_default(),
                scope: filters.scope.unwrap_or_default(),
                activity: filters.activity.unwrap_or_default(),
                category: filters.category.unwrap_or_default(),
                result: filters.result.unwrap_or_default(),
                correlation_id: filters.correlation_id.unwrap_or_default(),
                trace_id: filters.trace_id.unwrap_or_default(),
            };
            let order = if oldest_first {
                RecordOrder::OldestFirst
            } else {
                RecordOrder::NewestFirst
            };
            let page = audit
                .audit()
                .search_records(SearchRecordsRequest {
                    filter: Some(filter),
                    page_size: limit,
                    page_token,
                    order: order.into(),
                })
                .await
                .map_err(readable)?
                .into_inner();
            let text = match output {
                Output::Json => {
                    let records: Vec<_> = page.records.iter().map(record_json).collect();
                    format!(
                        "{}\n",
                        json!({ "records": records, "next_page_token": page.next_page_token })
                    )
                }
                Output::Table => {
                    let rows: Vec<Vec<String>> = page
                        .records
                        .iter()
                        .map(|r| {
                            vec![
                                r.sequence.to_string(),
                                record_json(r)["occurred_at"]
                                    .as_str()
                                    .unwrap_or_default()
                                    .to_owned(),
                                r.actor_id.clone(),
                                r.activity.clone(),
                                r.target_principal_id.clone(),
                                r.scope.clone(),
                                r.result.clone(),
                            ]
                        })
                        .collect();
                    let mut text = table(
                        &[
                            "SEQ", "OCCURRED", "ACTOR", "ACTIVITY", "TARGET", "SCOPE", "RESULT",
                        ],
                        &rows,
                    );
                    if !page.next_page_token.is_empty() {
                        text.push_str(&format!(
                            "next page: --page-token {}\n",
                            page.next_page_token
                        ));
                    }
                    text
                }
            };
            Ok(ok(text))
        }
        AuditCommand::Show { sequence } => {
            let record = audit
                .audit()
                .get_record(GetRecordRequest { sequence })
                .await
                .map_err(readable)?
                .into_inner()
                .record
                .unwrap_or_default();
            let value = record_json(&record);
            let text = match output {
                Output::Json => format!("{value}\n"),
                Output::Table => {
                    let mut text = String::new();
                    if let Some(object) = value.as_object() {
                        for (key, v) in object {
                            let shown = match v {
                                serde_json::Value::String(s) => s.clone(),
                                other => other.to_string(),
                            };
                            text.push_str(&format!("{key:<20} {shown}\n"));
                        }
                    }
                    text
                }
            };
            Ok(ok(text))
        }
        AuditCommand::Export {
            format,
            since,
            until,
            out,
        } => {
            let summary = export(
                audit,
                format,
                instant(&since, "--since")?,
                instant(&until, "--until")?,
                &out,
                std::io::stderr().is_terminal(),
            )
            .await?;
            Ok(ok(format!(
                "{} records to {}, {} checkpoints to {}\n",
                summary.records,
                out.display(),
                summary.checkpoints,
                checkpoints_path(&out).display()
            )))
        }
        AuditCommand::Verify {
            from,
            to,
            file: None,
            ..
        } => {
            let answer = audit
                .audit()
                .verify_chain(VerifyChainRequest {
                    from_sequence: from,
                    to_sequence: to,
                })
                .await
                .map_err(readable)?
                .into_inner();
            let text = if answer.ok {
                format!(
                    "OK: records {} to {} verify ({} records, {} signed checkpoints)\n",
                    answer.from_sequence,
                    answer.to_sequence,
                    answer.records_checked,
                    answer.checkpoints_checked
                )
            } else {
                format!(
                    "FAIL at {}: {} ({})\n",
                    answer.broken_at,
                    answer.message,
                    answer.reason().as_str_name()
                )
            };
            Ok(Rendered {
                text,
                failed: !answer.ok,
            })
        }
        AuditCommand::Verify {
            file: Some(file),
            format,
            checkpoints,
            public_key,
            ..
        } => {
            let (key, note) = match public_key {
                Some(hex_keys) => {
                    let mut keys = hex_keys
                        .split(',')
                        .map(pim_audit::signing::parse_public_key)
                        .collect::<anyhow::Result<Vec<_>>>()
                        .context("--public-key")?;
                    anyhow::ensure!(!keys.is_empty(), "--public-key names no key");
                    let current = keys.remove(0);
                    (
                        CheckpointVerifier::new(current).trusting(keys),
                        String::new(),
                    )
                }
                None => {
                    let key = audit
                        .audit()
                        .get_signing_key(GetSigningKeyRequest {})
                        .await
                        .map_err(readable)?
                        .into_inner();
                    (
                        CheckpointVerifier::from_bytes(&key.public_key)?,
                        "note: signatures were checked with the key the service publishes now; pass --public-key with a copy you trust\n".to_owned(),
                    )
                }
            };
            let format = format
                .map(Format::from)
                .unwrap_or_else(|| guess_format(&file));
            let mut rendered = verify_file(&file, format, checkpoints.as_deref(), &key)?;
            rendered.text.push_str(&note);
            Ok(rendered)
        }
        AuditCommand::Key => {
            let key = audit
                .audit()
                .get_signing_key(GetSigningKeyRequest {})
                .await
                .map_err(readable)?
                .into_inner();
            Ok(ok(match output {
                Output::Json => format!(
                    "{}\n",
                    json!({
                        "key_id": key.key_id,
                        "public_key": hex::encode(&key.public_key),
                        "public_key_pem": key.public_key_pem,
                    })
                ),
                Output::Table => format!(
                    "key id      {}\npublic key  {}\n{}",
                    key.key_id,
                    hex::encode(&key.public_key),
                    key.public_key_pem
                ),
            }))
        }
    }
}

pub fn checkpoints_path(file: &Path) -> PathBuf {
    let mut name = file.as_os_str().to_owned();
    name.push(".checkpoints.jsonl");
    PathBuf::from(name)
}

fn guess_format(file: &Path) -> Format {
    match file.extension().and_then(|e| e.to_str()) {
        Some("jsonl" | "json") => Format::Jsonl,
        _ => Format::Csv,
    }
}

/// What an export wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExportSummary {
    pub records: u64,
    pub checkpoints: usize,
}

/// Streams an export to `out` and its checkpoints next to it, with a progress bar on stderr
/// when `progress` is set. Memory stays constant: each chunk goes to disk as it arrives.
pub async fn export(
    audit: &PimClient,
    format: FileFormat,
    start_time: Option<pim_proto::Timestamp>,
    end_time: Option<pim_proto::Timestamp>,
    out: &Path,
    progress: bool,
) -> anyhow::Result<ExportSummary> {
    let mut stream = audit
        .audit()
        .export_records(ExportRecordsRequest {
            format: match format {
                FileFormat::Csv => ExportFormat::Csv,
                FileFormat::Jsonl => ExportFormat::Jsonl,
            }
            .into(),
            start_time,
            end_time,
            ..Default::default()
        })
        .await
        .map_err(readable)?
        .into_inner();
    let mut file = std::io::BufWriter::new(
        std::fs::File::create(out).with_context(|| format!("creating {}", out.display()))?,
    );
    let mut checkpoints: Vec<Checkpoint> = Vec::new();
    let mut records = 0;
    while let Some(message) = stream.message().await.map_err(readable)? {
        file.write_all(&message.data)?;
        checkpoints.extend(message.checkpoints);
        records = message.records;
        if progress && message.total_records > 0 {
            let done = message.records * 40 / message.total_records;
            eprint!(
                "\r[{:<40}] {}/{} records",
                "#".repeat(done as usize),
                message.records,
                message.total_records
            );
        }
    }
    if progress {
        eprintln!();
    }
    file.flush()?;
    let mut sidecar = std::fs::File::create(checkpoints_path(out))?;
    for checkpoint in &checkpoints {
        sidecar.write_all(format::checkpoint_line(checkpoint).as_bytes())?;
    }
    Ok(ExportSummary {
        records,
        checkpoints: checkpoints.len(),
    })
}

/// Verifies an export offline.
pub fn verify_file(
    file: &Path,
    format: Format,
    checkpoints: Option<&Path>,
    key: &CheckpointVerifier,
) -> anyhow::Result<Rendered> {
    let checkpoints_file = checkpoints
        .map(Path::to_path_buf)
        .unwrap_or_else(|| checkpoints_path(file));
    let reader =
        std::fs::File::open(file).with_context(|| format!("opening {}", file.display()))?;
    let checks = match std::fs::File::open(&checkpoints_file) {
        Ok(f) => offline::read_checkpoints(std::io::BufReader::new(f)),
        Err(_) if checkpoints.is_none() => Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("opening {}", checkpoints_file.display())),
    };
    let result = checks.and_then(|checks| offline::verify_file(reader, format, checks, key));
    Ok(match result {
        Ok(summary) => {
            let mut text = format!(
                "OK: {} records ({} to {}), {} signed checkpoints verified\n",
                summary.records, summary.first, summary.last, summary.checkpoints
            );
            if summary.unanchored {
                text.push_str("note: the first record is not anchored by a checkpoint; the file is verified relative to it\n");
            }
            if summary.records > 0 && summary.last_signed != Some(summary.last) {
                text.push_str(&format!(
                    "note: records after {} are chained but not yet covered by a signed checkpoint\n",
                    summary.last_signed.map(|s| s.to_string()).unwrap_or_else(|| "the start".into())
                ));
            }
            Rendered {
                text,
                failed: false,
            }
        }
        Err(broken) => Rendered {
            text: match broken.reason {
                ChainBreak::Unspecified => format!("FAIL: {}\n", broken.message),
                reason => format!(
                    "FAIL at {}: {} ({})\n",
                    broken.at,
                    broken.message,
                    reason.as_str_name()
                ),
            },
            failed: true,
        },
    })
}
