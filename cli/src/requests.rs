//! The requestor's commands: `pim activate ROLE…`, `pim deactivate`, `pim extend`, `pim renew`,
//! `pim requests`, `pim request show ID` and `pim cancel ID`. Like the approver's commands, each
//! renders to a string, so tests drive exactly what a person sees. A submission the service
//! refuses is a line of the output with its code and reason, and makes the command fail; when
//! the refusal asks for a stronger sign-in, the output says how to get one and retry.
//! Statuses are named as Microsoft Graph names them (`PendingApproval`, `Provisioned`).

use std::{fmt, str::FromStr};

use clap::{Args, Subcommand};
use pim_client::PimClient;
use pim_proto::{
    Timestamp,
    activation::v1::{
        ActivationRequest, CancelRequest, GetActivationRequestRequest, ListMyRequestsRequest,
        RequestAction, RequestStatus, SubmitBatchRequest, SubmitRequest, Ticket,
    },
    millis_from_timestamp, timestamp_from_millis,
};
use serde_json::{Value, json};
use tonic::Code;

use crate::admin::{Output, RoleCatalog, code_name, readable, reason, table, time};

#[derive(Debug, Subcommand)]
pub enum RequestCommand {
    /// Activate roles you are eligible for, just in time; several roles go in one batch.
    Activate {
        /// Role ids or display names.
        #[arg(required = true, value_name = "ROLE")]
        roles: Vec<String>,
        /// Where the roles apply.
        #[arg(long, default_value = "/")]
        scope: String,
        /// How long: `1h`, `30m`, `1h30m`; at most what the role's policy allows.
        #[arg(long, default_value = "1h")]
        duration: Length,
        /// Why; the role's policy may require it.
        #[arg(long, short, default_value = "")]
        justification: String,
        /// A ticket as SYSTEM:NUMBER, such as `jira:OPS-7`.
        #[arg(long, value_parser = parse_ticket)]
        ticket: Option<Ticket>,
        /// A later start (RFC 3339); without it the window starts now, or at approval.
        #[arg(long, value_parser = parse_instant)]
        start: Option<i64>,
        /// Answer exactly as the real request would, and write nothing.
        #[arg(long)]
        dry_run: bool,
        /// The idempotency key (with several roles, KEY-1, KEY-2, …); fresh when absent.
        #[arg(long)]
        request_id: Option<String>,
    },
    /// End your live activation of ROLE at the scope early.
    Deactivate {
        /// A role id or display name.
        role: String,
        #[arg(long, default_value = "/")]
        scope: String,
        /// The idempotency key; fresh when absent.
        #[arg(long)]
        request_id: Option<String>,
    },
    /// Ask for more time on an assignment of yours that ends within 14 days.
    Extend(ScheduleChange),
    /// Ask for an assignment of yours that ended in the last 30 days back.
    Renew(ScheduleChange),
    /// Your requests, newest first.
    Requests {
        /// Only requests in this status: PendingApproval, Provisioned, ScheduleCreated, Denied,
        /// Canceled, Failed, Revoked, TimedOut, Expired, PendingProvisioning.
        #[arg(long, value_parser = parse_status)]
        status: Option<RequestStatus>,
        /// Only requests for this role (id or display name).
        #[arg(long)]
        role: Option<String>,
    },
    /// One of your requests: `pim request show ID`.
    Request {
        #[command(subcommand)]
        command: RequestShow,
    },
    /// Withdraw a request that awaits approval or has not started yet.
    Cancel { id: String },
}

#[derive(Debug, Subcommand)]
pub enum RequestShow {
    /// The request with its full history.
    Show { id: String },
}

