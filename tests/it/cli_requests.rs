//! The requestor's and the reviewer's `pim` commands over real gRPC, rendered exactly as a
//! person sees them: an activation without MFA says how to step up, one with MFA waits for
//! its approval with the case named, a batch gives a line per role, a request shows its history
//! and can be canceled; an access review is created, listed, decided, and its results read as
//! CSV.

use std::time::Duration;

use pim_cli::{
    admin::Output,
    requests::{self, Length, RequestCommand, RequestShow},
    reviews::{
        self, DefaultChoice, Definition, Recurrence, ReviewCommand, ReviewItemCommand, Reviewers,
        ReviewsCommand, Verdict,
    },
};
use pim_client::{PimClient, roles};
use pim_config::ServiceName;
use pim_proto::{
    activation::v1::{RequestStatus, Ticket},
    approval::v1::ReviewInstanceStatus,
    assignment::v1::CreateEligibilityScheduleRequest,
};
use pim_testkit::{ADMIN, Harness};

use crate::{
    activation::{alice_under, approve, await_status, guide_policy, harness_with},
    reviews::{DAY_MS, advance, await_instances, global_admin, instances},
    support::SCOPE,
};

/// A person at the command line: their token, the service their commands call, and the role
/// catalog.
struct Person<'a> {
    h: &'a Harness,
    activation: PimClient,
    approval: PimClient,
    assignment: PimClient,
}

impl<'a> Person<'a> {
    fn new(h: &'a Harness, token: &str) -> Self {
        Self {
            h,
            activation: h.client(ServiceName::Activation, token),
            approval: h.client(ServiceName::Approval, token),
            assignment: h.client(ServiceName::Assignment, token),
        }
    }

    async fn pim(
        &self,
        command: RequestCommand,
        output: Output,
    ) -> anyhow::Result<requests::Rendered> {
        let now = pim_clock::Clock::now_millis(self.h.clock.as_ref());
        requests::run(command, &self.activation, &self.assignment, output, now).await
    }

    async fn review(
        &self,
        command: ReviewCommand,
        output: Output,
    ) -> anyhow::Result<pim_cli::approvals::Rendered> {
        reviews::run(command, &self.approval, &self.assignment, output).await
    }
}

/// `pim activate ROLE… --scope au-1 --duration 30m --justification … --ticket jira:OPS-7`.
fn activate(roles: &[&str], dry_run: bool) -> RequestCommand {
    RequestCommand::Activate {
        roles: roles.iter().map(|r| (*r).to_owned()).collect(),
        scope: SCOPE.into(),
        duration: "30m".parse::<Length>().unwrap(),
        justification: "incident 4711".into(),
        ticket: Some(Ticket {
            system: "jira".into(),
            number: "OPS-7".into(),
        }),
        start: None,
        dry_run,
        request_id: None,
    }
}

fn show(id: &str) -> RequestCommand {
    RequestCommand::Request {
        command: RequestShow::Show { id: id.into() },
    }
}

fn my_requests(status: Option<RequestStatus>) -> RequestCommand {
    RequestCommand::Requests { status, role: None }
}

/// The output line that mentions `needle`.
fn line<'t>(text: &'t str, needle: &str) -> &'t str {
    text.lines()
        .find(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("no line with {needle:?} in:\n{text}"))
}

/// The value of a `KEY   value` fact of a `show`.
fn fact<'t>(text: &'t str, key: &str) -> &'t str {
    line(text, key)[key.len()..].trim()
}

