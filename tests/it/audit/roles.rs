//! Append-only at the database level: the runtime role (granted by `audit_grant_runtime`, as an
//! operator does after `pim migrate audit`) cannot rewrite the log in any way, yet the audit
//! service runs on it: it records, signs checkpoints, and purges under retention through
//! `audit_purge`, after which the rest of the chain still verifies, offline too.

use std::time::Duration;

use pim_cli::audit::FileFormat;
use pim_config::ServiceName;
use pim_testkit::Harness;
use sea_orm::{ConnectionTrait as _, Database, DatabaseConnection, TransactionTrait as _};
use tokio::net::TcpListener;

use super::{alice_activates, auditor, harness, python_verdict, settled, verify};
use crate::support::{audit_records, make_eligible};

/// `url` with its user replaced by `user` (and no password).
fn as_user(url: &str, user: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("postgres", url));
    let host = rest.split_once('@').map(|(_, host)| host).unwrap_or(rest);
    format!("{scheme}://{user}@{host}")
}

/// A login role with exactly the runtime grants on this harness's audit database.
async fn runtime_role(h: &Harness) -> anyhow::Result<(String, String)> {
    let role = format!("pim_audit_rt_{}", uuid::Uuid::new_v4().simple());
    let owner = h.service(ServiceName::Audit).db();
    owner
        .execute_unprepared(&format!("CREATE ROLE {role} LOGIN"))
        .await?;
    owner
        .execute_unprepared(&format!("SELECT audit_grant_runtime('{role}')"))
        .await?;
    let url = as_user(&h.settings(ServiceName::Audit)?.db.url, &role);
    Ok((role, url))
}

async fn drop_role(h: &Harness, role: &str) -> anyhow::Result<()> {
    // As the owner, whether or not the harness's audit service still runs.
    let owner = Database::connect(&h.settings(ServiceName::Audit)?.db.url).await?;
    let _ = owner
        .execute_unprepared(&format!(
            "REASSIGN OWNED BY {role} TO CURRENT_USER; DROP OWNED BY {role}; DROP ROLE IF EXISTS {role}"
        ))
        .await;
    owner.close().await?;
    Ok(())
}

