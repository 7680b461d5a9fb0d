//! The approver's commands: `pim approvals` (the cases awaiting me), `pim approval show ID`,
//! and `pim approve|deny ID… --justification TEXT`. Like the admin commands, each renders to a
//! string, so tests drive exactly what a person sees. A decision the service refuses is a line
//! of the output with its code and reason, and makes the command fail; it is never retried or
//! hidden.

use std::collections::HashMap;

use clap::Subcommand;
use pim_client::PimClient;
use pim_proto::{
    Timestamp,
    approval::v1::{
        Case, CaseKind, CaseStage, CaseStatus, DecideBulkRequest, DecideRequest, Decision,
        DecisionResult, GetCaseRequest, ListAwaitingMeRequest,
    },
};
use serde_json::{Value, json};
use tonic::Code;

use crate::admin::{Output, code_name, readable, reason, role_id, roles, table, time};

#[derive(Debug, Subcommand)]
pub enum ApprovalCommand {
    /// The open cases whose current stage awaits my decision.
    Approvals {
        /// Only requests for this role (id or display name).
        #[arg(long)]
        role: Option<String>,
        /// Only requests made by this principal.
        #[arg(long)]
        requestor: Option<String>,
    },
    /// One approval case: `pim approval show ID`.
    Approval {
        #[command(subcommand)]
        command: CaseCommand,
    },
    /// Approve the current stage of each case (several ids are decided in one call).
    Approve {
        /// Case ids, as `pim approvals` lists them.
        #[arg(required = true, value_name = "ID")]
        ids: Vec<String>,
        /// Why; recorded in each case's history.
        #[arg(long, short)]
        justification: String,
    },
    /// Deny each case; one denial ends a case.
    Deny {
        /// Case ids, as `pim approvals` lists them.
        #[arg(required = true, value_name = "ID")]
        ids: Vec<String>,
        /// Why; recorded in each case's history.
        #[arg(long, short)]
        justification: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum CaseCommand {
    /// The case with its stages, approvers and full history.
    Show { id: String },
}

/// What a command printed, and how many of its decisions the service refused.
#[derive(Debug)]
pub struct Rendered {
    pub text: String,
    pub refused: usize,
    pub decisions: usize,
}

impl Rendered {
    fn text(text: String) -> Self {
        Self {
            text,
            refused: 0,
            decisions: 0,
        }
    }

    /// The plain statement a command ends with when any decision was refused.
    pub fn failure(&self) -> Option<String> {
        (self.refused > 0).then(|| {
            format!(
                "{} of {} decisions refused; the lines above say why",
                self.refused, self.decisions
            )
        })
    }
}

/// Runs one approver's command. `approval` calls the approval service; `assignment` is asked
/// only for role names.
pub async fn run(
    command: ApprovalCommand,
    approval: &PimClient,
    assignment: &PimClient,
    output: Output,
    now_ms: i64,
) -> anyhow::Result<Rendered> {
    match command {
        ApprovalCommand::Approvals { role, requestor } => {
            let role_id = match role {
                Some(role) => role_id(assignment, &role).await?,
                None => String::new(),
            };
            let cases = awaiting_me(approval, role_id, requestor.unwrap_or_default()).await?;
            let names = role_names(assignment).await?;
            Ok(Rendered::text(match output {
                Output::Json => {
                    let list: Vec<Value> = cases.iter().map(|c| case_json(c, &names)).collect();
                    Value::Array(list).to_string() + "\n"
                }
                Output::Table if cases.is_empty() => "Nothing awaits your decision.\n".to_owned(),
                Output::Table => table(
                    &[
                        "CASE",
                        "REQUESTOR",
                        "ROLE",
                        "SCOPE",
                        "STAGE",
                        "APPROVALS",
                        "DEADLINE",
                        "JUSTIFICATION",
                    ],
                    &cases
                        .iter()
                        .map(|c| {
                            let summary = c.summary.clone().unwrap_or_default();
                            let stage = current(c);
                            vec![
                                c.id.clone(),
                                summary.requestor_id,
                                role_name(&names, &summary.role_id),
                                summary.scope,
                                format!("{}/{}", c.current_stage + 1, c.stages.len()),
                                stage
                                    .map(|s| format!("{}/{}", s.approvals, s.quorum))
                                    .unwrap_or_default(),
                                stage
                                    .map(|s| deadline(s.deadline.as_ref(), now_ms))
                                    .unwrap_or_default(),
                                clip(&summary.justification, 40),
                            ]
                        })
                        .collect::<Vec<_>>(),
                ),
            }))
        }
        ApprovalCommand::Approval {
            command: CaseCommand::Show { id },
        } => {
            let case = approval
                .approval()
                .get_case(GetCaseRequest { case_id: id })
                .await
                .map_err(readable)?
                .into_inner()
                .case
                .unwrap_or_default();
            let names = role_names(assignment).await?;
            Ok(Rendered::text(match output {
                Output::Json => case_json(&case, &names).to_string() + "\n",
                Output::Table => show(&case, &names, now_ms),
            }))
        }
        ApprovalCommand::Approve { ids, justification } => {
            decide(approval, ids, Decision::Approve, justification, output).await
        }
        ApprovalCommand::Deny { ids, justification } => {
            decide(approval, ids, Decision::Deny, justification, output).await
        }
    }
}

async fn awaiting_me(
    approval: &PimClient,
    role_id: String,
    requestor_id: String,
) -> anyhow::Result<Vec<Case>> {
    let mut all = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = approval
            .approval()
            .list_awaiting_me(ListAwaitingMeRequest {
                page_size: 200,
                page_token,
                role_id: role_id.clone(),
                requestor_id: requestor_id.clone(),
                ..Default::default()
            })
            .await
            .map_err(readable)?
            .into_inner();
        all.extend(page.cases);
        if page.next_page_token.is_empty() {
            return Ok(all);
        }
        page_token = page.next_page_token;
    }
}

/// One id goes through `Decide`, several through `DecideBulk`; either way each case gets a
/// result line. A refusal of the single call is reported like a refusal inside a bulk call;
/// any other failure (no answer, a bad token) is an error of the command.
async fn decide(
    approval: &PimClient,
    ids: Vec<String>,
    decision: Decision,
    justification: String,
    output: Output,
) -> anyhow::Result<Rendered> {
    let mut requests: Vec<DecideRequest> = ids
        .into_iter()
        .map(|case_id| DecideRequest {
            case_id,
            decision: decision.into(),
            justification: justification.clone(),
        })
        .collect();
    let results = if requests.len() == 1 {
        let request = requests.remove(0);
        let case_id = request.case_id.clone();
        match approval.approval().decide(request).await {
            Ok(response) => vec![DecisionResult {
                case_id,
                code: code_name(Code::Ok).into(),
                case: response.into_inner().case,
                ..Default::default()
            }],
            Err(status) if is_refusal(status.code()) => vec![DecisionResult {
                case_id,
                code: code_name(status.code()).into(),
                reason: reason(&status),
                message: status.message().to_owned(),
                case: None,
            }],
            Err(status) => return Err(readable(status)),
        }
    } else {
        approval
            .approval()
            .decide_bulk(DecideBulkRequest {
                decisions: requests,
            })
            .await
            .map_err(readable)?
            .into_inner()
            .results
    };
    let accepted = |r: &DecisionResult| r.code == code_name(Code::Ok);
    let refused = results.iter().filter(|r| !accepted(r)).count();
    let verb = match decision {
        Decision::Deny => "deny",
        _ => "approve",
    };
    let text = match output {
        Output::Json => {
            let list: Vec<Value> = results
                .iter()
                .map(|r| {
                    json!({
                        "case": r.case_id, "decision": verb, "code": r.code,
                        "status": r.case.as_ref().map(state),
                        "reason": r.reason, "message": r.message,
                    })
                })
                .collect();
            Value::Array(list).to_string() + "\n"
        }
        Output::Table => table(
            &["CASE", "DECISION", "RESULT", "DETAIL"],
            &results
                .iter()
                .map(|r| {
                    let detail = match &r.case {
                        Some(case) if accepted(r) => state(case),
                        _ if r.reason.is_empty() => r.message.clone(),
                        _ => format!("{}: {}", r.reason, r.message),
                    };
                    vec![r.case_id.clone(), verb.to_owned(), r.code.clone(), detail]
                })
                .collect::<Vec<_>>(),
        ),
    };
    Ok(Rendered {
        text,
        refused,
        decisions: results.len(),
    })
}

/// The codes with which the service refuses a decision on its merits.
fn is_refusal(code: Code) -> bool {
    matches!(
        code,
        Code::FailedPrecondition | Code::PermissionDenied | Code::NotFound | Code::InvalidArgument
    )
}

/// Role id to display name, from the catalog.
async fn role_names(assignment: &PimClient) -> anyhow::Result<HashMap<String, String>> {
    Ok(roles(assignment, false)
        .await?
        .into_iter()
        .map(|r| (r.id, r.display_name))
        .collect())
}

fn role_name(names: &HashMap<String, String>, id: &str) -> String {
    names.get(id).cloned().unwrap_or_else(|| id.to_owned())
}

/// The stage awaiting decisions, while there is one.
fn current(case: &Case) -> Option<&CaseStage> {
    if case.status() != CaseStatus::Pending {
        return None;
    }
    case.stages.get(case.current_stage as usize)
}

fn status_word(status: CaseStatus) -> &'static str {
    match status {
        CaseStatus::Pending => "pending",
        CaseStatus::Approved => "approved",
        CaseStatus::Denied => "denied",
        CaseStatus::TimedOut => "timed out",
        CaseStatus::Canceled => "canceled",
        CaseStatus::Unspecified => "unknown",
    }
}