/// `pim extend` and `pim renew`: a new end for one of the caller's schedules.
#[derive(Debug, Args)]
pub struct ScheduleChange {
    /// The schedule (assignment) to change.
    pub schedule_id: String,
    /// Its role (id or display name).
    #[arg(long)]
    pub role: String,
    /// Its scope.
    #[arg(long)]
    pub scope: String,
    /// The new end (RFC 3339).
    #[arg(long, value_parser = parse_instant, required_unless_present = "duration", conflicts_with = "duration")]
    pub until: Option<i64>,
    /// The new length, instead of --until: `30d`, `720h`.
    #[arg(long)]
    pub duration: Option<Length>,
    /// Why; recorded with the request and shown to approvers.
    #[arg(long, short)]
    pub justification: String,
    /// A ticket as SYSTEM:NUMBER.
    #[arg(long, value_parser = parse_ticket)]
    pub ticket: Option<Ticket>,
    /// The idempotency key; fresh when absent.
    #[arg(long)]
    pub request_id: Option<String>,
}

/// A length of time as people write it: `1h`, `30m`, `1h30m`, `2d`, `90s`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Length {
    pub ms: i64,
}

impl FromStr for Length {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let bad = || format!("{text:?} is not a length such as 1h, 30m or 1h30m");
        let mut ms: i64 = 0;
        let mut digits = String::new();
        for c in text.trim().chars() {
            if c.is_ascii_digit() {
                digits.push(c);
                continue;
            }
            let unit: i64 = match c {
                'd' => 86_400_000,
                'h' => 3_600_000,
                'm' => 60_000,
                's' => 1_000,
                _ => return Err(bad()),
            };
            let n: i64 = digits.parse().map_err(|_| bad())?;
            ms = n
                .checked_mul(unit)
                .and_then(|part| ms.checked_add(part))
                .ok_or_else(bad)?;
            digits.clear();
        }
        if !digits.is_empty() || ms == 0 {
            return Err(bad());
        }
        Ok(Self { ms })
    }
}

impl fmt::Display for Length {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = String::new();
        let mut rest = self.ms / 1000;
        for (unit, secs) in [("d", 86_400), ("h", 3_600), ("m", 60), ("s", 1)] {
            if rest >= secs {
                out += &format!("{}{unit}", rest / secs);
                rest %= secs;
            }
        }
        if out.is_empty() {
            out = format!("{}ms", self.ms);
        }
        f.write_str(&out)
    }
}

impl Length {
    fn proto(self) -> pim_proto::Duration {
        pim_proto::Duration {
            seconds: self.ms / 1000,
            nanos: ((self.ms % 1000) * 1_000_000) as i32,
        }
    }
}

fn parse_ticket(text: &str) -> Result<Ticket, String> {
    match text.split_once(':') {
        Some((system, number)) if !system.trim().is_empty() && !number.trim().is_empty() => {
            Ok(Ticket {
                system: system.trim().to_owned(),
                number: number.trim().to_owned(),
            })
        }
        _ => Err(format!(
            "{text:?} is not a ticket; give SYSTEM:NUMBER, such as jira:OPS-7"
        )),
    }
}

fn parse_instant(text: &str) -> Result<i64, String> {
    chrono::DateTime::parse_from_rfc3339(text)
        .map(|t| t.timestamp_millis())
        .map_err(|e| format!("{text:?} is not an RFC 3339 time such as 2026-01-31T09:00:00Z: {e}"))
}

const STATUSES: [RequestStatus; 10] = [
    RequestStatus::PendingApproval,
    RequestStatus::PendingProvisioning,
    RequestStatus::ScheduleCreated,
    RequestStatus::Provisioned,
    RequestStatus::Denied,
    RequestStatus::Canceled,
    RequestStatus::Failed,
    RequestStatus::Revoked,
    RequestStatus::TimedOut,
    RequestStatus::Expired,
];

fn parse_status(text: &str) -> Result<RequestStatus, String> {
    let wanted = text.replace(['_', '-'], "").to_ascii_lowercase();
    STATUSES
        .into_iter()
        .find(|s| status_name(*s).eq_ignore_ascii_case(&wanted))
        .ok_or_else(|| {
            let names: Vec<&str> = STATUSES.iter().map(|s| status_name(*s)).collect();
            format!("no status {text:?}; one of {}", names.join(", "))
        })
}

