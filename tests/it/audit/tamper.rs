//! Tampering is found, each kind at the sequence where it happened, by `VerifyChain` and by the
//! independent verifier (`tools/verify-audit.py`) on an export: an edited row, a deleted row, two
//! rows swapped, a chain recomputed after an edit (against its signed checkpoint), and one byte
//! changed in an export file.

use pim_cli::audit::{FileFormat, record::RecordContent};
use pim_proto::audit::v1::{AuditRecord, ChainBreak, Checkpoint, ExportFormat};
use pim_testkit::Harness;

use super::{
    alice_activates, as_owner, checkpoint, export_all, harness, public_key_hex, python_verdict,
    python_verifier, scratch_dir, tamper, verify, write_export,
};

/// A trail of a real activation, checkpointed, that verifies both ways before anyone touches it.
async fn untouched() -> anyhow::Result<(Harness, Vec<AuditRecord>, Checkpoint)> {
    let h = harness().await?;
    alice_activates(&h).await?;
    let checkpoint = checkpoint(&h).await?;
    let records = super::settled(&h).await?;
    assert!(records.len() >= 6, "{} records", records.len());
    let verdict = verify(&h).await?;
    assert!(verdict.ok, "{verdict:?}");
    assert_eq!(verdict.checkpoints_checked, 1);
    let (ok, text) = python_verdict(&h, FileFormat::Csv).await?;
    assert!(ok, "{text}");
    assert!(text.contains("1 checkpoints verified"), "{text}");
    Ok((h, records, checkpoint))
}

