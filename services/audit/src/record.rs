//! An audit record and its place in the chain: the canonical encoding that is hashed, exactly as
//! `docs/audit-format.md` specifies it. No I/O here. Changing anything in this file changes the
//! format, which an independent verifier (`tools/verify-audit.py`) implements too.

use std::borrow::Cow;

use sha2::{Digest as _, Sha256};

/// The hash before the first record: 32 zero bytes, in hex.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The first field of every record's encoding, so a record can never be read as a checkpoint.
const RECORD_TAG: &str = "pim.audit.record.v1";
/// The first field of every checkpoint's encoding.
const CHECKPOINT_TAG: &str = "pim.audit.checkpoint.v1";

/// The columns of an export, in order. The first 24 are hashed, in this order.
pub const COLUMNS: [&str; 26] = [
    "sequence",
    "occurred_at",
    "recorded_at",
    "event_id",
    "event_type",
    "producer",
    "producer_sequence",
    "activity",
    "category",
    "actor_type",
    "actor_id",
    "target_type",
    "subject",
    "target_principal_id",
    "role_id",
    "scope",
    "result",
    "result_reason",
    "justification",
    "ticket",
    "correlation_id",
    "trace_id",
    "payload_type",
    "payload_json",
    "prev_hash",
    "hash",
];

/// One record as stored, without its chain fields.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecordContent {
    pub sequence: i64,
    pub occurred_at_ms: i64,
    pub recorded_at_ms: i64,
    pub event_id: String,
    pub event_type: String,
    pub producer: String,
    pub producer_sequence: i64,
    pub activity: String,
    pub category: String,
    pub actor_type: String,
    pub actor_id: String,
    pub target_type: String,
    pub subject: String,
    pub target_principal_id: String,
    pub role_id: String,
    pub scope: String,
    pub result: String,
    pub result_reason: String,
    pub justification: String,
    pub ticket: String,
    pub correlation_id: String,
    pub trace_id: String,
    pub payload_type: String,
    pub payload_json: String,
}

/// A stored record: its content and its place in the chain.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChainedRecord {
    pub content: RecordContent,
    pub prev_hash: String,
    pub hash: String,
}

impl RecordContent {
    /// The values of the hashed columns, as text, in [`COLUMNS`] order.
    pub fn fields(&self) -> [String; 24] {
        self.field_texts().map(Cow::into_owned)
    }

    /// The same values, borrowing the stored text: only numbers and instants are formatted.
    /// Hashing and export go through here, a million records at a time.
    pub fn field_texts(&self) -> [Cow<'_, str>; 24] {
        fn text(s: &str) -> Cow<'_, str> {
            Cow::Borrowed(s)
        }
        [
            Cow::Owned(self.sequence.to_string()),
            Cow::Owned(instant(self.occurred_at_ms)),
            Cow::Owned(instant(self.recorded_at_ms)),
            text(&self.event_id),
            text(&self.event_type),
            text(&self.producer),
            Cow::Owned(self.producer_sequence.to_string()),
            text(&self.activity),
            text(&self.category),
            text(&self.actor_type),
            text(&self.actor_id),
            text(&self.target_type),
            text(&self.subject),
            text(&self.target_principal_id),
            text(&self.role_id),
            text(&self.scope),
            text(&self.result),
            text(&self.result_reason),
            text(&self.justification),
            text(&self.ticket),
            text(&self.correlation_id),
            text(&self.trace_id),
            text(&self.payload_type),
            text(&self.payload_json),
        ]
    }

    /// The bytes that are hashed after the previous hash.
    pub fn canonical(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(512);
        self.encode(|bytes| out.extend_from_slice(bytes));
        out
    }

    /// Feeds the canonical encoding to `sink`, piece by piece.
    fn encode(&self, mut sink: impl FnMut(&[u8])) {
        let mut field = |value: &str| {
            // A field longer than 4 GiB cannot reach here: events are far smaller than that.
            sink(&(value.len() as u32).to_be_bytes());
            sink(value.as_bytes());
        };
        field(RECORD_TAG);
        for value in &self.field_texts() {
            field(value);
        }
    }

    /// `SHA-256(prev_hash bytes ‖ canonical encoding)`, in lower-case hex. `None` when
    /// `prev_hash` is not 64 hex digits.
    pub fn chain_hash(&self, prev_hash: &str) -> Option<String> {
        let prev = decode_hash(prev_hash)?;
        let mut hasher = Sha256::new();
        hasher.update(prev);
        self.encode(|bytes| hasher.update(bytes));
        Some(hex::encode(hasher.finalize()))
    }
}

impl ChainedRecord {
    /// Whether the stored hash is the hash of the content after the stored previous hash.
    pub fn hash_holds(&self) -> bool {
        self.content.chain_hash(&self.prev_hash).as_deref() == Some(self.hash.as_str())
    }
}

