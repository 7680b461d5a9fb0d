//! The people-facing commands: `pim check`, `pim roles`, `pim assign`, and (in `directory`)
//! `pim principal`, `pim assignments`, `pim convert`, (in `policies`) `pim policy`.
//! Output is a readable table by default, or JSON with `--output json`. Each command renders
//! to a string, so tests drive exactly what a person sees. Failed calls become sentences
//! (`readable`), never tonic's dump of a status.

use clap::{Subcommand, ValueEnum};
use pim_client::PimClient;
use pim_proto::assignment::v1::{
    CheckAccessRequest, CreateActiveScheduleRequest, CreateEligibilityScheduleRequest,
    ListRolesRequest, Role, Schedule,
};
use serde_json::json;
use tonic::{Code, Status};
use tonic_types::StatusExt as _;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Table,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Kind {
    Eligible,
    Active,
}

#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// May PRINCIPAL act as ROLE (id or display name) at SCOPE now, and why.
    Check {
        principal: String,
        role: String,
        scope: String,
    },
    /// The role catalog.
    Roles {
        #[arg(long)]
        privileged: bool,
    },
    /// Make PRINCIPAL eligible for (or actively assigned) ROLE at SCOPE.
    Assign {
        principal: String,
        role: String,
        scope: String,
        #[arg(long, value_enum, default_value = "eligible")]
        kind: Kind,
        /// Length in days; permanent when absent (if the role's policy allows it).
        #[arg(long)]
        days: Option<i64>,
        #[arg(long, default_value = "")]
        justification: String,
        /// Answer exactly as the real call would, and change nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Role management policies: show, set, export, import.
    Policy {
        #[command(subcommand)]
        command: crate::policies::PolicyCommand,
    },
    /// A principal as the directory has it: type, name, e-mail, enabled, guest, break-glass.
    Principal { id: String },
    /// Everything PRINCIPAL holds: direct or through a group; permanent, time-bound, activated
    /// or eligible; and where it came from (assigned in PIM, or discovered outside it).
    Assignments { principal: String },
    /// Convert a schedule between eligible and active, keeping its window: bring discovered
    /// standing access under management (`--to eligible`), or roll back (`--to active`).
    Convert {
        schedule: String,
        #[arg(long, value_enum)]
        to: Kind,
        #[arg(long, default_value = "")]
        justification: String,
        /// Answer exactly as the real call would, and change nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

pub(crate) fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            widths[i] = widths[i].max(cell.len());
        }
    }
    let line = |cells: Vec<String>| {
        cells
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<width$}", width = widths[i]))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_owned()
    };
    let mut out = vec![line(header.iter().map(|h| (*h).to_owned()).collect())];
    out.extend(rows.iter().map(|r| line(r.clone())));
    out.join("\n") + "\n"
}

pub(crate) fn time(ts: Option<&pim_proto::Timestamp>) -> String {
    match ts {
        Some(ts) => pim_clock::from_millis(pim_proto::millis_from_timestamp(ts)).to_rfc3339(),
        None => "permanent".to_owned(),
    }
}

/// The `google.rpc.Code` name of a gRPC code, as services report it (`FAILED_PRECONDITION`).
pub(crate) fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

/// The stable `ErrorInfo.reason` of a refusal (`ALREADY_DECIDED`), or empty.
pub(crate) fn reason(status: &Status) -> String {
    status
        .get_error_details()
        .error_info()
        .map(|info| info.reason.clone())
        .unwrap_or_default()
}

/// A failed call as a sentence a person can act on, instead of tonic's dump of the status: the
/// reason and message of a refusal, the fields of bad input, what to do about a token.
pub(crate) fn readable(status: Status) -> anyhow::Error {
    let message = status.message();
    let sentence = match status.code() {
        Code::InvalidArgument => match status.get_error_details().bad_request() {
            Some(bad) => format!(
                "invalid input: {}",
                bad.field_violations
                    .iter()
                    .map(|v| format!("{} {}", v.field, v.description))
                    .collect::<Vec<_>>()
                    .join("; ")
            ),
            None => format!("invalid input: {message}"),
        },
        Code::Unauthenticated => format!(
            "the token was not accepted ({message}); pass a valid one with --token or PIM_TOKEN"
        ),
        Code::Unavailable => format!("the service did not answer: {message}"),
        Code::NotFound => message.to_owned(),
        code => match reason(&status) {
            reason if reason.is_empty() => format!("{}: {message}", code_name(code)),
            reason => format!("refused ({reason}): {message}"),
        },
    };
    anyhow::anyhow!(sentence)
}

pub(crate) async fn roles(client: &PimClient, privileged_only: bool) -> anyhow::Result<Vec<Role>> {
    let mut all = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = client
            .assignment()
            .list_roles(ListRolesRequest {
                page_size: 500,
                page_token,
                privileged_only,
            })
            .await
            .map_err(readable)?
            .into_inner();
        all.extend(page.roles);
        if page.next_page_token.is_empty() {
            return Ok(all);
        }
        page_token = page.next_page_token;
    }
}

/// A role id from an id or an exact display name (case-insensitive).
pub(crate) async fn role_id(client: &PimClient, role: &str) -> anyhow::Result<String> {
    RoleCatalog::fetch(client).await?.id(role)
}

/// The role catalog, fetched once, for commands that name several roles or print their names.
pub(crate) struct RoleCatalog {
    roles: Vec<Role>,
}