/// Graph's name of a request status.
pub fn status_name(status: RequestStatus) -> &'static str {
    match status {
        RequestStatus::PendingApproval => "PendingApproval",
        RequestStatus::PendingProvisioning => "PendingProvisioning",
        RequestStatus::ScheduleCreated => "ScheduleCreated",
        RequestStatus::Provisioned => "Provisioned",
        RequestStatus::Denied => "Denied",
        RequestStatus::Canceled => "Canceled",
        RequestStatus::Failed => "Failed",
        RequestStatus::Revoked => "Revoked",
        RequestStatus::TimedOut => "TimedOut",
        RequestStatus::Expired => "Expired",
        RequestStatus::Unspecified => "Unknown",
    }
}

/// Graph's name of a request action.
fn action_name(action: RequestAction) -> &'static str {
    match action {
        RequestAction::SelfActivate => "selfActivate",
        RequestAction::SelfDeactivate => "selfDeactivate",
        RequestAction::SelfExtend => "selfExtend",
        RequestAction::SelfRenew => "selfRenew",
        RequestAction::Unspecified => "unknown",
    }
}

/// What a command printed, and how many of its submissions the service refused.
#[derive(Debug)]
pub struct Rendered {
    pub text: String,
    pub refused: usize,
    pub submitted: usize,
}

impl Rendered {
    fn text(text: String) -> Self {
        Self {
            text,
            refused: 0,
            submitted: 0,
        }
    }

    /// The plain statement a command ends with when any submission was refused.
    pub fn failure(&self) -> Option<String> {
        (self.refused > 0).then(|| {
            format!(
                "{} of {} requests refused; the lines above say why",
                self.refused, self.submitted
            )
        })
    }
}

/// The outcome of one submission: the request, or the refusal's code, reason and message.
struct Outcome {
    role_id: String,
    code: String,
    reason: String,
    message: String,
    request: Option<ActivationRequest>,
}

impl Outcome {
    fn accepted(&self) -> bool {
        self.code == code_name(Code::Ok)
    }
}

