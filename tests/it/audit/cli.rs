//! `pim audit list|show|export|verify|key`, rendered as a person sees them, over real gRPC.

use pim_cli::{
    admin::Output,
    audit::{AuditCommand, FileFormat, ListFilters, run},
};

use super::{alice_activates, auditor, checkpoint, harness, scratch_dir, tamper};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_auditor_lists_shows_exports_and_verifies_the_trail_from_the_cli() -> anyhow::Result<()>
{
    let h = harness().await?;
    alice_activates(&h).await?;
    checkpoint(&h).await?;
    let audit = auditor(&h);

    let list = run(
        AuditCommand::List {
            filters: ListFilters {
                actor: Some("alice".into()),
                ..Default::default()
            },
            limit: 50,
            oldest_first: false,
            page_token: String::new(),
        },
        &audit,
        Output::Table,
    )
    .await?;
    assert!(list.text.starts_with("SEQ"), "{}", list.text);
    assert!(
        list.text
            .contains("Add member to role requested (PIM activation)"),
        "{}",
        list.text
    );
    assert!(!list.text.contains("admin-breakglass"), "{}", list.text);

    let json = run(
        AuditCommand::List {
            filters: ListFilters {
                category: Some("role_management".into()),
                ..Default::default()
            },
            limit: 2,
            oldest_first: true,
            page_token: String::new(),
        },
        &audit,
        Output::Json,
    )
    .await?;
    let json: serde_json::Value = serde_json::from_str(&json.text)?;
    assert_eq!(json["records"].as_array().map(Vec::len), Some(2));
    assert_eq!(json["records"][0]["sequence"], 1);
    assert_eq!(json["next_page_token"], "2");

    let show = run(AuditCommand::Show { sequence: 2 }, &audit, Output::Table).await?;
    assert!(show.text.contains("prev_hash"), "{}", show.text);
    assert!(show.text.contains("hash"), "{}", show.text);

    let dir = scratch_dir();
    std::fs::create_dir_all(&dir)?;
    let file = dir.join("trail.jsonl");
    let exported = run(
        AuditCommand::Export {
            format: FileFormat::Jsonl,
            since: None,
            until: None,
            out: file.clone(),
        },
        &audit,
        Output::Table,
    )
    .await?;
    assert!(exported.text.contains("1 checkpoints"), "{}", exported.text);

    let key = run(AuditCommand::Key, &audit, Output::Json).await?;
    let key: serde_json::Value = serde_json::from_str(&key.text)?;
    let public_key = key["public_key"].as_str().unwrap_or_default().to_owned();
    assert_eq!(public_key.len(), 64);

    let verify_file = |public_key: Option<String>| AuditCommand::Verify {
        from: 0,
        to: 0,
        file: Some(file.clone()),
        format: None,
        checkpoints: None,
        public_key,
    };
    let offline = run(verify_file(Some(public_key)), &audit, Output::Table).await?;
    assert!(!offline.failed, "{}", offline.text);
    assert!(offline.text.starts_with("OK: "), "{}", offline.text);
    // A key that did not sign the checkpoints.
    let wrong = run(verify_file(Some("11".repeat(32))), &audit, Output::Table).await;
    let wrong = wrong.map(|r| r.failed).unwrap_or(true);
    assert!(wrong, "a foreign key verified the checkpoints");

    let live = || AuditCommand::Verify {
        from: 0,
        to: 0,
        file: None,
        format: None,
        checkpoints: None,
        public_key: None,
    };
    let ok = run(live(), &audit, Output::Table).await?;
    assert!(
        !ok.failed && ok.text.starts_with("OK: records 1 to"),
        "{}",
        ok.text
    );
    tamper(
        &h,
        "UPDATE audit_log SET justification = 'nothing to see' WHERE sequence = 2",
    )
    .await?;
    let broken = run(live(), &audit, Output::Table).await?;
    assert!(broken.failed);
    assert!(
        broken.text.starts_with("FAIL at 2:") && broken.text.contains("CHAIN_BREAK_HASH_MISMATCH"),
        "{}",
        broken.text
    );
    let _ = std::fs::remove_dir_all(dir);
    h.stop().await;
    Ok(())
}