async fn eligible(h: &Harness, principal: &str, role_id: &str) -> anyhow::Result<()> {
    h.client(ServiceName::Assignment, &h.mfa_token(ADMIN))
        .assignment()
        .create_eligibility_schedule(CreateEligibilityScheduleRequest {
            request_id: format!("{principal}-{role_id}"),
            principal_id: principal.into(),
            role_id: role_id.into(),
            scope: SCOPE.into(),
            justification: "on-call rotation".into(),
            ..Default::default()
        })
        .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alice_steps_up_to_mfa_waits_for_approval_cancels_and_activates_two_roles_at_once()
-> anyhow::Result<()> {
    let h = harness_with(&[]).await?;
    // Security Administrator at au-1 needs MFA, a ticket, a justification and bob's approval.
    alice_under(&h, guide_policy(Some("bob"))).await?;

    // Without MFA: refused, and the output says plainly how to step up and retry.
    let signed_in = Person::new(&h, &h.token("alice"));
    let refused = signed_in
        .pim(activate(&["Security Administrator"], false), Output::Table)
        .await?;
    assert_eq!(
        refused.failure().as_deref(),
        Some("1 of 1 requests refused; the lines above say why")
    );
    assert!(
        line(&refused.text, "Security Administrator").contains("FAILED_PRECONDITION  -"),
        "{}",
        refused.text
    );
    assert!(
        refused.text.contains(
            "This role needs a recent sign-in with MFA. Sign in again with MFA, then retry with \
             the new token:\n\n  PIM_TOKEN=<new token> pim activate 'Security Administrator' \
             --scope /administrativeUnits/au-1 --duration 30m --justification 'incident 4711' \
             --ticket jira:OPS-7\n"
        ),
        "{}",
        refused.text
    );
    assert!(
        refused.text.contains(
            "For `pim dev`, mint one with: PIM_TOKEN=$(pim token <you> --mfa) pim activate"
        ),
        "{}",
        refused.text
    );

    // With MFA, a dry run answers as the real request would and writes nothing.
    let alice = Person::new(&h, &h.mfa_token("alice"));
    let dry = alice
        .pim(activate(&["Security Administrator"], true), Output::Table)
        .await?;
    assert_eq!(dry.failure(), None, "{}", dry.text);
    assert!(
        line(&dry.text, "Security Administrator").contains("(dry run: nothing written)"),
        "{}",
        dry.text
    );
    let none = alice.pim(my_requests(None), Output::Table).await?.text;
    assert_eq!(none, "You have made no requests.\n");

    // The real request waits for bob, and names its case.
    let pending = alice
        .pim(activate(&["Security Administrator"], false), Output::Json)
        .await?;
    assert_eq!(pending.failure(), None, "{}", pending.text);
    let pending: serde_json::Value = serde_json::from_str(&pending.text)?;
    let first = &pending["results"][0]["request"];
    let (id, case_id) = (
        first["id"].as_str().unwrap().to_owned(),
        first["case_id"].as_str().unwrap().to_owned(),
    );
    assert_eq!(first["status"], "PendingApproval");
    assert!(!case_id.is_empty(), "{pending}");

    let listed = alice.pim(my_requests(None), Output::Table).await?.text;
    assert_eq!(
        listed.lines().count(),
        2,
        "a header and one request:\n{listed}"
    );
    let row = line(&listed, &id);
    for cell in [
        "selfActivate",
        "Security Administrator",
        "/administrativeUnits/au-1",
        "PendingApproval",
        "(planned)",
        &case_id,
    ] {
        assert!(row.contains(cell), "{cell:?} in {row}");
    }

    let shown = alice.pim(show(&id), Output::Table).await?.text;
    assert_eq!(fact(&shown, "STATUS"), "PendingApproval", "{shown}");
    assert_eq!(fact(&shown, "TICKET"), "jira OPS-7", "{shown}");
    assert_eq!(fact(&shown, "JUSTIFICATION"), "incident 4711", "{shown}");
    assert!(fact(&shown, "CASE").starts_with(&case_id), "{shown}");
    let history = &shown[shown.find("\nAT ").unwrap()..];
    assert!(
        line(history, "PendingApproval").contains("alice"),
        "{shown}"
    );

    // Canceling withdraws it, and the history says who did.
    let canceled = alice
        .pim(RequestCommand::Cancel { id: id.clone() }, Output::Table)
        .await?
        .text;
    assert!(line(&canceled, &id).contains("Canceled"), "{canceled}");
    let after = alice.pim(show(&id), Output::Table).await?.text;
    assert_eq!(fact(&after, "STATUS"), "Canceled", "{after}");
    let history = &after[after.find("\nAT ").unwrap()..];
    assert!(line(history, "Canceled").contains("alice"), "{after}");
    let again = alice
        .pim(RequestCommand::Cancel { id: id.clone() }, Output::Table)
        .await?
        .text;
    assert!(
        line(&again, &id).contains("Canceled"),
        "idempotent: {again}"
    );

    // Two roles in one batch: a line each, one correlation id.
    eligible(&h, "alice", roles::SECURITY_READER).await?;
    let batch = alice
        .pim(
            activate(&["Security Administrator", "Security Reader"], false),
            Output::Table,
        )
        .await?;
    assert_eq!(batch.failure(), None, "{}", batch.text);
    assert!(
        batch.text.starts_with("ROLE"),
        "a header first:\n{}",
        batch.text
    );
    let admin_row = line(&batch.text, "Security Administrator");
    assert!(
        admin_row.contains("OK      PendingApproval"),
        "{}",
        batch.text
    );
    let reader_row = line(&batch.text, "Security Reader");
    assert!(reader_row.contains("OK "), "{}", batch.text);
    assert!(!reader_row.contains("PendingApproval"), "{}", batch.text);
    let correlation = fact(&batch.text, "Correlation id:");
    assert!(!correlation.is_empty(), "{}", batch.text);
    let mine: serde_json::Value =
        serde_json::from_str(&alice.pim(my_requests(None), Output::Json).await?.text)?;
    let correlated = mine
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["correlation_id"] == correlation)
        .count();
    assert_eq!(correlated, 2, "{mine}");

    // bob approves; both roles end up live.
    let batched_admin = mine
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["correlation_id"] == correlation && r["status"] == "PendingApproval")
        .unwrap();
    approve(&h, "bob", batched_admin["case_id"].as_str().unwrap()).await?;
    await_status(
        &h,
        batched_admin["id"].as_str().unwrap(),
        RequestStatus::Provisioned,
    )
    .await?;
    let live = h
        .eventually(Duration::from_secs(30), || async {
            let text = alice
                .pim(my_requests(Some(RequestStatus::Provisioned)), Output::Table)
                .await?
                .text;
            Ok((text.lines().count() == 3).then_some(text))
        })
        .await?;
    assert!(line(&live, "Security Reader").contains("left)"), "{live}");
    let approved = alice
        .pim(show(batched_admin["id"].as_str().unwrap()), Output::Table)
        .await?
        .text;
    let history = &approved[approved.find("\nAT ").unwrap()..];
    assert!(history.contains("Provisioned"), "{approved}");
    h.stop().await;
    Ok(())
}