/// `approved`, or `pending, stage 2 of 2` while a stage awaits decisions.
fn state(case: &Case) -> String {
    match current(case) {
        Some(_) => format!(
            "pending, stage {} of {}",
            case.current_stage + 1,
            case.stages.len()
        ),
        None => status_word(case.status()).to_owned(),
    }
}

fn kind_word(kind: CaseKind) -> &'static str {
    match kind {
        CaseKind::Activation => "activation",
        CaseKind::Extension => "extension",
        CaseKind::Renewal => "renewal",
        CaseKind::Unspecified => "unknown",
    }
}

/// An instant, or nothing when absent (unlike `time`, which reads absent as permanent).
fn at(ts: Option<&Timestamp>) -> Option<String> {
    ts.map(|ts| time(Some(ts)))
}

/// A deadline with the time left, as an approver needs it.
fn deadline(ts: Option<&Timestamp>, now_ms: i64) -> String {
    let Some(ts) = ts else {
        return "-".to_owned();
    };
    let left_ms = pim_proto::millis_from_timestamp(ts) - now_ms;
    let left = if left_ms <= 0 {
        "passed".to_owned()
    } else {
        let minutes = left_ms / 60_000;
        format!("in {}h{:02}m", minutes / 60, minutes % 60)
    };
    format!("{} ({left})", time(Some(ts)))
}

