//! The approver's `pim` commands over real gRPC, rendered exactly as a person sees them: what
//! awaits me, two approvals in one call, refusals reported with their reason (and a failing
//! command), and a case with its full history.

use pim_cli::{
    admin::Output,
    approvals::{ApprovalCommand, CaseCommand, Rendered, run},
};
use pim_client::PimClient;
use pim_config::ServiceName;
use pim_testkit::Harness;

use crate::approval::{harness, open, open_request, rule, stage, users};

/// A person at the command line: their token, the approval service and the role catalog.
struct Person<'a> {
    h: &'a Harness,
    approval: PimClient,
    assignment: PimClient,
}

impl<'a> Person<'a> {
    fn new(h: &'a Harness, token: &str) -> Self {
        Self {
            h,
            approval: h.client(ServiceName::Approval, token),
            assignment: h.client(ServiceName::Assignment, token),
        }
    }

    async fn pim(&self, command: ApprovalCommand, output: Output) -> anyhow::Result<Rendered> {
        let now = pim_clock::Clock::now_millis(self.h.clock.as_ref());
        run(command, &self.approval, &self.assignment, output, now).await
    }
}

fn approvals() -> ApprovalCommand {
    ApprovalCommand::Approvals {
        role: None,
        requestor: None,
    }
}

fn approve(ids: &[&str], justification: &str) -> ApprovalCommand {
    ApprovalCommand::Approve {
        ids: ids.iter().map(|id| (*id).to_owned()).collect(),
        justification: justification.into(),
    }
}

fn show(id: &str) -> ApprovalCommand {
    ApprovalCommand::Approval {
        command: CaseCommand::Show { id: id.into() },
    }
}

