//! Checking a run of records against the chain rules and the signed checkpoints, one record at a
//! time, so a range of any length is checked in constant memory. No I/O here.

use std::collections::BTreeMap;

use pim_proto::audit::v1::ChainBreak;

use crate::{record::ChainedRecord, signing::CheckpointVerifier, store::StoredCheckpoint};

/// Where and why a chain does not verify.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Break {
    pub at: i64,
    pub reason: ChainBreak,
    pub message: String,
}

pub struct ChainCheck<'a> {
    signer: &'a CheckpointVerifier,
    next_sequence: i64,
    prev_hash: String,
    /// Checkpoints not yet reached, by sequence.
    checkpoints: BTreeMap<i64, StoredCheckpoint>,
    pub records_checked: u64,
    pub checkpoints_checked: u64,
}

impl<'a> ChainCheck<'a> {
    /// A check starting at `first`, whose previous record's hash is `anchor`.
    pub fn new(signer: &'a CheckpointVerifier, first: i64, anchor: String) -> Self {
        Self {
            signer,
            next_sequence: first,
            prev_hash: anchor,
            checkpoints: BTreeMap::new(),
            records_checked: 0,
            checkpoints_checked: 0,
        }
    }

    /// Checkpoints in the range, in any order and in as many calls as convenient.
    pub fn expect_checkpoints(&mut self, checkpoints: impl IntoIterator<Item = StoredCheckpoint>) {
        for checkpoint in checkpoints {
            self.checkpoints.insert(checkpoint.sequence, checkpoint);
        }
    }

    /// Verifies a checkpoint's signature with the signing key.
    pub fn signature_holds(&self, checkpoint: &StoredCheckpoint) -> Result<(), Break> {
        let known_key = self.signer.knows(&checkpoint.key_id);
        if self.signer.verify_with(
            &checkpoint.key_id,
            checkpoint.sequence,
            &checkpoint.hash,
            checkpoint.signed_at_ms,
            &checkpoint.signature,
        ) {
            return Ok(());
        }
        Err(Break {
            at: checkpoint.sequence,
            reason: ChainBreak::CheckpointSignature,
            message: if known_key {
                format!(
                    "the checkpoint at {} has an invalid signature",
                    checkpoint.sequence
                )
            } else {
                format!(
                    "the checkpoint at {} is signed by key {}: neither the signing key {} nor a trusted previous one",
                    checkpoint.sequence,
                    checkpoint.key_id,
                    self.signer.key_id()
                )
            },
        })
    }

    /// The next record, in sequence order.
    pub fn feed(&mut self, record: &ChainedRecord) -> Result<(), Break> {
        self.feed_hashed(record, record.hash_holds())
    }

    /// The next record, whose own hash was already checked (`hash_holds`) elsewhere: a record's
    /// hash covers its stored previous hash, so records can be hashed in parallel and only the
    /// links between them need this order.
    pub fn feed_hashed(&mut self, record: &ChainedRecord, hash_holds: bool) -> Result<(), Break> {
        let sequence = record.content.sequence;
        if sequence != self.next_sequence {
            return Err(Break {
                at: self.next_sequence,
                reason: ChainBreak::MissingRecord,
                message: format!("record {} is missing", self.next_sequence),
            });
        }
        if !hash_holds {
            return Err(Break {
                at: sequence,
                reason: ChainBreak::HashMismatch,
                message: format!("record {sequence} does not hash to its stored hash"),
            });
        }
        if record.prev_hash != self.prev_hash {
            return Err(Break {
                at: sequence,
                reason: ChainBreak::PrevHashMismatch,
                message: format!(
                    "record {sequence} does not follow the hash of the record before it"
                ),
            });
        }
        if let Some(checkpoint) = self.checkpoints.remove(&sequence) {
            self.signature_holds(&checkpoint)?;
            if checkpoint.hash != record.hash {
                return Err(Break {
                    at: sequence,
                    reason: ChainBreak::CheckpointMismatch,
                    message: format!(
                        "the signed checkpoint at {sequence} names another hash than the record's"
                    ),
                });
            }
            self.checkpoints_checked += 1;
        }
        self.prev_hash = record.hash.clone();
        self.next_sequence = sequence + 1;
        self.records_checked += 1;
        Ok(())
    }