/// Both verifiers name `at` as the first broken sequence.
async fn both_find(h: &Harness, at: u64, reason: ChainBreak) -> anyhow::Result<()> {
    let verdict = verify(h).await?;
    assert!(!verdict.ok, "{verdict:?}");
    assert_eq!(
        (verdict.broken_at, verdict.reason()),
        (at, reason),
        "{verdict:?}"
    );
    for format in [FileFormat::Csv, FileFormat::Jsonl] {
        let (ok, text) = python_verdict(h, format).await?;
        assert!(!ok, "{format:?}: {text}");
        assert!(
            text.starts_with(&format!("FAIL at {at}:")),
            "{format:?}: {text}"
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_update_of_one_row_by_the_owner_is_found_at_that_row() -> anyhow::Result<()> {
    let (h, _, _) = untouched().await?;
    // Even the owner is refused while the trigger stands.
    let refused = as_owner(
        &h,
        "UPDATE audit_log SET actor_id = 'mallory' WHERE sequence = 3",
    )
    .await
    .unwrap_err();
    assert!(refused.to_string().contains("append-only"), "{refused}");
    tamper(
        &h,
        "UPDATE audit_log SET actor_id = 'mallory' WHERE sequence = 3",
    )
    .await?;
    both_find(&h, 3, ChainBreak::HashMismatch).await?;
    h.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_row_is_found_where_it_is_missing() -> anyhow::Result<()> {
    let (h, _, _) = untouched().await?;
    let refused = as_owner(&h, "DELETE FROM audit_log WHERE sequence = 4")
        .await
        .unwrap_err();
    assert!(refused.to_string().contains("append-only"), "{refused}");
    tamper(&h, "DELETE FROM audit_log WHERE sequence = 4").await?;
    both_find(&h, 4, ChainBreak::MissingRecord).await?;
    h.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_swapped_rows_are_found_at_the_first_of_them() -> anyhow::Result<()> {
    let (h, _, _) = untouched().await?;
    tamper(
        &h,
        "UPDATE audit_log SET sequence = -1 WHERE sequence = 3; \
         UPDATE audit_log SET sequence = 3 WHERE sequence = 4; \
         UPDATE audit_log SET sequence = 4 WHERE sequence = -1",
    )
    .await?;
    both_find(&h, 3, ChainBreak::HashMismatch).await?;
    h.stop().await;
    Ok(())
}

fn content_of(r: &AuditRecord) -> RecordContent {
    let millis = |t: &Option<pim_proto::Timestamp>| {
        t.as_ref()
            .map(pim_proto::millis_from_timestamp)
            .unwrap_or_default()
    };
    RecordContent {
        sequence: r.sequence as i64,
        occurred_at_ms: millis(&r.occurred_at),
        recorded_at_ms: millis(&r.recorded_at),
        event_id: r.event_id.clone(),
        event_type: r.event_type.clone(),
        producer: r.producer.clone(),
        producer_sequence: r.producer_sequence as i64,
        activity: r.activity.clone(),
        category: r.category.clone(),
        actor_type: r.actor_type.clone(),
        actor_id: r.actor_id.clone(),
        target_type: r.target_type.clone(),
        subject: r.subject.clone(),
        target_principal_id: r.target_principal_id.clone(),
        role_id: r.role_id.clone(),
        scope: r.scope.clone(),
        result: r.result.clone(),
        result_reason: r.result_reason.clone(),
        justification: r.justification.clone(),
        ticket: r.ticket.clone(),
        correlation_id: r.correlation_id.clone(),
        trace_id: r.trace_id.clone(),
        payload_type: r.payload_type.clone(),
        payload_json: r.payload_json.clone(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recomputed_chain_is_found_by_its_signed_checkpoint() -> anyhow::Result<()> {
    let (h, records, checkpoint) = untouched().await?;
    // The attacker edits record 2 and recomputes every hash after it, so the chain alone is
    // consistent again.
    let mut sql = String::from("UPDATE audit_log SET actor_id = 'mallory' WHERE sequence = 2;");
    let mut prev = records[0].hash.clone();
    for record in &records[1..] {
        let mut content = content_of(record);
        if content.sequence == 2 {
            content.actor_id = "mallory".into();
        }
        let hash = content
            .chain_hash(&prev)
            .ok_or_else(|| anyhow::anyhow!("bad hash"))?;
        sql.push_str(&format!(
            "UPDATE audit_log SET prev_hash = '{prev}', hash = '{hash}' WHERE sequence = {};",
            content.sequence
        ));
        prev = hash;
    }
    sql.push_str(&format!(
        "UPDATE audit_chain_head SET hash = '{prev}' WHERE id = 1"
    ));
    tamper(&h, &sql).await?;
    both_find(&h, checkpoint.sequence, ChainBreak::CheckpointMismatch).await?;

    // Rewriting the checkpoint's hash as well leaves a signature that no longer matches.
    let forged = super::settled(&h).await?;
    let new_hash = &forged[checkpoint.sequence as usize - 1].hash;
    as_owner(
        &h,
        &format!(
            "ALTER TABLE audit_checkpoints DISABLE TRIGGER audit_checkpoints_append_only; \
             UPDATE audit_checkpoints SET hash = '{new_hash}' WHERE sequence = {}; \
             ALTER TABLE audit_checkpoints ENABLE TRIGGER audit_checkpoints_append_only;",
            checkpoint.sequence
        ),
    )
    .await?;
    both_find(&h, checkpoint.sequence, ChainBreak::CheckpointSignature).await?;
    h.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_export_with_one_byte_changed_fails_offline_verification() -> anyhow::Result<()> {
    let (h, _, _) = untouched().await?;
    let key = public_key_hex(&h).await?;
    let dir = scratch_dir();
    for (format, name) in [
        (ExportFormat::Csv, "a.csv"),
        (ExportFormat::Jsonl, "a.jsonl"),
    ] {
        let (data, checkpoints) = export_all(&h, format).await?;
        let intact = write_export(&dir, name, &data, &checkpoints)?;
        let (ok, text) = python_verifier(&intact, &key, false)?;
        assert!(ok, "{name}: {text}");
        // A byte of a record in the middle: a letter of an id, say.
        let mut changed = data.clone();
        let middle = data.len() / 2;
        let at = (middle..data.len())
            .find(|&i| data[i].is_ascii_alphanumeric())
            .ok_or_else(|| anyhow::anyhow!("no letter to change"))?;
        changed[at] = if changed[at] == b'a' { b'b' } else { b'a' };
        let path = write_export(&dir, &format!("changed-{name}"), &changed, &checkpoints)?;
        let (ok, text) = python_verifier(&path, &key, false)?;
        assert!(!ok, "{name}: {text}");
        assert!(text.starts_with("FAIL"), "{text}");
        // `pim audit verify --file` agrees.
        let rendered = pim_cli::audit::verify_file(
            &path,
            match format {
                ExportFormat::Jsonl => pim_cli::audit::format::Format::Jsonl,
                _ => pim_cli::audit::format::Format::Csv,
            },
            None,
            &pim_audit_key(&key)?,
        )?;
        assert!(rendered.failed, "{}", rendered.text);
    }
    let _ = std::fs::remove_dir_all(dir);
    h.stop().await;
    Ok(())
}

fn pim_audit_key(hex_key: &str) -> anyhow::Result<pim_cli::audit::CheckpointVerifier> {
    let bytes: Vec<u8> = (0..hex_key.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex_key[i..i + 2], 16))
        .collect::<Result<_, _>>()?;
    pim_cli::audit::CheckpointVerifier::from_bytes(&bytes)
}