/// The output line that mentions `needle`.
fn line<'t>(text: &'t str, needle: &str) -> &'t str {
    text.lines()
        .find(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("no line with {needle:?} in:\n{text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bob_lists_what_awaits_him_approves_two_at_once_and_sees_refusals_and_history()
-> anyhow::Result<()> {
    let h = harness().await?;
    let one_stage = |id, requestor, approvers: &[&str]| {
        open_request(id, requestor, rule(vec![stage(users(approvers), 1)]))
    };
    let alices = open(&h, one_stage("req-a", "alice", &["bob", "carol"])).await?;
    let daves = open(&h, one_stage("req-b", "dave", &["bob"])).await?;
    let erins = open(
        &h,
        open_request(
            "req-c",
            "erin",
            rule(vec![stage(users(&["bob"]), 1), stage(users(&["carol"]), 1)]),
        ),
    )
    .await?;
    let not_bobs = open(&h, one_stage("req-d", "zoe", &["carol"])).await?;
    let bob = Person::new(&h, &h.token("bob"));

    // What awaits bob: three cases, with stage, votes, deadline and the role by name.
    let list = bob.pim(approvals(), Output::Table).await?.text;
    assert!(
        list.starts_with("CASE") && list.contains("DEADLINE"),
        "{list}"
    );
    assert_eq!(list.lines().count(), 4, "a header and three cases:\n{list}");
    assert!(!list.contains(&not_bobs.id), "{list}");
    let alices_row = line(&list, &alices.id);
    for cell in [
        "alice",
        "Security Administrator",
        "/administrativeUnits/au-1",
        "1/1",
        "0/1",
        "(in 24h00m)",
        "incident 4711",
    ] {
        assert!(alices_row.contains(cell), "{cell:?} in {alices_row}");
    }
    assert!(line(&list, &erins.id).contains("1/2"), "{list}");

    let daves_only = bob
        .pim(
            ApprovalCommand::Approvals {
                role: None,
                requestor: Some("dave".into()),
            },
            Output::Json,
        )
        .await?
        .text;
    let daves_only: serde_json::Value = serde_json::from_str(&daves_only)?;
    assert_eq!(daves_only.as_array().unwrap().len(), 1, "{daves_only}");
    assert_eq!(daves_only[0]["id"], daves.id.as_str());
    assert_eq!(daves_only[0]["current_stage"], 1);
    let other_role = bob
        .pim(
            ApprovalCommand::Approvals {
                role: Some("Global Administrator".into()),
                requestor: None,
            },
            Output::Table,
        )
        .await?
        .text;
    assert_eq!(other_role, "Nothing awaits your decision.\n");

    // Two approvals in one call: one ends a case, the other completes stage 1 of 2.
    let both = bob
        .pim(
            approve(&[&alices.id, &erins.id], "checked the incident"),
            Output::Table,
        )
        .await?;
    assert_eq!(both.failure(), None, "{}", both.text);
    assert!(
        line(&both.text, &alices.id).contains("approve   OK      approved"),
        "{}",
        both.text
    );
    assert!(
        line(&both.text, &erins.id).contains("OK      pending, stage 2 of 2"),
        "{}",
        both.text
    );

    // A second decision on a decided case is refused, and the other still goes through.
    let mixed = bob
        .pim(
            ApprovalCommand::Deny {
                ids: vec![daves.id.clone(), alices.id.clone()],
                justification: "not during the freeze".into(),
            },
            Output::Table,
        )
        .await?;
    assert!(
        line(&mixed.text, &daves.id).contains("deny      OK"),
        "{}",
        mixed.text
    );
    assert!(
        line(&mixed.text, &alices.id)
            .contains("FAILED_PRECONDITION  ALREADY_DECIDED: the case is already approved"),
        "{}",
        mixed.text
    );
    assert_eq!(
        mixed.failure().as_deref(),
        Some("1 of 2 decisions refused; the lines above say why")
    );

    // Nobody approves their own request, even with one id (Decide rather than DecideBulk).
    let erin = Person::new(&h, &h.token("erin"));
    let own = erin
        .pim(approve(&[&erins.id], "trust me"), Output::Json)
        .await?;
    let own_json: serde_json::Value = serde_json::from_str(&own.text)?;
    assert_eq!(own_json[0]["code"], "PERMISSION_DENIED", "{}", own.text);
    assert_eq!(own_json[0]["reason"], "SELF_APPROVAL", "{}", own.text);
    assert_eq!(
        own.failure().as_deref(),
        Some("1 of 1 decisions refused; the lines above say why")
    );

    // The case with its stages, approvers and history.
    let shown = bob.pim(show(&erins.id), Output::Table).await?.text;
    assert!(
        shown.contains("STATUS         pending, stage 2 of 2"),
        "{shown}"
    );
    assert!(shown.contains("JUSTIFICATION  incident 4711"), "{shown}");
    let stage_1 = line(&shown, "completed");
    assert!(
        stage_1.starts_with("1 ") && stage_1.ends_with("bob"),
        "{shown}"
    );
    let stage_2 = line(&shown, "current");
    assert!(
        stage_2.starts_with("2 ") && stage_2.ends_with("carol") && stage_2.contains("(in 24h00m)"),
        "{shown}"
    );
    assert!(
        line(&shown, "opened").contains("service:activation"),
        "{shown}"
    );
    let approved = line(&shown, "checked the incident");
    assert!(
        approved.contains("  bob ") && approved.contains("approved"),
        "{shown}"
    );
    assert!(
        line(&shown, "stage_completed").contains("  bob "),
        "{shown}"
    );

    let decided: serde_json::Value =
        serde_json::from_str(&bob.pim(show(&alices.id), Output::Json).await?.text)?;
    assert_eq!(decided["status"], "approved");
    assert_eq!(decided["decided_by"], "bob");
    let actions: Vec<&str> = decided["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        ["opened", "approved", "stage_completed", "case_approved"]
    );
    let nothing_left = bob.pim(approvals(), Output::Table).await?.text;
    assert_eq!(nothing_left, "Nothing awaits your decision.\n");
    h.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_list_follows_every_page_and_failures_read_as_sentences() -> anyhow::Result<()> {
    let h = harness().await?;
    // One more than the 200 a page holds.
    let opened = futures_util::future::try_join_all((0..201).map(|i| {
        open(
            &h,
            open_request(
                &format!("req-{i}"),
                "alice",
                rule(vec![stage(users(&["bob"]), 1)]),
            ),
        )
    }))
    .await?;
    let bob = Person::new(&h, &h.token("bob"));
    let all: serde_json::Value =
        serde_json::from_str(&bob.pim(approvals(), Output::Json).await?.text)?;
    let mut listed: Vec<&str> = all
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap())
        .collect();
    let mut expected: Vec<&str> = opened.iter().map(|c| c.id.as_str()).collect();
    listed.sort_unstable();
    expected.sort_unstable();
    assert_eq!(listed, expected);

    let missing = bob.pim(show("no-such-case"), Output::Table).await;
    assert_eq!(
        missing.unwrap_err().to_string(),
        "case no-such-case not found"
    );
    let stranger = Person::new(&h, "not-a-jwt");
    let refused = stranger.pim(approvals(), Output::Table).await.unwrap_err();
    assert!(
        refused
            .to_string()
            .starts_with("the token was not accepted ("),
        "{refused}"
    );
    let unjustified = bob
        .pim(approve(&[&opened[0].id], " "), Output::Table)
        .await?;
    assert!(
        line(&unjustified.text, &opened[0].id)
            .contains("INVALID_ARGUMENT  justification: is required by this case's policy"),
        "{}",
        unjustified.text
    );
    h.stop().await;
    Ok(())
}
