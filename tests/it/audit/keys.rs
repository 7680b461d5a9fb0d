//! Checkpoint keys: a key the service does not trust cannot vouch for a checkpoint, and after a
//! rotation the earlier public key, once configured, still verifies the checkpoints it signed.

use pim_config::ServiceName;
use pim_proto::audit::v1::ChainBreak;

use super::{alice_activates, checkpoint, harness, public_key_hex, verify};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_key_rotation_old_checkpoints_verify_only_with_the_old_key_trusted()
-> anyhow::Result<()> {
    let mut h = harness().await?;
    alice_activates(&h).await?;
    let signed = checkpoint(&h).await?;
    let old_key = public_key_hex(&h).await?;

    // Without PIM_AUDIT_SIGNING_KEY_FILE each process has a key of its own: a restart rotates.
    h.stop_service(ServiceName::Audit).await;
    h.restart_service(ServiceName::Audit).await?;
    assert_ne!(public_key_hex(&h).await?, old_key);
    let verdict = verify(&h).await?;
    assert!(!verdict.ok);
    assert_eq!(
        (verdict.broken_at, verdict.reason()),
        (signed.sequence, ChainBreak::CheckpointSignature),
        "{verdict:?}"
    );

    h.stop_service(ServiceName::Audit).await;
    h.set_setting("PIM_AUDIT_PREVIOUS_PUBLIC_KEYS", &old_key);
    h.restart_service(ServiceName::Audit).await?;
    let verdict = verify(&h).await?;
    assert!(verdict.ok, "{verdict:?}");
    assert_eq!(verdict.checkpoints_checked, 1);
    h.stop().await;
    Ok(())
}
