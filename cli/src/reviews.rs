//! Access reviews from the command line: admins define them (`pim reviews create`, `list`,
//! `show`) and read their results (`pim reviews results ID --csv`); reviewers see their items
//! (`pim reviews items`) and decide them (`pim review decide`, `pim review
//! accept-recommendations`). Like the approver's commands, each renders to a string, so tests
//! drive exactly what a person sees; a refused decision is a line of the output with its code
//! and reason, and makes the command fail.

use clap::{Args, Subcommand, ValueEnum};
use pim_client::PimClient;
use pim_proto::{
    Timestamp,
    approval::v1::{
        AcceptRecommendationsRequest, CreateReviewDefinitionRequest, DecideReviewItemsRequest,
        DefaultDecision, GetReviewDefinitionRequest, ListReviewDefinitionsRequest,
        ListReviewInstancesRequest, ListReviewItemsRequest, ReviewDecision, ReviewDefinition,
        ReviewInstance, ReviewInstanceStatus, ReviewItem, ReviewItemDecision, ReviewRecurrence,
        ReviewSettings, ReviewerKind,
    },
    assignment::v1::{Approver, ScheduleKind, approver::Subject},
};
use serde_json::{Value, json};
use tonic::Code;

use crate::{
    admin::{Output, RoleCatalog, code_name, readable, table, time},
    approvals::Rendered,
};