/// The bytes a checkpoint's signature covers.
pub fn checkpoint_message(sequence: i64, hash: &str, signed_at_ms: i64) -> Vec<u8> {
    let mut out = Vec::with_capacity(160);
    field(&mut out, CHECKPOINT_TAG);
    field(&mut out, &sequence.to_string());
    field(&mut out, hash);
    field(&mut out, &instant(signed_at_ms));
    out
}

/// An instant as the format writes it: RFC 3339 in UTC with exactly three fraction digits.
pub fn instant(millis: i64) -> String {
    use chrono::{Datelike as _, Timelike as _};
    let t = chrono::DateTime::from_timestamp_millis(millis).unwrap_or_default();
    // Written field by field: parsing a format string for each of a million records is a
    // visible part of verifying them. Years outside four digits take chrono's own format.
    if !(0..=9999).contains(&t.year()) {
        return t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string();
    }
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        t.year(),
        t.month(),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.timestamp_subsec_millis()
    )
}

/// 32 bytes from 64 lower-case hex digits.
pub fn decode_hash(hash: &str) -> Option<[u8; 32]> {
    if hash.len() != 64 || hash.bytes().any(|b| b.is_ascii_uppercase()) {
        return None;
    }
    let mut out = [0u8; 32];
    hex::decode_to_slice(hash, &mut out).ok()?;
    Some(out)
}

/// A length-prefixed field: the UTF-8 length as 4 bytes big-endian, then the bytes.
fn field(out: &mut Vec<u8>, value: &str) {
    let bytes = value.as_bytes();
    // A field longer than 4 GiB cannot reach here: events are far smaller than that.
    out.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
    out.extend_from_slice(bytes);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> RecordContent {
        RecordContent {
            sequence: 1,
            occurred_at_ms: 1_700_000_000_123,
            recorded_at_ms: 1_700_000_000_456,
            event_id: "0192-ab".into(),
            event_type: "assignment.schedule_created".into(),
            producer: "assignment".into(),
            producer_sequence: 7,
            activity: "Add eligible member to role in PIM completed".into(),
            category: "role_management".into(),
            actor_type: "principal".into(),
            actor_id: "admin".into(),
            payload_json: "{\"a\":\"ü\"}".into(),
            ..Default::default()
        }
    }

    #[test]
    fn instants_have_three_fraction_digits_in_utc() {
        assert_eq!(instant(1_700_000_000_123), "2023-11-14T22:13:20.123Z");
        assert_eq!(instant(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(instant(-1), "1969-12-31T23:59:59.999Z");
        // The field-by-field path and chrono's format agree wherever the first applies.
        for millis in [1, 951_782_400_000, 4_102_444_799_999, 253_402_300_799_999] {
            let formatted = chrono::DateTime::from_timestamp_millis(millis)
                .unwrap()
                .format("%Y-%m-%dT%H:%M:%S%.3fZ")
                .to_string();
            assert_eq!(instant(millis), formatted);
        }
    }

    #[test]
    fn the_encoding_is_length_prefixed_and_starts_with_its_tag() {
        let bytes = sample().canonical();
        assert_eq!(&bytes[..4], &19u32.to_be_bytes());
        assert_eq!(&bytes[4..23], b"pim.audit.record.v1");
        assert_eq!(&bytes[23..27], &1u32.to_be_bytes());
        assert_eq!(bytes[27], b'1');
    }

    #[test]
    fn every_field_changes_the_hash_and_so_does_the_previous_hash() {
        let base = sample();
        let h = base.chain_hash(GENESIS_HASH).unwrap();
        assert_eq!(h.len(), 64);
        let mut moved = base.clone();
        moved.sequence = 2;
        assert_ne!(moved.chain_hash(GENESIS_HASH).unwrap(), h);
        let mut edited = base.clone();
        edited.actor_id = "admi".into();
        edited.activity.push('n');
        // Shifting a byte from one field to the next is not a collision.
        assert_ne!(edited.chain_hash(GENESIS_HASH).unwrap(), h);
        assert_ne!(base.chain_hash(&h).unwrap(), h);
        assert!(base.chain_hash("xyz").is_none());
        assert!(
            base.chain_hash(&GENESIS_HASH.to_uppercase().replace('0', "A"))
                .is_none()
        );
    }

    /// A fixed vector, shared with the Python verifier's self-test in `docs/audit-format.md`.
    #[test]
    fn the_documented_test_vector_holds() {
        assert_eq!(
            sample().chain_hash(GENESIS_HASH).unwrap(),
            "6f1a68adeb67d2abdec25bed5c730e693d41b10e1cff9f179449e7992b1df716"
        );
    }
}