/// Runs one requestor's command. `activation` calls the activation service; `assignment` is
/// asked only for the role catalog.
pub async fn run(
    command: RequestCommand,
    activation: &PimClient,
    assignment: &PimClient,
    output: Output,
    now_ms: i64,
) -> anyhow::Result<Rendered> {
    let catalog = RoleCatalog::fetch(assignment).await?;
    match command {
        RequestCommand::Activate {
            roles,
            scope,
            duration,
            justification,
            ticket,
            start,
            dry_run,
            request_id,
        } => {
            let role_ids = roles
                .iter()
                .map(|role| catalog.id(role))
                .collect::<anyhow::Result<Vec<_>>>()?;
            let several = role_ids.len() > 1;
            let items: Vec<SubmitRequest> = role_ids
                .iter()
                .enumerate()
                .map(|(i, role_id)| SubmitRequest {
                    request_id: match &request_id {
                        Some(key) if several => format!("{key}-{}", i + 1),
                        Some(key) => key.clone(),
                        None => uuid::Uuid::new_v4().to_string(),
                    },
                    action: RequestAction::SelfActivate.into(),
                    role_id: role_id.clone(),
                    scope: scope.clone(),
                    duration: Some(duration.proto()),
                    justification: justification.clone(),
                    ticket: ticket.clone(),
                    validate_only: dry_run,
                    start_time: start.map(timestamp_from_millis),
                    ..Default::default()
                })
                .collect();
            let (correlation_id, outcomes) = submit(activation, items).await?;
            // The retry names only the roles refused for want of a stronger sign-in.
            let mut retry = vec!["pim".to_owned(), "activate".to_owned()];
            retry.extend(
                roles
                    .iter()
                    .zip(&outcomes)
                    .filter(|(_, o)| STEP_UP.contains(&o.reason.as_str()))
                    .map(|(r, _)| shell_word(r)),
            );
            retry.extend(["--scope".to_owned(), shell_word(&scope)]);
            retry.extend(["--duration".to_owned(), duration.to_string()]);
            if !justification.is_empty() {
                retry.extend(["--justification".to_owned(), shell_word(&justification)]);
            }
            if let Some(t) = &ticket {
                retry.extend([
                    "--ticket".to_owned(),
                    shell_word(&format!("{}:{}", t.system, t.number)),
                ]);
            }
            if let Some(start) = start {
                retry.extend([
                    "--start".to_owned(),
                    time(Some(&timestamp_from_millis(start))),
                ]);
            }
            if dry_run {
                retry.push("--dry-run".to_owned());
            }
            Ok(outcomes_rendered(
                &outcomes,
                &correlation_id,
                dry_run,
                &retry.join(" "),
                &catalog,
                output,
                now_ms,
            ))
        }
        RequestCommand::Deactivate {
            role,
            scope,
            request_id,
        } => {
            let item = SubmitRequest {
                request_id: request_id.unwrap_or_else(|| uuid::Uuid::new_v4().to_string()),
                action: RequestAction::SelfDeactivate.into(),
                role_id: catalog.id(&role)?,
                scope: scope.clone(),
                ..Default::default()
            };
            let retry = format!(
                "pim deactivate {} --scope {}",
                shell_word(&role),
                shell_word(&scope)
            );
            let (correlation_id, outcomes) = submit(activation, vec![item]).await?;
            Ok(outcomes_rendered(
                &outcomes,
                &correlation_id,
                false,
                &retry,
                &catalog,
                output,
                now_ms,
            ))
        }
        RequestCommand::Extend(change) => {
            schedule_change(
                activation,
                &catalog,
                RequestAction::SelfExtend,
                change,
                output,
                now_ms,
            )
            .await
        }
        RequestCommand::Renew(change) => {
            schedule_change(
                activation,
                &catalog,
                RequestAction::SelfRenew,
                change,
                output,
                now_ms,
            )
            .await
        }
        RequestCommand::Requests { status, role } => {
            let role_id = match role {
                Some(role) => catalog.id(&role)?,
                None => String::new(),
            };
            let filtered = status.is_some() || !role_id.is_empty();
            let requests = my_requests(activation, status, role_id).await?;
            Ok(Rendered::text(match output {
                Output::Json => {
                    let list: Vec<Value> =
                        requests.iter().map(|r| request_json(r, &catalog)).collect();
                    Value::Array(list).to_string() + "\n"
                }
                Output::Table if requests.is_empty() && filtered => {
                    "None of your requests match.\n".to_owned()
                }
                Output::Table if requests.is_empty() => "You have made no requests.\n".to_owned(),
                Output::Table => requests_table(&requests, &catalog, now_ms),
            }))
        }
        RequestCommand::Request {
            command: RequestShow::Show { id },
        } => {
            let request = activation
                .activation()
                .get_activation_request(GetActivationRequestRequest { id })
                .await
                .map_err(readable)?
                .into_inner()
                .request
                .unwrap_or_default();
            Ok(Rendered::text(match output {
                Output::Json => request_json(&request, &catalog).to_string() + "\n",
                Output::Table => show(&request, &catalog, now_ms),
            }))
        }
        RequestCommand::Cancel { id } => {
            let request = activation
                .activation()
                .cancel(CancelRequest { id })
                .await
                .map_err(readable)?
                .into_inner()
                .request
                .unwrap_or_default();
            Ok(Rendered::text(match output {
                Output::Json => request_json(&request, &catalog).to_string() + "\n",
                Output::Table => requests_table(&[request], &catalog, now_ms),
            }))
        }
    }
}