/// At most `max` characters, marked when cut; tables stay readable, `show` prints it whole.
fn clip(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    text.chars().take(max - 3).collect::<String>() + "..."
}

fn approvers(stage: &CaseStage) -> String {
    if stage.approvers.is_empty() {
        return "-".to_owned();
    }
    stage
        .approvers
        .iter()
        .map(|a| {
            let mut who = a.principal_id.clone();
            if !a.via_group_id.is_empty() {
                who += &format!(" (via {})", a.via_group_id);
            }
            if a.escalation {
                who += " (escalation)";
            }
            who
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn show(case: &Case, names: &HashMap<String, String>, now_ms: i64) -> String {
    let summary = case.summary.clone().unwrap_or_default();
    let mut facts = vec![
        ("CASE", case.id.clone()),
        (
            "REQUEST",
            format!("{} ({})", case.request_id, kind_word(case.kind())),
        ),
        ("STATUS", state(case)),
        ("REQUESTOR", summary.requestor_id.clone()),
        ("ROLE", role_name(names, &summary.role_id)),
        ("SCOPE", summary.scope.clone()),
    ];
    if summary.start_time.is_some() || summary.end_time.is_some() {
        facts.push((
            "WINDOW",
            format!(
                "{} to {}",
                at(summary.start_time.as_ref()).unwrap_or_else(|| "now".to_owned()),
                time(summary.end_time.as_ref())
            ),
        ));
    }
    if !summary.ticket_number.is_empty() {
        facts.push((
            "TICKET",
            format!("{} {}", summary.ticket_system, summary.ticket_number),
        ));
    }
    facts.push(("JUSTIFICATION", summary.justification.clone()));
    facts.push(("OPENED", time(case.opened_at.as_ref())));
    if let Some(decided) = at(case.decided_at.as_ref()) {
        facts.push(("DECIDED", format!("{decided} by {}", who(&case.decided_by))));
    }
    let mut out: String = facts
        .iter()
        .map(|(key, value)| format!("{key:<14} {value}\n"))
        .collect();

    out += "\n";
    out += &table(
        &[
            "STAGE",
            "QUORUM",
            "APPROVALS",
            "STATE",
            "DEADLINE",
            "APPROVERS",
        ],
        &case
            .stages
            .iter()
            .map(|s| {
                let is_current = current(case).is_some_and(|c| c.index == s.index);
                let mut progress = if s.completed {
                    "completed"
                } else if is_current {
                    "current"
                } else if case.status() == CaseStatus::Pending {
                    "waiting"
                } else {
                    "-"
                }
                .to_owned();
                if s.escalated {
                    progress += ", escalated";
                }
                // Only the current stage's deadline is one an approver can still meet.
                let due = if is_current {
                    deadline(s.deadline.as_ref(), now_ms)
                } else {
                    at(s.deadline.as_ref()).unwrap_or_else(|| "-".to_owned())
                };
                vec![
                    (s.index + 1).to_string(),
                    s.quorum.to_string(),
                    s.approvals.to_string(),
                    progress,
                    due,
                    approvers(s),
                ]
            })
            .collect::<Vec<_>>(),
    );

    out += "\n";
    out += &table(
        &["SEQ", "AT", "WHO", "WHAT", "STAGE", "JUSTIFICATION"],
        &case
            .history
            .iter()
            .map(|e| {
                vec![
                    e.seq.to_string(),
                    time(e.at.as_ref()),
                    who(&e.actor_id),
                    e.action.clone(),
                    (e.stage + 1).to_string(),
                    e.justification.clone(),
                ]
            })
            .collect::<Vec<_>>(),
    );
    out
}

/// An actor; the empty actor is the system's timers.
fn who(actor: &str) -> String {
    if actor.is_empty() {
        "(system)".to_owned()
    } else {
        actor.to_owned()
    }
}

/// A case as JSON, with stages and history; stages are numbered from 1 as in the table.
fn case_json(case: &Case, names: &HashMap<String, String>) -> Value {
    let summary = case.summary.clone().unwrap_or_default();
    json!({
        "id": case.id,
        "request_id": case.request_id,
        "kind": kind_word(case.kind()),
        "status": status_word(case.status()),
        "current_stage": current(case).map(|s| s.index + 1),
        "requestor": summary.requestor_id,
        "role_id": summary.role_id,
        "role": role_name(names, &summary.role_id),
        "scope": summary.scope,
        "start_time": at(summary.start_time.as_ref()),
        "end_time": at(summary.end_time.as_ref()),
        "justification": summary.justification,
        "ticket_system": summary.ticket_system,
        "ticket_number": summary.ticket_number,
        "opened_at": at(case.opened_at.as_ref()),
        "decided_at": at(case.decided_at.as_ref()),
        "decided_by": case.decided_by,
        "stages": case.stages.iter().map(|s| json!({
            "stage": s.index + 1,
            "quorum": s.quorum,
            "approvals": s.approvals,
            "completed": s.completed,
            "escalated": s.escalated,
            "deadline": at(s.deadline.as_ref()),
            "approvers": s.approvers.iter().map(|a| json!({
                "principal": a.principal_id, "via_group": a.via_group_id, "escalation": a.escalation,
            })).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
        "history": case.history.iter().map(|e| json!({
            "seq": e.seq,
            "at": at(e.at.as_ref()),
            "actor": e.actor_id,
            "action": e.action,
            "stage": e.stage + 1,
            "justification": e.justification,
        })).collect::<Vec<_>>(),
    })
}