#[derive(Debug, Subcommand)]
pub enum ReviewCommand {
    /// Access reviews: create, list, show, items, results.
    Reviews {
        #[command(subcommand)]
        command: ReviewsCommand,
    },
    /// Decide review items: decide, accept-recommendations.
    Review {
        #[command(subcommand)]
        command: ReviewItemCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum ReviewsCommand {
    /// Define a review of who holds ROLEs at SCOPE (admins).
    Create(Definition),
    /// Every review definition (admins).
    List,
    /// A definition with its instances (admins).
    Show { definition_id: String },
    /// Review items: mine, or every item of INSTANCE_ID for admins.
    Items { instance_id: Option<String> },
    /// Every item of an instance with its decision and what was applied (admins).
    Results {
        instance_id: String,
        /// Comma-separated values, one row per item, for a spreadsheet or an auditor.
        #[arg(long)]
        csv: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum ReviewItemCommand {
    /// Decide items routed to you (several in one call); a line per item.
    Decide {
        /// Item ids, as `pim reviews items` lists them.
        #[arg(required = true, value_name = "ITEM_ID")]
        ids: Vec<String>,
        #[command(flatten)]
        verdict: Verdict,
        /// Why; a review may require it to approve.
        #[arg(long, short)]
        justification: String,
    },
    /// Decide every undecided item of INSTANCE_ID routed to you as its recommendation says.
    AcceptRecommendations { instance_id: String },
}

/// One of `--approve`, `--deny`, `--dont-know`.
#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
pub struct Verdict {
    /// Keep the access.
    #[arg(long)]
    pub approve: bool,
    /// Remove the access (when the review's results are applied).
    #[arg(long)]
    pub deny: bool,
    /// Leave it to the review's default decision.
    #[arg(long)]
    pub dont_know: bool,
}

impl Verdict {
    fn decision(&self) -> ReviewDecision {
        if self.approve {
            ReviewDecision::Approve
        } else if self.deny {
            ReviewDecision::Deny
        } else {
            ReviewDecision::DontKnow
        }
    }
}

/// `pim reviews create`.
#[derive(Debug, Args)]
pub struct Definition {
    /// The review's name, as reviewers see it.
    #[arg(long)]
    pub name: String,
    /// A role to review (id or display name); repeat for several.
    #[arg(long = "role", required = true, value_name = "ROLE")]
    pub roles: Vec<String>,
    /// The scope whose assignments are reviewed.
    #[arg(long)]
    pub scope: String,
    /// Review eligible assignments (with neither --eligible nor --active: both).
    #[arg(long)]
    pub eligible: bool,
    /// Review active assignments.
    #[arg(long)]
    pub active: bool,
    /// Who reviews: `self`, `admins`, or users (and `group:ID`s) separated by commas.
    #[arg(long, default_value = "admins", value_parser = parse_reviewers)]
    pub reviewers: Reviewers,
    /// How often an instance starts.
    #[arg(long, value_enum, default_value = "one-time")]
    pub recurrence: Recurrence,
    /// How long each instance runs.
    #[arg(long, default_value_t = 7)]
    pub duration_days: u32,
    /// What happens to items nobody decided.
    #[arg(long, value_enum, default_value = "none")]
    pub default_decision: DefaultChoice,
    /// Remove denied access when an instance ends.
    #[arg(long)]
    pub auto_apply: bool,
    /// Recommend from the activation history.
    #[arg(long)]
    pub recommendations: bool,
    /// Approvals need a justification.
    #[arg(long)]
    pub justification_required: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reviewers {
    SelfReview,
    Admins,
    Named(Vec<Approver>),
}

fn parse_reviewers(text: &str) -> Result<Reviewers, String> {
    match text.trim() {
        "self" => Ok(Reviewers::SelfReview),
        "admins" => Ok(Reviewers::Admins),
        list => {
            let named: Vec<Approver> = list
                .split(',')
                .map(str::trim)
                .filter(|who| !who.is_empty())
                .map(|who| Approver {
                    subject: Some(match who.strip_prefix("group:") {
                        Some(group) => Subject::GroupId(group.to_owned()),
                        None => Subject::UserId(who.to_owned()),
                    }),
                })
                .collect();
            if named.is_empty() {
                return Err("name `self`, `admins`, or users and group:IDs".to_owned());
            }
            Ok(Reviewers::Named(named))
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Recurrence {
    OneTime,
    Weekly,
    Monthly,
    Quarterly,
    SemiAnnually,
    Annually,
}

impl From<Recurrence> for ReviewRecurrence {
    fn from(recurrence: Recurrence) -> Self {
        match recurrence {
            Recurrence::OneTime => Self::OneTime,
            Recurrence::Weekly => Self::Weekly,
            Recurrence::Monthly => Self::Monthly,
            Recurrence::Quarterly => Self::Quarterly,
            Recurrence::SemiAnnually => Self::SemiAnnually,
            Recurrence::Annually => Self::Annually,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DefaultChoice {
    None,
    Approve,
    Deny,
    Recommendation,
}

impl From<DefaultChoice> for DefaultDecision {
    fn from(choice: DefaultChoice) -> Self {
        match choice {
            DefaultChoice::None => Self::None,
            DefaultChoice::Approve => Self::Approve,
            DefaultChoice::Deny => Self::Deny,
            DefaultChoice::Recommendation => Self::Recommendation,
        }
    }
}

/// Runs one review command. `approval` calls the approval service; `assignment` is asked only
/// for the role catalog.
pub async fn run(
    command: ReviewCommand,
    approval: &PimClient,
    assignment: &PimClient,
    output: Output,
) -> anyhow::Result<Rendered> {
    let catalog = RoleCatalog::fetch(assignment).await?;
    let text = match command {
        ReviewCommand::Reviews {
            command: ReviewsCommand::Create(definition),
        } => {
            let request = definition_of(definition, &catalog)?;
            let created = approval
                .approval()
                .create_review_definition(CreateReviewDefinitionRequest {
                    definition: Some(request),
                })
                .await
                .map_err(readable)?
                .into_inner()
                .definition
                .unwrap_or_default();
            match output {
                Output::Json => definition_json(&created, &catalog, &[]).to_string() + "\n",
                Output::Table => {
                    definition_facts(&created, &catalog)
                        + &format!(
                            "\nThe first instance starts at {}; `pim reviews show {}` lists it.\n",
                            time(created.start_time.as_ref()),
                            created.id
                        )
                }
            }
        }
        ReviewCommand::Reviews {
            command: ReviewsCommand::List,
        } => {
            let definitions = approval
                .approval()
                .list_review_definitions(ListReviewDefinitionsRequest {})
                .await
                .map_err(readable)?
                .into_inner()
                .definitions;
            match output {
                Output::Json => {
                    let list: Vec<Value> = definitions
                        .iter()
                        .map(|d| definition_json(d, &catalog, &[]))
                        .collect();
                    Value::Array(list).to_string() + "\n"
                }
                Output::Table if definitions.is_empty() => {
                    "No access reviews are defined.\n".to_owned()
                }
                Output::Table => table(
                    &[
                        "DEFINITION",
                        "NAME",
                        "ROLES",
                        "SCOPE",
                        "REVIEWERS",
                        "RECURRENCE",
                        "STATE",
                    ],
                    &definitions
                        .iter()
                        .map(|d| {
                            vec![
                                d.id.clone(),
                                d.display_name.clone(),
                                role_names(d, &catalog),
                                d.scope.clone(),
                                reviewers_text(d),
                                recurrence_name(d.recurrence()).to_owned(),
                                state(d).to_owned(),
                            ]
                        })
                        .collect::<Vec<_>>(),
                ),
            }
        }
        ReviewCommand::Reviews {
            command: ReviewsCommand::Show { definition_id },
        } => {
            let definition = approval
                .approval()
                .get_review_definition(GetReviewDefinitionRequest {
                    id: definition_id.clone(),
                })
                .await
                .map_err(readable)?
                .into_inner()
                .definition
                .unwrap_or_default();
            let instances = approval
                .approval()
                .list_review_instances(ListReviewInstancesRequest { definition_id })
                .await
                .map_err(readable)?
                .into_inner()
                .instances;
            match output {
                Output::Json => {
                    definition_json(&definition, &catalog, &instances).to_string() + "\n"
                }
                Output::Table => {
                    let mut text = definition_facts(&definition, &catalog) + "\n";
                    if instances.is_empty() {
                        text += "No instance has started yet.\n";
                    } else {
                        text += &instances_table(&instances);
                    }
                    text
                }
            }
        }
        ReviewCommand::Reviews {
            command: ReviewsCommand::Items { instance_id },
        } => {
            let mine = instance_id.is_none();
            let items = items(approval, instance_id.unwrap_or_default()).await?;
            match output {
                Output::Json => items_json(&items, &catalog),
                Output::Table if items.is_empty() && mine => {
                    "Nothing awaits your review.\n".to_owned()
                }
                Output::Table if items.is_empty() => {
                    "The instance has no items you may see.\n".to_owned()
                }
                Output::Table => items_table(&items, &catalog),
            }
        }
        ReviewCommand::Reviews {
            command: ReviewsCommand::Results { instance_id, csv },
        } => {
            let items = items(approval, instance_id).await?;
            match output {
                _ if csv => results_csv(&items, &catalog),
                Output::Json => items_json(&items, &catalog),
                Output::Table => results_table(&items, &catalog),
            }
        }
        ReviewCommand::Review {
            command:
                ReviewItemCommand::Decide {
                    ids,
                    verdict,
                    justification,
                },
        } => {
            return decide(
                approval,
                &catalog,
                ids,
                verdict.decision(),
                justification,
                output,
            )
            .await;
        }
        ReviewCommand::Review {
            command: ReviewItemCommand::AcceptRecommendations { instance_id },
        } => {
            let decided = approval
                .approval()
                .accept_recommendations(AcceptRecommendationsRequest { instance_id })
                .await
                .map_err(readable)?
                .into_inner()
                .items;
            match output {
                Output::Json => items_json(&decided, &catalog),
                Output::Table if decided.is_empty() => {
                    "No undecided item of yours had a recommendation.\n".to_owned()
                }
                Output::Table => {
                    items_table(&decided, &catalog)
                        + &format!("\n{} items decided as recommended.\n", decided.len())
                }
            }
        }
    };
    Ok(Rendered {
        text,
        refused: 0,
        decisions: 0,
    })
}

fn definition_of(d: Definition, catalog: &RoleCatalog) -> anyhow::Result<ReviewDefinition> {
    let role_ids = d
        .roles
        .iter()
        .map(|role| catalog.id(role))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let both = !d.eligible && !d.active;
    let (reviewer_kind, reviewers) = match d.reviewers {
        Reviewers::SelfReview => (ReviewerKind::Self_, Vec::new()),
        Reviewers::Admins => (ReviewerKind::Admins, Vec::new()),
        Reviewers::Named(named) => (ReviewerKind::Named, named),
    };
    Ok(ReviewDefinition {
        display_name: d.name,
        role_ids,
        scope: d.scope,
        include_eligible: d.eligible || both,
        include_active: d.active || both,
        reviewer_kind: reviewer_kind.into(),
        reviewers,
        recurrence: ReviewRecurrence::from(d.recurrence).into(),
        instance_duration_days: d.duration_days,
        settings: Some(ReviewSettings {
            justification_required_on_approval: d.justification_required,
            default_decision: DefaultDecision::from(d.default_decision).into(),
            auto_apply: d.auto_apply,
            recommendations_enabled: d.recommendations,
            ..Default::default()
        }),
        ..Default::default()
    })
}

/// The items of an instance; with no instance, the items routed to the caller.
async fn items(approval: &PimClient, instance_id: String) -> anyhow::Result<Vec<ReviewItem>> {
    Ok(approval
        .approval()
        .list_review_items(ListReviewItemsRequest { instance_id })
        .await
        .map_err(readable)?
        .into_inner()
        .items)
}

/// All the decisions go in one `DecideReviewItems` call, with a result line per item. Any
/// failure of the call itself (no answer, a bad token) is an error of the command.
async fn decide(
    approval: &PimClient,
    catalog: &RoleCatalog,
    ids: Vec<String>,
    decision: ReviewDecision,
    justification: String,
    output: Output,
) -> anyhow::Result<Rendered> {
    let decisions = ids
        .into_iter()
        .map(|item_id| ReviewItemDecision {
            item_id,
            decision: decision.into(),
            justification: justification.clone(),
        })
        .collect();
    let results = approval
        .approval()
        .decide_review_items(DecideReviewItemsRequest { decisions })
        .await
        .map_err(readable)?
        .into_inner()
        .results;
    let accepted = |code: &str| code == code_name(Code::Ok);
    let refused = results.iter().filter(|r| !accepted(&r.code)).count();
    let verb = decision_name(decision);
    let text = match output {
        Output::Json => {
            let list: Vec<Value> = results
                .iter()
                .map(|r| {
                    json!({
                        "item": r.item_id, "decision": verb, "code": r.code,
                        "reason": r.reason, "message": r.message,
                        "principal": r.item.as_ref().map(|i| i.principal_id.clone()),
                    })
                })
                .collect();
            Value::Array(list).to_string() + "\n"
        }
        Output::Table => table(
            &["ITEM", "DECISION", "RESULT", "DETAIL"],
            &results
                .iter()
                .map(|r| {
                    let detail = match &r.item {
                        Some(item) if accepted(&r.code) => format!(
                            "{}: {} at {} ({})",
                            item.principal_id,
                            catalog.name(&item.role_id),
                            item.scope,
                            kind_name(item.kind()).to_ascii_lowercase()
                        ),
                        _ if r.reason.is_empty() => r.message.clone(),
                        _ => format!("{}: {}", r.reason, r.message),
                    };
                    vec![r.item_id.clone(), verb.to_owned(), r.code.clone(), detail]
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

/// Graph's name of a review decision; empty for none.
fn decision_name(decision: ReviewDecision) -> &'static str {
    match decision {
        ReviewDecision::Approve => "Approve",
        ReviewDecision::Deny => "Deny",
        ReviewDecision::DontKnow => "DontKnow",
        ReviewDecision::NotReviewed => "NotReviewed",
        ReviewDecision::Unspecified => "",
    }
}

fn default_name(decision: DefaultDecision) -> &'static str {
    match decision {
        DefaultDecision::Approve => "Approve",
        DefaultDecision::Deny => "Deny",
        DefaultDecision::Recommendation => "Recommendation",
        DefaultDecision::None | DefaultDecision::Unspecified => "None",
    }
}

fn recurrence_name(recurrence: ReviewRecurrence) -> &'static str {
    match recurrence {
        ReviewRecurrence::OneTime => "one-time",
        ReviewRecurrence::Weekly => "weekly",
        ReviewRecurrence::Monthly => "monthly",
        ReviewRecurrence::Quarterly => "quarterly",
        ReviewRecurrence::SemiAnnually => "semi-annually",
        ReviewRecurrence::Annually => "annually",
        ReviewRecurrence::Unspecified => "unknown",
    }
}

fn instance_status_name(status: ReviewInstanceStatus) -> &'static str {
    match status {
        ReviewInstanceStatus::InProgress => "InProgress",
        ReviewInstanceStatus::Completed => "Completed",
        ReviewInstanceStatus::Applied => "Applied",
        ReviewInstanceStatus::Unspecified => "Unknown",
    }
}

fn kind_name(kind: ScheduleKind) -> &'static str {
    match kind {
        ScheduleKind::Eligible => "Eligible",
        ScheduleKind::Active => "Active",
        ScheduleKind::Unspecified => "Unknown",
    }
}

fn state(d: &ReviewDefinition) -> &'static str {
    if d.stopped { "stopped" } else { "running" }
}

fn role_names(d: &ReviewDefinition, catalog: &RoleCatalog) -> String {
    d.role_ids
        .iter()
        .map(|id| catalog.name(id))
        .collect::<Vec<_>>()
        .join(", ")
}

fn approvers_text(approvers: &[Approver]) -> String {
    approvers
        .iter()
        .filter_map(|a| match &a.subject {
            Some(Subject::UserId(user)) => Some(user.clone()),
            Some(Subject::GroupId(group)) => Some(format!("group:{group}")),
            None => None,
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn reviewers_text(d: &ReviewDefinition) -> String {
    match d.reviewer_kind() {
        ReviewerKind::Self_ => "self".to_owned(),
        ReviewerKind::Admins => "admins".to_owned(),
        ReviewerKind::Named => approvers_text(&d.reviewers),
        ReviewerKind::Unspecified => "unknown".to_owned(),
    }
}

fn definition_facts(d: &ReviewDefinition, catalog: &RoleCatalog) -> String {
    let settings = d.settings.unwrap_or_default();
    let reviewed = match (d.include_eligible, d.include_active) {
        (true, true) => "eligible and active assignments",
        (true, false) => "eligible assignments",
        (false, true) => "active assignments",
        (false, false) => "nothing",
    };
    let mut options = Vec::new();
    if settings.auto_apply {
        options.push("auto-apply");
    }
    if settings.recommendations_enabled {
        options.push("recommendations");
    }
    if settings.justification_required_on_approval {
        options.push("justification required");
    }
    let facts = [
        ("DEFINITION", d.id.clone()),
        ("NAME", d.display_name.clone()),
        ("ROLES", role_names(d, catalog)),
        ("SCOPE", d.scope.clone()),
        ("REVIEWS", reviewed.to_owned()),
        ("REVIEWERS", reviewers_text(d)),
        ("RECURRENCE", recurrence_name(d.recurrence()).to_owned()),
        ("DURATION", format!("{} days", d.instance_duration_days)),
        ("STARTS", time(d.start_time.as_ref())),
        (
            "DEFAULT",
            default_name(settings.default_decision()).to_owned(),
        ),
        (
            "OPTIONS",
            if options.is_empty() {
                "-".to_owned()
            } else {
                options.join(", ")
            },
        ),
        ("STATE", state(d).to_owned()),
        (
            "CREATED",
            format!("{} by {}", time(d.created_at.as_ref()), d.created_by),
        ),
    ];
    facts
        .iter()
        .map(|(key, value)| format!("{key:<14} {value}\n"))
        .collect()
}

fn instances_table(instances: &[ReviewInstance]) -> String {
    table(
        &[
            "INSTANCE", "START", "END", "STATUS", "ITEMS", "DECIDED", "DENIED", "APPLIED",
        ],
        &instances
            .iter()
            .map(|i| {
                vec![
                    i.id.clone(),
                    time(i.start_time.as_ref()),
                    time(i.end_time.as_ref()),
                    instance_status_name(i.status()).to_owned(),
                    i.items.to_string(),
                    i.decided.to_string(),
                    i.denied.to_string(),
                    i.applied.to_string(),
                ]
            })
            .collect::<Vec<_>>(),
    )
}

fn or_dash(text: &str) -> String {
    if text.is_empty() {
        "-".to_owned()
    } else {
        text.to_owned()
    }
}

fn items_table(items: &[ReviewItem], catalog: &RoleCatalog) -> String {
    table(
        &[
            "ITEM",
            "INSTANCE",
            "PRINCIPAL",
            "ROLE",
            "SCOPE",
            "KIND",
            "DECISION",
            "RECOMMENDATION",
        ],
        &items
            .iter()
            .map(|i| {
                let recommendation = match decision_name(i.recommendation()) {
                    "" => "-".to_owned(),
                    word => format!("{word} ({})", i.recommendation_reason),
                };
                vec![
                    i.id.clone(),
                    i.instance_id.clone(),
                    i.principal_id.clone(),
                    catalog.name(&i.role_id),
                    i.scope.clone(),
                    kind_name(i.kind()).to_owned(),
                    decision_name(i.decision()).to_owned(),
                    recommendation,
                ]
            })
            .collect::<Vec<_>>(),
    )
}

/// Who decided an item; nobody when the review's default decided it at the end.
fn decided_by(item: &ReviewItem) -> String {
    match (item.decided_by.as_str(), &item.decided_at) {
        ("", Some(_)) => "(default decision)".to_owned(),
        ("", None) => "-".to_owned(),
        (who, _) => who.to_owned(),
    }
}

fn applied_text(item: &ReviewItem) -> String {
    match (item.applied, item.apply_result.as_str()) {
        (true, "") => "applied".to_owned(),
        (true, result) => format!("applied: {result}"),
        (false, "") => "-".to_owned(),
        (false, result) => format!("not applied: {result}"),
    }
}

fn results_table(items: &[ReviewItem], catalog: &RoleCatalog) -> String {
    table(
        &[
            "ITEM",
            "PRINCIPAL",
            "ROLE",
            "SCOPE",
            "DECISION",
            "DECIDED BY",
            "JUSTIFICATION",
            "RECOMMENDATION",
            "APPLIED",
        ],
        &items
            .iter()
            .map(|i| {
                vec![
                    i.id.clone(),
                    i.principal_id.clone(),
                    catalog.name(&i.role_id),
                    i.scope.clone(),
                    decision_name(i.decision()).to_owned(),
                    decided_by(i),
                    or_dash(&i.justification),
                    or_dash(decision_name(i.recommendation())),
                    applied_text(i),
                ]
            })
            .collect::<Vec<_>>(),
    )
}

const CSV_HEADER: [&str; 15] = [
    "item",
    "principal",
    "role",
    "role_id",
    "scope",
    "kind",
    "decision",
    "decided_by",
    "decided_at",
    "justification",
    "recommendation",
    "recommendation_reason",
    "reviewers",
    "applied",
    "apply_result",
];

/// The results as RFC 4180 CSV, a row per item. `decided_by` is empty where the review's
/// default decided.
fn results_csv(items: &[ReviewItem], catalog: &RoleCatalog) -> String {
    let mut out = csv_row(CSV_HEADER.iter().map(|h| (*h).to_owned()));
    for i in items {
        out += &csv_row([
            i.id.clone(),
            i.principal_id.clone(),
            catalog.name(&i.role_id),
            i.role_id.clone(),
            i.scope.clone(),
            kind_name(i.kind()).to_owned(),
            decision_name(i.decision()).to_owned(),
            i.decided_by.clone(),
            at(i.decided_at.as_ref()),
            i.justification.clone(),
            decision_name(i.recommendation()).to_owned(),
            i.recommendation_reason.clone(),
            i.reviewer_ids.join(" "),
            i.applied.to_string(),
            i.apply_result.clone(),
        ]);
    }
    out
}

fn at(ts: Option<&Timestamp>) -> String {
    ts.map(|ts| time(Some(ts))).unwrap_or_default()
}

fn csv_row(cells: impl IntoIterator<Item = String>) -> String {
    cells
        .into_iter()
        .map(|cell| csv_field(&cell))
        .collect::<Vec<_>>()
        .join(",")
        + "\n"
}

/// One field, quoted when it must be. Text that a spreadsheet would run as a formula (it
/// starts with `=`, `+`, `-`, `@`) gets a leading `'`: justifications are typed by reviewers,
/// and an exported review must not execute anything when opened.
fn csv_field(cell: &str) -> String {
    let cell = if cell.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{cell}")
    } else {
        cell.to_owned()
    };
    if cell.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", cell.replace('"', "\"\""))
    } else {
        cell
    }
}

fn items_json(items: &[ReviewItem], catalog: &RoleCatalog) -> String {
    let list: Vec<Value> = items
        .iter()
        .map(|i| {
            json!({
                "id": i.id,
                "instance_id": i.instance_id,
                "schedule_id": i.schedule_id,
                "principal": i.principal_id,
                "role_id": i.role_id,
                "role": catalog.name(&i.role_id),
                "scope": i.scope,
                "kind": kind_name(i.kind()),
                "reviewers": i.reviewer_ids,
                "decision": decision_name(i.decision()),
                "justification": i.justification,
                "decided_by": i.decided_by,
                "decided_at": i.decided_at.as_ref().map(|t| time(Some(t))),
                "recommendation": decision_name(i.recommendation()),
                "recommendation_reason": i.recommendation_reason,
                "applied": i.applied,
                "apply_result": i.apply_result,
            })
        })
        .collect();
    Value::Array(list).to_string() + "\n"
}

fn definition_json(
    d: &ReviewDefinition,
    catalog: &RoleCatalog,
    instances: &[ReviewInstance],
) -> Value {
    let settings = d.settings.unwrap_or_default();
    json!({
        "id": d.id,
        "name": d.display_name,
        "role_ids": d.role_ids,
        "roles": d.role_ids.iter().map(|id| catalog.name(id)).collect::<Vec<_>>(),
        "scope": d.scope,
        "include_eligible": d.include_eligible,
        "include_active": d.include_active,
        "reviewers": reviewers_text(d),
        "recurrence": recurrence_name(d.recurrence()),
        "duration_days": d.instance_duration_days,
        "start_time": d.start_time.as_ref().map(|t| time(Some(t))),
        "default_decision": default_name(settings.default_decision()),
        "auto_apply": settings.auto_apply,
        "recommendations": settings.recommendations_enabled,
        "justification_required": settings.justification_required_on_approval,
        "stopped": d.stopped,
        "created_by": d.created_by,
        "created_at": d.created_at.as_ref().map(|t| time(Some(t))),
        "instances": instances.iter().map(|i| json!({
            "id": i.id,
            "start_time": i.start_time.as_ref().map(|t| time(Some(t))),
            "end_time": i.end_time.as_ref().map(|t| time(Some(t))),
            "status": instance_status_name(i.status()),
            "items": i.items,
            "decided": i.decided,
            "denied": i.denied,
            "applied": i.applied,
        })).collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_fields_are_quoted_and_never_formulas() {
        assert_eq!(csv_field("alice"), "alice");
        assert_eq!(csv_field("on-call, lead"), "\"on-call, lead\"");
        assert_eq!(csv_field("say \"no\""), "\"say \"\"no\"\"\"");
        assert_eq!(csv_field("=HYPERLINK(1)"), "'=HYPERLINK(1)");
        assert_eq!(csv_field("line\nbreak"), "\"line\nbreak\"");
    }

    #[test]
    fn reviewers_are_self_admins_or_named_users_and_groups() {
        assert_eq!(parse_reviewers("self"), Ok(Reviewers::SelfReview));
        assert_eq!(parse_reviewers("admins"), Ok(Reviewers::Admins));
        let Ok(Reviewers::Named(named)) = parse_reviewers("bob, group:secops") else {
            panic!("named reviewers");
        };
        assert_eq!(approvers_text(&named), "bob, group:secops");
        assert!(parse_reviewers(" , ").is_err());
    }
}