async fn schedule_change(
    activation: &PimClient,
    catalog: &RoleCatalog,
    action: RequestAction,
    change: ScheduleChange,
    output: Output,
    now_ms: i64,
) -> anyhow::Result<Rendered> {
    let item = SubmitRequest {
        request_id: change
            .request_id
            .clone()
            .unwrap_or_else(|| uuid::Uuid::new_v4().to_string()),
        action: action.into(),
        role_id: catalog.id(&change.role)?,
        scope: change.scope.clone(),
        schedule_id: change.schedule_id.clone(),
        end_time: change.until.map(timestamp_from_millis),
        duration: change.duration.map(Length::proto),
        justification: change.justification.clone(),
        ticket: change.ticket.clone(),
        ..Default::default()
    };
    let verb = match action {
        RequestAction::SelfRenew => "renew",
        _ => "extend",
    };
    let until = match (change.until, change.duration) {
        (Some(until), _) => format!("--until {}", time(Some(&timestamp_from_millis(until)))),
        (None, Some(length)) => format!("--duration {length}"),
        (None, None) => String::new(),
    };
    let retry = format!(
        "pim {verb} {} --role {} --scope {} {until} --justification {}",
        shell_word(&change.schedule_id),
        shell_word(&change.role),
        shell_word(&change.scope),
        shell_word(&change.justification)
    );
    let (correlation_id, outcomes) = submit(activation, vec![item]).await?;
    Ok(outcomes_rendered(
        &outcomes,
        &correlation_id,
        false,
        &retry,
        catalog,
        output,
        now_ms,
    ))
}

/// One item goes through `Submit`, several through `SubmitBatch` (one correlation id); either
/// way each gets an outcome. A refusal of the single call is reported like a refusal inside a
/// batch; any other failure (no answer, a bad token) is an error of the command.
async fn submit(
    activation: &PimClient,
    mut items: Vec<SubmitRequest>,
) -> anyhow::Result<(String, Vec<Outcome>)> {
    if items.len() == 1 {
        let item = items.remove(0);
        let role_id = item.role_id.clone();
        return match activation.activation().submit(item).await {
            Ok(response) => {
                let request = response.into_inner().request.unwrap_or_default();
                Ok((
                    request.correlation_id.clone(),
                    vec![Outcome {
                        role_id,
                        code: code_name(Code::Ok).into(),
                        reason: String::new(),
                        message: String::new(),
                        request: Some(request),
                    }],
                ))
            }
            Err(status) if is_refusal(status.code()) => Ok((
                String::new(),
                vec![Outcome {
                    role_id,
                    code: code_name(status.code()).into(),
                    reason: reason(&status),
                    message: status.message().to_owned(),
                    request: None,
                }],
            )),
            Err(status) => Err(readable(status)),
        };
    }
    let role_ids: Vec<String> = items.iter().map(|i| i.role_id.clone()).collect();
    let batch = activation
        .activation()
        .submit_batch(SubmitBatchRequest { items })
        .await
        .map_err(readable)?
        .into_inner();
    let outcomes = role_ids
        .into_iter()
        .zip(batch.results)
        .map(|(role_id, r)| Outcome {
            role_id,
            code: r.code,
            reason: r.reason,
            message: r.message,
            request: r.request,
        })
        .collect();
    Ok((batch.correlation_id, outcomes))
}

/// The codes with which the service refuses a submission on its merits.
fn is_refusal(code: Code) -> bool {
    matches!(
        code,
        Code::FailedPrecondition
            | Code::PermissionDenied
            | Code::NotFound
            | Code::InvalidArgument
            | Code::AlreadyExists
    )
}