async fn refused(db: &DatabaseConnection, sql: &str) -> String {
    match db.execute_unprepared(sql).await {
        Ok(_) => panic!("the runtime role was allowed to run: {sql}"),
        Err(e) => e.to_string(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_runtime_role_cannot_update_delete_truncate_disable_the_trigger_or_grant_itself()
-> anyhow::Result<()> {
    let h = harness().await?;
    let before = alice_activates(&h).await?;
    let (role, url) = runtime_role(&h).await?;
    let runtime = Database::connect(&url).await?;

    for sql in [
        "UPDATE audit_log SET actor_id = 'mallory' WHERE sequence = 1".to_owned(),
        "DELETE FROM audit_log WHERE sequence = 1".to_owned(),
        "TRUNCATE audit_log".to_owned(),
        "ALTER TABLE audit_log DISABLE TRIGGER audit_log_append_only".to_owned(),
        "ALTER TABLE audit_log DISABLE TRIGGER ALL".to_owned(),
        format!("ALTER ROLE {role} SUPERUSER"),
        format!("ALTER TABLE audit_log OWNER TO {role}"),
        "UPDATE audit_checkpoints SET hash = '' WHERE sequence > 0".to_owned(),
        "DELETE FROM audit_checkpoints".to_owned(),
        // No permit for a purge of its own making.
        "INSERT INTO audit_purge_permit (cut) VALUES (1000000)".to_owned(),
        // A purge needs a signed checkpoint at the cut.
        format!("SELECT audit_purge({})", before.len()),
    ] {
        let error = refused(&runtime, &sql).await;
        assert!(
            error.contains("permission denied")
                || error.contains("must be owner")
                || error.contains("must be superuser")
                || error.contains("no signed checkpoint"),
            "{sql}: {error}"
        );
    }
    // Granting itself more is a no-op: PostgreSQL only warns that nothing was granted.
    let _ = runtime
        .execute_unprepared(&format!(
            "GRANT UPDATE, DELETE, TRUNCATE ON audit_log, audit_checkpoints TO {role}"
        ))
        .await;
    let gained = crate::bad_input::count(
        &runtime,
        "SELECT COUNT(*) AS n FROM (VALUES ('audit_log'), ('audit_checkpoints')) AS t(name), \
         (VALUES ('UPDATE'), ('DELETE'), ('TRUNCATE')) AS p(privilege) \
         WHERE has_table_privilege(current_user, t.name, p.privilege)",
    )
    .await?;
    assert_eq!(gained, 0, "the runtime role granted itself a privilege");
    let error = refused(&runtime, "UPDATE audit_log SET actor_id = 'mallory'").await;
    assert!(error.contains("permission denied"), "{error}");
    // It can read and append, inside a transaction rolled back here.
    let txn = runtime.begin().await?;
    txn.execute_unprepared("UPDATE audit_chain_head SET sequence = sequence WHERE id = 1")
        .await?;
    txn.rollback().await?;
    let n = crate::bad_input::count(&runtime, "SELECT COUNT(*) AS n FROM audit_log").await?;
    assert_eq!(n, before.len() as i64);
    runtime.close().await?;

    // Nothing changed, and the chain still verifies.
    assert_eq!(settled(&h).await?, before);
    assert!(verify(&h).await?.ok);
    drop_role(&h, &role).await?;
    h.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_service_runs_on_the_runtime_role_and_a_retention_purge_keeps_the_rest_verifiable()
-> anyhow::Result<()> {
    let mut h = harness().await?;
    alice_activates(&h).await?;
    let (role, url) = runtime_role(&h).await?;
    // The audit service restarted on the runtime role, without migrations, keeping one day.
    h.stop_service(ServiceName::Audit).await;
    h.set_setting("PIM_MIGRATE_ON_START", "false");
    h.set_setting("PIM_AUDIT_RETENTION_DAYS", "1");
    let mut settings = h.settings(ServiceName::Audit)?;
    settings.db.url = url.clone();
    let addr = h
        .url(ServiceName::Audit)
        .trim_start_matches("http://")
        .to_owned();
    let audit =
        pim_testkit::start_service(settings, h.clock.clone(), TcpListener::bind(&addr).await?)
            .await?;

    // Records, checkpoints and the purge all work with INSERT and SELECT only.
    make_eligible(&h, "bob", "bob-eligible").await?;
    let before = h
        .eventually(Duration::from_secs(30), || async {
            let records = audit_records(&auditor(&h)).await?;
            Ok(records
                .iter()
                .any(|r| r.target_principal_id == "bob")
                .then_some(records))
        })
        .await?;
    let cut = before.last().map(|r| r.sequence).unwrap_or_default();

    // Two days later, the records older than one day are purged behind a signed checkpoint.
    h.clock.advance(chrono::Duration::days(2));
    make_eligible(&h, "carol", "carol-eligible").await?;
    let after = h
        .eventually(Duration::from_secs(30), || async {
            let records = audit_records(&auditor(&h)).await?;
            let purged = records
                .iter()
                .any(|r| r.event_type == "audit.records_purged")
                && records.iter().any(|r| r.target_principal_id == "carol");
            Ok(purged.then_some(records))
        })
        .await?;
    let first_kept = after.first().map(|r| r.sequence).unwrap_or_default();
    assert!(first_kept > cut, "first kept {first_kept}, cut {cut}");
    assert!(
        !after
            .iter()
            .any(|r| r.event_type == "activation.request_submitted"),
        "alice's request was purged"
    );
    let purge = after
        .iter()
        .find(|r| r.event_type == "audit.records_purged")
        .ok_or_else(|| anyhow::anyhow!("no purge record"))?;
    assert_eq!(purge.activity, "Audit records purged under retention");
    let payload: serde_json::Value = serde_json::from_str(&purge.payload_json)?;
    assert_eq!(payload["from_sequence"], "1", "{payload}");

    // The rest still verifies: live, and offline from an export anchored by the cut's checkpoint.
    let verdict = verify(&h).await?;
    assert!(verdict.ok, "{verdict:?}");
    assert_eq!(verdict.from_sequence, first_kept);
    let (ok, text) = python_verdict(&h, FileFormat::Jsonl).await?;
    assert!(ok, "{text}");
    assert!(!text.contains("not anchored"), "{text}");

    audit.shutdown().await;
    drop_role(&h, &role).await?;
    h.stop().await;
    Ok(())
}

/// `pim dev` has no roles: on SQLite the triggers alone keep the log append-only, and only a
/// permitted cut (retention's path) may delete.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_sqlite_triggers_refuse_updates_and_deletes_but_let_a_permitted_purge_through()
-> anyhow::Result<()> {
    let dir = super::scratch_dir();
    std::fs::create_dir_all(&dir)?;
    let url = format!("sqlite://{}/audit.db?mode=rwc", dir.display());
    pim_cli::migrate_service(ServiceName::Audit, &url).await?;
    let db = pim_db::connect(&url, pim_db::PoolSize { max: 1, min: 1 }).await?;
    let columns = "sequence, occurred_at_ms, recorded_at_ms, event_id, event_type, producer, \
         producer_sequence, activity, category, actor_type, actor_id, target_type, subject, \
         target_principal_id, role_id, scope, result, result_reason, justification, ticket, \
         correlation_id, trace_id, payload_type, payload_json, prev_hash, hash";
    for sequence in 1..=3 {
        db.execute_unprepared(&format!(
            "INSERT INTO audit_log ({columns}) VALUES ({sequence}, 0, 0, 'e{sequence}', 't', 'p', \
             {sequence}, 'a', 'security', 'system', '', '', '', '', '', '', 'success', '', '', '', \
             '', '', '', '{{}}', '', '')"
        ))
        .await?;
    }
    for sql in [
        "UPDATE audit_log SET actor_id = 'mallory' WHERE sequence = 2",
        "DELETE FROM audit_log WHERE sequence = 2",
        "INSERT INTO audit_checkpoints VALUES (1, 'h', 0, 'k', 's'); UPDATE audit_checkpoints SET hash = 'x'",
        "DELETE FROM audit_checkpoints",
    ] {
        let error = refused(&db, sql).await;
        assert!(error.contains("append-only"), "{sql}: {error}");
    }
    // Retention's path: a permit for the cut, the delete, the permit gone again.
    db.execute_unprepared(
        "INSERT INTO audit_purge_permit (cut) VALUES (2); DELETE FROM audit_log WHERE sequence <= 2; \
         DELETE FROM audit_purge_permit",
    )
    .await?;
    let left = crate::bad_input::count(&db, "SELECT COUNT(*) AS n FROM audit_log").await?;
    assert_eq!(left, 1);
    let error = refused(&db, "DELETE FROM audit_log WHERE sequence = 3").await;
    assert!(error.contains("append-only"), "{error}");
    db.close().await?;
    let _ = std::fs::remove_dir_all(dir);
    Ok(())
}