fn decide(ids: &[&str], approve: bool, justification: &str) -> ReviewCommand {
    ReviewCommand::Review {
        command: ReviewItemCommand::Decide {
            ids: ids.iter().map(|id| (*id).to_owned()).collect(),
            verdict: Verdict {
                approve,
                deny: !approve,
                dont_know: false,
            },
            justification: justification.into(),
        },
    }
}

fn reviews_command(command: ReviewsCommand) -> ReviewCommand {
    ReviewCommand::Reviews { command }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_access_review_is_created_decided_and_exported_as_csv() -> anyhow::Result<()> {
    let h = crate::approval::harness().await?;
    for member in ["gina", "hank"] {
        global_admin(&h, member).await?;
    }
    let admin = Person::new(&h, &h.mfa_token(ADMIN));
    let created = admin
        .review(
            reviews_command(ReviewsCommand::Create(Definition {
                name: "Global Administrators, quarterly".into(),
                roles: vec!["Global Administrator".into()],
                scope: "/".into(),
                eligible: false,
                active: true,
                reviewers: Reviewers::SelfReview,
                recurrence: Recurrence::OneTime,
                duration_days: 3,
                default_decision: DefaultChoice::Deny,
                auto_apply: true,
                recommendations: false,
                justification_required: true,
            })),
            Output::Table,
        )
        .await?
        .text;
    let definition_id = fact(&created, "DEFINITION").to_owned();
    assert_eq!(fact(&created, "ROLES"), "Global Administrator", "{created}");
    assert_eq!(fact(&created, "REVIEWERS"), "self", "{created}");
    assert_eq!(
        fact(&created, "OPTIONS"),
        "auto-apply, justification required"
    );
    let instance = await_instances(&h, ADMIN, &definition_id, 1).await?;

    let listed = admin
        .review(reviews_command(ReviewsCommand::List), Output::Table)
        .await?
        .text;
    assert!(
        line(&listed, &definition_id).contains("Global Administrators, quarterly"),
        "{listed}"
    );
    let shown = admin
        .review(
            reviews_command(ReviewsCommand::Show {
                definition_id: definition_id.clone(),
            }),
            Output::Table,
        )
        .await?
        .text;
    assert!(line(&shown, &instance.id).contains("InProgress"), "{shown}");

    // Each member sees only their own item.
    let gina = Person::new(&h, &h.token("gina"));
    let hank = Person::new(&h, &h.token("hank"));
    let mine = gina
        .review(
            reviews_command(ReviewsCommand::Items { instance_id: None }),
            Output::Table,
        )
        .await?
        .text;
    assert_eq!(mine.lines().count(), 2, "a header and gina's item:\n{mine}");
    let gina_row = line(&mine, "gina");
    assert!(
        gina_row.contains("Global Administrator") && gina_row.contains("NotReviewed"),
        "{mine}"
    );
    let gina_item = gina_row.split_whitespace().next().unwrap().to_owned();
    let hank_items: serde_json::Value = serde_json::from_str(
        &hank
            .review(
                reviews_command(ReviewsCommand::Items { instance_id: None }),
                Output::Json,
            )
            .await?
            .text,
    )?;
    let hank_item = hank_items[0]["id"].as_str().unwrap().to_owned();

    // Decisions: one line per item, and a refusal fails the command.
    let approved = gina
        .review(
            decide(&[&gina_item], true, "I run the tenant, and on-call"),
            Output::Table,
        )
        .await?;
    assert_eq!(approved.failure(), None, "{}", approved.text);
    assert!(
        line(&approved.text, &gina_item).contains("Approve   OK"),
        "{}",
        approved.text
    );
    let not_hers = gina
        .review(decide(&[&hank_item], false, "nope"), Output::Table)
        .await?;
    assert!(
        line(&not_hers.text, &hank_item)
            .contains("PERMISSION_DENIED  NOT_A_REVIEWER: this item is not routed to you"),
        "{}",
        not_hers.text
    );
    assert_eq!(
        not_hers.failure().as_deref(),
        Some("1 of 1 decisions refused; the lines above say why")
    );
    let denied = hank
        .review(
            decide(&[&hank_item], false, "moved to \"another\" team"),
            Output::Table,
        )
        .await?;
    assert_eq!(denied.failure(), None, "{}", denied.text);

    // The review ends, hank's denial is applied, and the results read as CSV.
    advance(&h, 3 * DAY_MS);
    h.eventually(Duration::from_secs(30), || async {
        let now = instances(&h, ADMIN, &definition_id).await?;
        Ok((now[0].status() == ReviewInstanceStatus::Applied).then_some(()))
    })
    .await?;
    // Tokens minted before the clock moved three days have expired.
    let admin = Person::new(&h, &h.mfa_token(ADMIN));
    let csv = admin
        .review(
            reviews_command(ReviewsCommand::Results {
                instance_id: instance.id.clone(),
                csv: true,
            }),
            Output::Table,
        )
        .await?
        .text;
    let mut reader = csv::Reader::from_reader(csv.as_bytes());
    let header: Vec<String> = reader.headers()?.iter().map(str::to_owned).collect();
    assert_eq!(
        header[..10],
        [
            "item",
            "principal",
            "role",
            "role_id",
            "scope",
            "kind",
            "decision",
            "decided_by",
            "decided_at",
            "justification"
        ],
        "{csv}"
    );
    let column = |name: &str| header.iter().position(|h| h == name).unwrap();
    let mut rows: Vec<csv::StringRecord> = reader.records().collect::<Result<_, _>>()?;
    rows.sort_by(|a, b| a[column("principal")].cmp(&b[column("principal")]));
    assert_eq!(
        rows.len(),
        2,
        "gina and hank, never the break-glass account:\n{csv}"
    );
    let cells = |row: &csv::StringRecord, names: &[&str]| -> Vec<String> {
        names.iter().map(|n| row[column(n)].to_owned()).collect()
    };
    let wanted = [
        "item",
        "principal",
        "role",
        "scope",
        "decision",
        "decided_by",
        "justification",
        "applied",
    ];
    assert_eq!(
        cells(&rows[0], &wanted),
        [
            gina_item.as_str(),
            "gina",
            "Global Administrator",
            "/",
            "Approve",
            "gina",
            "I run the tenant, and on-call",
            "false"
        ]
    );
    assert_eq!(
        cells(&rows[1], &wanted),
        [
            hank_item.as_str(),
            "hank",
            "Global Administrator",
            "/",
            "Deny",
            "hank",
            "moved to \"another\" team",
            "true"
        ]
    );
    assert_eq!(&rows[1][column("role_id")], roles::GLOBAL_ADMINISTRATOR);
    assert!(!rows[1][column("decided_at")].is_empty(), "{csv}");

    let table = admin
        .review(
            reviews_command(ReviewsCommand::Results {
                instance_id: instance.id.clone(),
                csv: false,
            }),
            Output::Table,
        )
        .await?
        .text;
    assert!(line(&table, "hank").contains("applied"), "{table}");
    h.stop().await;
    Ok(())
}