/// A line per submission, the batch's correlation id, and how to step up when a refusal asks
/// for a stronger sign-in. `retry` is the command to run again with the new token.
fn outcomes_rendered(
    outcomes: &[Outcome],
    correlation_id: &str,
    dry_run: bool,
    retry: &str,
    catalog: &RoleCatalog,
    output: Output,
    now_ms: i64,
) -> Rendered {
    let refused = outcomes.iter().filter(|o| !o.accepted()).count();
    let step_up = step_up(outcomes, retry);
    let text = match output {
        Output::Json => {
            let results: Vec<Value> = outcomes
                .iter()
                .map(|o| {
                    json!({
                        "role_id": o.role_id, "role": catalog.name(&o.role_id), "code": o.code,
                        "reason": o.reason, "message": o.message,
                        "request": o.request.as_ref().map(|r| request_json(r, catalog)),
                    })
                })
                .collect();
            json!({
                "correlation_id": correlation_id, "dry_run": dry_run,
                "results": results, "step_up": step_up,
            })
            .to_string()
                + "\n"
        }
        Output::Table => {
            let mut text = table(
                &[
                    "ROLE", "RESULT", "STATUS", "REQUEST", "CASE", "WINDOW", "DETAIL",
                ],
                &outcomes
                    .iter()
                    .map(|o| {
                        let request = o.request.clone().unwrap_or_default();
                        let found = o.request.is_some();
                        let detail = match (o.accepted(), o.reason.is_empty()) {
                            (true, _) => request.reason.clone(),
                            (false, true) => o.message.clone(),
                            (false, false) => format!("{}: {}", o.reason, o.message),
                        };
                        vec![
                            catalog.name(&o.role_id),
                            o.code.clone(),
                            if found {
                                status_name(request.status()).to_owned()
                            } else {
                                "-".to_owned()
                            },
                            match (found, dry_run) {
                                (false, _) => "-".to_owned(),
                                (true, true) => "(dry run: nothing written)".to_owned(),
                                (true, false) => request.id.clone(),
                            },
                            dash(&request.case_id),
                            if found {
                                window(&request, now_ms)
                            } else {
                                "-".to_owned()
                            },
                            detail,
                        ]
                    })
                    .collect::<Vec<_>>(),
            );
            if outcomes.len() > 1 && !correlation_id.is_empty() {
                text += &format!("\nCorrelation id: {correlation_id}\n");
            }
            if let Some(step_up) = &step_up {
                text += &format!("\n{step_up}");
            }
            text
        }
    };
    Rendered {
        text,
        refused,
        submitted: outcomes.len(),
    }
}

/// The refusals that a fresh, stronger sign-in overcomes.
const STEP_UP: [&str; 2] = ["MFA_REQUIRED", "AUTH_CONTEXT_REQUIRED"];

/// What to do when a refusal asks for a stronger sign-in: say so plainly, and how to retry.
fn step_up(outcomes: &[Outcome], retry: &str) -> Option<String> {
    let needs = |reason: &str| outcomes.iter().find(|o| o.reason == reason);
    let why = if needs("MFA_REQUIRED").is_some() {
        "This role needs a recent sign-in with MFA. Sign in again with MFA".to_owned()
    } else if let Some(o) = needs("AUTH_CONTEXT_REQUIRED") {
        format!(
            "This role needs a stronger sign-in ({}). Sign in again through the authentication context it names",
            o.message
        )
    } else {
        return None;
    };
    Some(format!(
        "{why}, then retry with the new token:\n\n  PIM_TOKEN=<new token> {retry}\n\n\
         For `pim dev`, mint one with: PIM_TOKEN=$(pim token <you> --mfa) {retry}\n"
    ))
}