    /// Ends a check that should have reached `last`: records after the last one fed are missing.
    pub fn finish(&self, last: i64) -> Result<(), Break> {
        if self.next_sequence <= last {
            return Err(Break {
                at: self.next_sequence,
                reason: ChainBreak::MissingRecord,
                message: format!("record {} is missing", self.next_sequence),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use ed25519_dalek::SigningKey;

    use super::*;
    use crate::{
        record::{GENESIS_HASH, RecordContent},
        signing::{CheckpointSigner, KeySource},
    };

    fn chain(n: i64) -> Vec<ChainedRecord> {
        let mut prev = GENESIS_HASH.to_owned();
        (1..=n)
            .map(|sequence| {
                let content = RecordContent {
                    sequence,
                    actor_id: format!("actor-{sequence}"),
                    ..Default::default()
                };
                let hash = content.chain_hash(&prev).unwrap();
                let record = ChainedRecord {
                    content,
                    prev_hash: prev.clone(),
                    hash: hash.clone(),
                };
                prev = hash;
                record
            })
            .collect()
    }

    fn check(
        signer: &CheckpointSigner,
        records: &[ChainedRecord],
        cps: Vec<StoredCheckpoint>,
    ) -> Result<(), Break> {
        let verifier = signer.verifier();
        let mut check = ChainCheck::new(&verifier, 1, GENESIS_HASH.to_owned());
        check.expect_checkpoints(cps);
        for record in records {
            check.feed(record)?;
        }
        check.finish(records.last().map(|r| r.content.sequence).unwrap_or(0))
    }

    fn signer() -> CheckpointSigner {
        CheckpointSigner::new(SigningKey::from_bytes(&[3; 32]), KeySource::File)
    }

    fn checkpoint(signer: &CheckpointSigner, record: &ChainedRecord) -> StoredCheckpoint {
        StoredCheckpoint {
            sequence: record.content.sequence,
            hash: record.hash.clone(),
            signed_at_ms: 9,
            key_id: signer.key_id().to_owned(),
            signature: signer.sign(record.content.sequence, &record.hash, 9),
        }
    }

    #[test]
    fn an_intact_chain_with_its_checkpoint_verifies() {
        let signer = signer();
        let records = chain(5);
        let cp = checkpoint(&signer, &records[3]);
        assert_eq!(check(&signer, &records, vec![cp]), Ok(()));
    }

    #[test]
    fn each_kind_of_tampering_is_found_where_it_happened() {
        let signer = signer();
        let records = chain(5);

        let mut edited = records.clone();
        edited[2].content.actor_id = "mallory".into();
        let broken = check(&signer, &edited, vec![]).unwrap_err();
        assert_eq!((broken.at, broken.reason), (3, ChainBreak::HashMismatch));

        let mut deleted = records.clone();
        deleted.remove(1);
        let broken = check(&signer, &deleted, vec![]).unwrap_err();
        assert_eq!((broken.at, broken.reason), (2, ChainBreak::MissingRecord));

        let mut swapped = records.clone();
        let (a, b) = (swapped[1].content.sequence, swapped[2].content.sequence);
        swapped.swap(1, 2);
        swapped[1].content.sequence = a;
        swapped[2].content.sequence = b;
        let broken = check(&signer, &swapped, vec![]).unwrap_err();
        assert_eq!((broken.at, broken.reason), (2, ChainBreak::HashMismatch));

        // Rewritten from record 2 on with fresh hashes: only the signed checkpoint knows.
        let cp = checkpoint(&signer, &records[3]);
        let mut rewritten = records.clone();
        rewritten[1].content.actor_id = "mallory".into();
        for i in 1..rewritten.len() {
            let prev = rewritten[i - 1].hash.clone();
            rewritten[i].prev_hash = prev.clone();
            rewritten[i].hash = rewritten[i].content.chain_hash(&prev).unwrap();
        }
        let broken = check(&signer, &rewritten, vec![cp.clone()]).unwrap_err();
        assert_eq!(
            (broken.at, broken.reason),
            (4, ChainBreak::CheckpointMismatch)
        );
        let mut forged = cp;
        forged.hash = rewritten[3].hash.clone();
        let broken = check(&signer, &rewritten, vec![forged]).unwrap_err();
        assert_eq!(
            (broken.at, broken.reason),
            (4, ChainBreak::CheckpointSignature)
        );

        let broken = check(&signer, &records[..3], vec![]).and_then(|()| {
            let verifier = signer.verifier();
            let mut c = ChainCheck::new(&verifier, 1, GENESIS_HASH.to_owned());
            for r in &records[..3] {
                c.feed(r)?;
            }
            c.finish(5)
        });
        assert_eq!(broken.unwrap_err().at, 4, "a cut tail is missing records");
    }
}