impl RoleCatalog {
    pub(crate) async fn fetch(client: &PimClient) -> anyhow::Result<Self> {
        Ok(Self {
            roles: roles(client, false).await?,
        })
    }

    /// A role id from an id or an exact display name (case-insensitive).
    pub(crate) fn id(&self, role: &str) -> anyhow::Result<String> {
        self.roles
            .iter()
            .find(|r| r.id == role || r.display_name.eq_ignore_ascii_case(role))
            .map(|r| r.id.clone())
            .ok_or_else(|| anyhow::anyhow!("no role {role:?}; `pim roles` lists them"))
    }

    /// A role's display name, or its id when the catalog does not know it.
    pub(crate) fn name(&self, id: &str) -> String {
        self.roles
            .iter()
            .find(|r| r.id == id)
            .map_or_else(|| id.to_owned(), |r| r.display_name.clone())
    }
}

pub async fn run(
    command: AdminCommand,
    client: &PimClient,
    output: Output,
    now_ms: i64,
) -> anyhow::Result<String> {
    match command {
        AdminCommand::Principal { id } => crate::directory::principal(client, id, output).await,
        AdminCommand::Assignments { principal } => {
            crate::directory::assignments(client, principal, output).await
        }
        AdminCommand::Convert {
            schedule,
            to,
            justification,
            dry_run,
        } => crate::directory::convert(client, schedule, to, justification, dry_run, output).await,
        AdminCommand::Check {
            principal,
            role,
            scope,
        } => {
            let role_id = role_id(client, &role).await?;
            let answer = client
                .assignment()
                .check_access(CheckAccessRequest {
                    principal_id: principal.clone(),
                    role_id: role_id.clone(),
                    scope: scope.clone(),
                    ..Default::default()
                })
                .await
                .map_err(readable)?
                .into_inner();
            let until = answer
                .valid_until
                .as_ref()
                .map(|_| time(answer.valid_until.as_ref()));
            Ok(match output {
                Output::Json => json!({
                    "principal": principal, "role": role_id, "scope": scope, "allowed": answer.allowed,
                    "valid_until": until, "explanation": answer.explanation, "revision": answer.revision,
                })
                .to_string()
                    + "\n",
                Output::Table => table(
                    &["PRINCIPAL", "ROLE", "SCOPE", "ALLOWED", "UNTIL", "WHY"],
                    &[vec![
                        principal,
                        role,
                        scope,
                        if answer.allowed { "yes" } else { "no" }.to_owned(),
                        until.unwrap_or_else(|| "-".to_owned()),
                        answer.explanation,
                    ]],
                ),
            })
        }
        AdminCommand::Roles { privileged } => {
            let roles = roles(client, privileged).await?;
            Ok(match output {
                Output::Json => {
                    let list: Vec<_> = roles
                        .iter()
                        .map(|r| json!({"id": r.id, "name": r.display_name, "privileged": r.privileged, "built_in": r.built_in}))
                        .collect();
                    serde_json::Value::Array(list).to_string() + "\n"
                }
                Output::Table => table(
                    &["NAME", "ID", "PRIVILEGED", "BUILT-IN"],
                    &roles
                        .iter()
                        .map(|r| {
                            vec![
                                r.display_name.clone(),
                                r.id.clone(),
                                if r.privileged { "yes" } else { "no" }.to_owned(),
                                if r.built_in { "yes" } else { "no" }.to_owned(),
                            ]
                        })
                        .collect::<Vec<_>>(),
                ),
            })
        }
        AdminCommand::Assign {
            principal,
            role,
            scope,
            kind,
            days,
            justification,
            dry_run,
        } => {
            let role_id = role_id(client, &role).await?;
            let end_time = days.map(|d| pim_proto::timestamp_from_millis(now_ms + d * 86_400_000));
            let request_id = uuid::Uuid::new_v4().to_string();
            let schedule: Schedule = match kind {
                Kind::Eligible => {
                    client
                        .assignment()
                        .create_eligibility_schedule(CreateEligibilityScheduleRequest {
                            request_id,
                            principal_id: principal,
                            role_id,
                            scope,
                            end_time,
                            justification,
                            validate_only: dry_run,
                            ..Default::default()
                        })
                        .await
                        .map_err(readable)?
                        .into_inner()
                        .schedule
                }
                Kind::Active => {
                    client
                        .assignment()
                        .create_active_schedule(CreateActiveScheduleRequest {
                            request_id,
                            principal_id: principal,
                            role_id,
                            scope,
                            end_time,
                            justification,
                            validate_only: dry_run,
                            ..Default::default()
                        })
                        .await
                        .map_err(readable)?
                        .into_inner()
                        .schedule
                }
            }
            .unwrap_or_default();
            let id = if dry_run {
                "(dry run: nothing written)".to_owned()
            } else {
                schedule.id.clone()
            };
            Ok(match output {
                Output::Json => json!({
                    "id": schedule.id, "dry_run": dry_run, "principal": schedule.principal_id, "role": schedule.role_id,
                    "scope": schedule.scope, "until": time(schedule.end_time.as_ref()),
                })
                .to_string()
                    + "\n",
                Output::Table => table(
                    &["SCHEDULE", "PRINCIPAL", "ROLE", "SCOPE", "UNTIL"],
                    &[vec![id, schedule.principal_id, role, schedule.scope, time(schedule.end_time.as_ref())]],
                ),
            })
        }
        AdminCommand::Policy { command } => crate::policies::run(command, client, output).await,
    }
}