/// A word for the shell, quoted only when it has to be.
fn shell_word(word: &str) -> String {
    let plain = !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:@=,+".contains(c));
    if plain {
        word.to_owned()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

async fn my_requests(
    activation: &PimClient,
    status: Option<RequestStatus>,
    role_id: String,
) -> anyhow::Result<Vec<ActivationRequest>> {
    let mut all = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = activation
            .activation()
            .list_my_requests(ListMyRequestsRequest {
                status: status.unwrap_or_default().into(),
                role_id: role_id.clone(),
                page_size: 200,
                page_token,
                ..Default::default()
            })
            .await
            .map_err(readable)?
            .into_inner();
        all.extend(page.requests);
        if page.next_page_token.is_empty() {
            return Ok(all);
        }
        page_token = page.next_page_token;
    }
}

fn dash(text: &str) -> String {
    if text.is_empty() {
        "-".to_owned()
    } else {
        text.to_owned()
    }
}

/// An instant, or nothing when absent (unlike `time`, which reads absent as permanent).
fn at(ts: Option<&Timestamp>) -> Option<String> {
    ts.map(|ts| time(Some(ts)))
}

/// The window: planned while pending, actual once granted, with the time left while live; its
/// length alone when it has no start yet.
fn window(request: &ActivationRequest, now_ms: i64) -> String {
    let length = request.duration.as_ref().map(|d| Length {
        ms: d.seconds * 1000 + i64::from(d.nanos) / 1_000_000,
    });
    match (&request.start_time, &request.end_time) {
        (Some(start), Some(end)) => {
            let mut text = format!("{} to {}", time(Some(start)), time(Some(end)));
            let end_ms = millis_from_timestamp(end);
            if request.status() == RequestStatus::PendingApproval {
                text += " (planned)";
            } else if request.status() == RequestStatus::Provisioned
                && millis_from_timestamp(start) <= now_ms
                && now_ms < end_ms
            {
                let left = Length {
                    ms: (end_ms - now_ms) / 60_000 * 60_000,
                };
                if left.ms > 0 {
                    text += &format!(" ({left} left)");
                }
            }
            text
        }
        (None, Some(end)) => format!("until {}", time(Some(end))),
        _ => match length {
            Some(length) if length.ms > 0 => format!("{length}, once approved"),
            _ => "-".to_owned(),
        },
    }
}

fn requests_table(requests: &[ActivationRequest], catalog: &RoleCatalog, now_ms: i64) -> String {
    table(
        &[
            "REQUEST", "ACTION", "ROLE", "SCOPE", "STATUS", "WINDOW", "CASE", "REASON", "CREATED",
        ],
        &requests
            .iter()
            .map(|r| {
                vec![
                    r.id.clone(),
                    action_name(r.action()).to_owned(),
                    catalog.name(&r.role_id),
                    r.scope.clone(),
                    status_name(r.status()).to_owned(),
                    window(r, now_ms),
                    dash(&r.case_id),
                    dash(&r.reason),
                    at(r.created_at.as_ref()).unwrap_or_default(),
                ]
            })
            .collect::<Vec<_>>(),
    )
}

fn show(request: &ActivationRequest, catalog: &RoleCatalog, now_ms: i64) -> String {
    let mut facts = vec![
        ("REQUEST", request.id.clone()),
        ("ACTION", action_name(request.action()).to_owned()),
        ("STATUS", status_name(request.status()).to_owned()),
        ("PRINCIPAL", request.principal_id.clone()),
        ("ROLE", catalog.name(&request.role_id)),
        ("SCOPE", request.scope.clone()),
        ("WINDOW", window(request, now_ms)),
    ];
    if let Some(start) = at(request.requested_start.as_ref()) {
        facts.push(("ASKED START", start));
    }
    if !request.schedule_id.is_empty() {
        facts.push(("SCHEDULE", request.schedule_id.clone()));
    }
    if let Some(ticket) = request.ticket.as_ref().filter(|t| !t.number.is_empty()) {
        facts.push(("TICKET", format!("{} {}", ticket.system, ticket.number)));
    }
    facts.push(("JUSTIFICATION", request.justification.clone()));
    if !request.case_id.is_empty() {
        facts.push((
            "CASE",
            format!(
                "{} (`pim approval show {}`)",
                request.case_id, request.case_id
            ),
        ));
    }
    if !request.reason.is_empty() {
        facts.push(("REASON", request.reason.clone()));
    }
    facts.push((
        "CREATED",
        at(request.created_at.as_ref()).unwrap_or_default(),
    ));
    facts.push(("CORRELATION", request.correlation_id.clone()));
    facts.push(("CLIENT KEY", request.request_id.clone()));
    facts.push(("POLICY", format!("version {}", request.policy_version)));
    let mut out: String = facts
        .iter()
        .map(|(key, value)| format!("{key:<14} {value}\n"))
        .collect();
    out += "\n";
    out += &table(
        &["AT", "STATUS", "WHO", "REASON"],
        &request
            .history
            .iter()
            .map(|e| {
                vec![
                    at(e.at.as_ref()).unwrap_or_default(),
                    status_name(e.status()).to_owned(),
                    if e.actor_id.is_empty() {
                        "(system)".to_owned()
                    } else {
                        e.actor_id.clone()
                    },
                    e.reason.clone(),
                ]
            })
            .collect::<Vec<_>>(),
    );
    out
}

/// A request as JSON, with its history; statuses and actions as Graph names them.
fn request_json(request: &ActivationRequest, catalog: &RoleCatalog) -> Value {
    json!({
        "id": request.id,
        "request_id": request.request_id,
        "principal": request.principal_id,
        "action": action_name(request.action()),
        "role_id": request.role_id,
        "role": catalog.name(&request.role_id),
        "scope": request.scope,
        "status": status_name(request.status()),
        "justification": request.justification,
        "ticket": request.ticket.as_ref().map(|t| json!({"system": t.system, "number": t.number})),
        "start_time": at(request.start_time.as_ref()),
        "end_time": at(request.end_time.as_ref()),
        "duration_secs": request.duration.as_ref().map(|d| d.seconds),
        "requested_start": at(request.requested_start.as_ref()),
        "created_at": at(request.created_at.as_ref()),
        "case_id": request.case_id,
        "reason": request.reason,
        "correlation_id": request.correlation_id,
        "schedule_id": request.schedule_id,
        "policy_version": request.policy_version,
        "history": request.history.iter().map(|e| json!({
            "at": at(e.at.as_ref()),
            "status": status_name(e.status()),
            "actor": e.actor_id,
            "reason": e.reason,
        })).collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths_read_and_print_as_people_write_them() {
        let length = |text: &str| text.parse::<Length>().map(|l| l.ms);
        assert_eq!(length("1h"), Ok(3_600_000));
        assert_eq!(length("30m"), Ok(1_800_000));
        assert_eq!(length("1h30m"), Ok(5_400_000));
        assert_eq!(
            length("2d").map(|ms| Length { ms }.to_string()),
            Ok("2d".into())
        );
        assert_eq!(Length { ms: 5_400_000 }.to_string(), "1h30m");
        for bad in ["", "1", "h", "1x", "0m", "-1h"] {
            assert!(length(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_refusal_for_want_of_a_stronger_sign_in_says_how_to_step_up() {
        let refused = |reason: &str| Outcome {
            role_id: "r".into(),
            code: "FAILED_PRECONDITION".into(),
            reason: reason.into(),
            message: "activating this role needs the authentication context c1".into(),
            request: None,
        };
        assert_eq!(step_up(&[refused("NOT_ELIGIBLE")], "pim activate r"), None);
        let mfa = step_up(&[refused("MFA_REQUIRED")], "pim activate r").unwrap_or_default();
        assert!(
            mfa.starts_with("This role needs a recent sign-in with MFA. Sign in again with MFA"),
            "{mfa}"
        );
        let context =
            step_up(&[refused("AUTH_CONTEXT_REQUIRED")], "pim activate r").unwrap_or_default();
        assert!(context.contains("authentication context c1"), "{context}");
        assert!(
            context.contains("\n  PIM_TOKEN=<new token> pim activate r\n"),
            "{context}"
        );
    }

    #[test]
    fn statuses_and_tickets_parse_from_what_people_type() {
        assert_eq!(
            parse_status("PendingApproval"),
            Ok(RequestStatus::PendingApproval)
        );
        assert_eq!(
            parse_status("pending_approval"),
            Ok(RequestStatus::PendingApproval)
        );
        assert_eq!(parse_status("timedout"), Ok(RequestStatus::TimedOut));
        assert!(parse_status("granted").is_err());
        let ticket = parse_ticket("jira:OPS-7").unwrap_or_default();
        assert_eq!(
            (ticket.system.as_str(), ticket.number.as_str()),
            ("jira", "OPS-7")
        );
        assert!(parse_ticket("OPS-7").is_err());
        assert_eq!(
            shell_word("/administrativeUnits/au-1"),
            "/administrativeUnits/au-1"
        );
        assert_eq!(shell_word("it's urgent"), r"'it'\''s urgent'");
    }
}
