//! Verifying an export file without the service: reading CSV or JSON Lines back into records,
//! streaming, and checking them with the same rules as `VerifyChain`. Used by
//! `pim audit verify --file`. (`tools/verify-audit.py` is the independent implementation.)

use std::{
    collections::BTreeMap,
    io::{BufRead, Read},
};

use pim_proto::audit::v1::ChainBreak;
use serde_json::Value;

use crate::{
    export::Format,
    record::{COLUMNS, ChainedRecord, GENESIS_HASH, RecordContent},
    signing::CheckpointVerifier,
    store::StoredCheckpoint,
    verify::{Break, ChainCheck},
};

/// What a verified file held.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileSummary {
    pub records: u64,
    pub first: i64,
    pub last: i64,
    pub checkpoints: u64,
    /// The first record's `prev_hash` was not vouched for by genesis or a checkpoint.
    pub unanchored: bool,
    /// The last sequence covered by a verified checkpoint.
    pub last_signed: Option<i64>,
}

fn unreadable(message: impl Into<String>) -> Break {
    Break {
        at: 0,
        reason: ChainBreak::Unspecified,
        message: message.into(),
    }
}

/// Parses the checkpoint file's JSON lines.
pub fn read_checkpoints(reader: impl BufRead) -> Result<Vec<StoredCheckpoint>, Break> {
    let mut checkpoints = Vec::new();
    for line in reader.lines() {
        let line = line.map_err(|e| unreadable(format!("reading checkpoints: {e}")))?;
        if line.trim().is_empty() {
            continue;
        }
        let value: Value = serde_json::from_str(&line)
            .map_err(|e| unreadable(format!("a checkpoint line is not JSON: {e}")))?;
        let text = |key: &str| value.get(key).and_then(Value::as_str).map(str::to_owned);
        let signed_at = text("signed_at")
            .and_then(|s| chrono::DateTime::parse_from_rfc3339(&s).ok())
            .map(|t| t.timestamp_millis());
        match (
            value.get("sequence").and_then(Value::as_i64),
            text("hash"),
            signed_at,
            text("key_id"),
            text("signature"),
        ) {
            (Some(sequence), Some(hash), Some(signed_at_ms), Some(key_id), Some(signature)) => {
                checkpoints.push(StoredCheckpoint {
                    sequence,
                    hash,
                    signed_at_ms,
                    key_id,
                    signature,
                })
            }
            _ => return Err(unreadable("a checkpoint line lacks a field")),
        }
    }
    Ok(checkpoints)
}

/// Verifies an export read from `reader`.
pub fn verify_file(
    reader: impl Read,
    format: Format,
    checkpoints: Vec<StoredCheckpoint>,
    verifier: &CheckpointVerifier,
) -> Result<FileSummary, Break> {
    let by_sequence: BTreeMap<i64, StoredCheckpoint> =
        checkpoints.into_iter().map(|c| (c.sequence, c)).collect();
    let mut check: Option<ChainCheck<'_>> = None;
    let mut summary = FileSummary {
        records: 0,
        first: 0,
        last: 0,
        checkpoints: 0,
        unanchored: false,
        last_signed: None,
    };
    let mut on_record = |record: ChainedRecord| -> Result<(), Break> {
        let sequence = record.content.sequence;
        if check.is_none() {
            let anchor = if sequence == 1 {
                GENESIS_HASH.to_owned()
            } else if let Some(cut) = by_sequence.get(&(sequence - 1)) {
                ChainCheck::new(verifier, sequence, String::new()).signature_holds(cut)?;
                cut.hash.clone()
            } else {
                summary.unanchored = true;
                record.prev_hash.clone()
            };
            let mut fresh = ChainCheck::new(verifier, sequence, anchor);
            fresh.expect_checkpoints(by_sequence.range(sequence..).map(|(_, c)| c.clone()));
            check = Some(fresh);
            summary.first = sequence;
        }
        if let Some(check) = check.as_mut() {
            let before = check.checkpoints_checked;
            check.feed(&record)?;
            if check.checkpoints_checked > before {
                summary.last_signed = Some(sequence);
            }
            summary.checkpoints = check.checkpoints_checked;
        }
        summary.records += 1;
        summary.last = sequence;
        Ok(())
    };
    match format {
        Format::Csv => read_csv(reader, &mut on_record)?,
        Format::Jsonl => read_jsonl(reader, &mut on_record)?,
    }
    if let Some((&beyond, _)) = by_sequence.range(summary.last + 1..).next()
        && summary.records > 0
    {
        return Err(Break {
            at: summary.last + 1,
            reason: ChainBreak::MissingRecord,
            message: format!("a checkpoint at {beyond} names a record the file lacks"),
        });
    }
    Ok(summary)
}

fn record_from_columns(values: Vec<String>, line: u64) -> Result<ChainedRecord, Break> {
    if values.len() != COLUMNS.len() {
        return Err(unreadable(format!(
            "line {line}: {} fields, not {}",
            values.len(),
            COLUMNS.len()
        )));
    }
    let mut v = values.into_iter();
    let mut next = || v.next().unwrap_or_default();
    let decimal = |s: String, name: &str| -> Result<i64, Break> {
        let canonical = !s.is_empty() && (s == "0" || !s.starts_with('0'));
        match s.parse::<i64>() {
            Ok(n) if canonical && n >= 0 => Ok(n),
            _ => Err(unreadable(format!(
                "line {line}: {name} is not a decimal number"
            ))),
        }
    };
    let sequence = decimal(next(), "sequence")?;
    let occurred_at = next();
    let recorded_at = next();
    let instant = |s: &str| -> Result<i64, Break> {
        let millis = chrono::DateTime::parse_from_rfc3339(s)
            .map(|t| t.timestamp_millis())
            .map_err(|_| unreadable(format!("line {line}: {s:?} is not an instant")))?;
        // Only the one canonical spelling hashes the same; anything else is a changed field.
        if crate::record::instant(millis) != s {
            return Err(Break {
                at: sequence,
                reason: ChainBreak::HashMismatch,
                message: format!("record {sequence} has an instant not in the format's form"),
            });
        }
        Ok(millis)
    };
    let occurred_at_ms = instant(&occurred_at)?;
    let recorded_at_ms = instant(&recorded_at)?;
    let event_id = next();
    let event_type = next();
    let producer = next();
    let producer_sequence = decimal(next(), "producer_sequence")?;
    let content = RecordContent {
        sequence,
        occurred_at_ms,
        recorded_at_ms,
        event_id,
        event_type,
        producer,
        producer_sequence,
        activity: next(),
        category: next(),
        actor_type: next(),
        actor_id: next(),
        target_type: next(),
        subject: next(),
        target_principal_id: next(),
        role_id: next(),
        scope: next(),
        result: next(),
        result_reason: next(),
        justification: next(),
        ticket: next(),
        correlation_id: next(),
        trace_id: next(),
        payload_type: next(),
        payload_json: next(),
    };
    Ok(ChainedRecord {
        content,
        prev_hash: next(),
        hash: next(),
    })
}

fn read_jsonl(
    reader: impl Read,
    on_record: &mut impl FnMut(ChainedRecord) -> Result<(), Break>,
) -> Result<(), Break> {
    let reader = std::io::BufReader::new(reader);
    for (i, line) in reader.lines().enumerate() {
        let number = i as u64 + 1;
        let line = line.map_err(|e| unreadable(format!("line {number}: {e}")))?;
        let value: Value = serde_json::from_str(&line)
            .map_err(|e| unreadable(format!("line {number} is not JSON: {e}")))?;
        let object = value
            .as_object()
            .filter(|o| o.len() == COLUMNS.len())
            .ok_or_else(|| unreadable(format!("line {number}: not the 26 columns")))?;
        let mut values = Vec::with_capacity(COLUMNS.len());
        for column in COLUMNS {
            let text = match (column, object.get(column)) {
                ("sequence" | "producer_sequence", Some(Value::Number(n))) if n.is_u64() => {
                    n.to_string()
                }
                (_, Some(Value::String(s))) => s.clone(),
                _ => {
                    return Err(unreadable(format!(
                        "line {number}: {column} is missing or mistyped"
                    )));
                }
            };
            values.push(text);
        }
        on_record(record_from_columns(values, number)?)?;
    }
    Ok(())
}

/// RFC 4180, streaming: quoted fields may hold commas, doubled quotes and line breaks.
fn read_csv(
    reader: impl Read,
    on_record: &mut impl FnMut(ChainedRecord) -> Result<(), Break>,
) -> Result<(), Break> {
    let mut bytes = std::io::BufReader::new(reader).bytes();
    let mut row: Vec<String> = Vec::new();
    let mut field: Vec<u8> = Vec::new();
    let mut quoted = false;
    let mut in_quotes = false;
    let mut line = 1u64;
    let mut header_seen = false;
    let mut pending: Option<u8> = None;
    let finish_field =
        |field: &mut Vec<u8>, row: &mut Vec<String>, line: u64| -> Result<(), Break> {
            let text = String::from_utf8(std::mem::take(field))
                .map_err(|_| unreadable(format!("line {line}: not UTF-8")))?;
            row.push(text);
            Ok(())
        };
    let mut finish_row = |row: &mut Vec<String>, line: u64| -> Result<(), Break> {
        let values = std::mem::take(row);
        if !header_seen {
            header_seen = true;
            if values != COLUMNS {
                return Err(unreadable(
                    "the CSV header is not the 26 columns of the format",
                ));
            }
            return Ok(());
        }
        on_record(record_from_columns(values, line)?)
    };
    loop {
        let byte = match pending.take() {
            Some(b) => Some(b),
            None => match bytes.next() {
                Some(Ok(b)) => Some(b),
                Some(Err(e)) => return Err(unreadable(format!("reading: {e}"))),
                None => None,
            },
        };
        let Some(byte) = byte else {
            if in_quotes {
                return Err(unreadable(format!(
                    "line {line}: an unterminated quoted field"
                )));
            }
            if quoted || !field.is_empty() || !row.is_empty() {
                finish_field(&mut field, &mut row, line)?;
                finish_row(&mut row, line)?;
            }
            return Ok(());
        };
        if in_quotes {
            if byte == b'"' {
                match bytes.next() {
                    Some(Ok(b'"')) => field.push(b'"'),
                    Some(Ok(other)) => {
                        in_quotes = false;
                        pending = Some(other);
                    }
                    Some(Err(e)) => return Err(unreadable(format!("reading: {e}"))),
                    None => in_quotes = false,
                }
            } else {
                if byte == b'\n' {
                    line += 1;
                }
                field.push(byte);
            }
            continue;
        }
        match byte {
            b'"' if field.is_empty() && !quoted => {
                quoted = true;
                in_quotes = true;
            }
            b'"' => return Err(unreadable(format!("line {line}: a stray quote"))),
            b',' => {
                finish_field(&mut field, &mut row, line)?;
                quoted = false;
            }
            b'\r' => match bytes.next() {
                Some(Ok(b'\n')) => {
                    finish_field(&mut field, &mut row, line)?;
                    finish_row(&mut row, line)?;
                    quoted = false;
                    line += 1;
                }
                _ => return Err(unreadable(format!("line {line}: a CR without LF"))),
            },
            b'\n' => {
                finish_field(&mut field, &mut row, line)?;
                finish_row(&mut row, line)?;
                quoted = false;
                line += 1;
            }
            _ if quoted => {
                return Err(unreadable(format!(
                    "line {line}: text after a closing quote"
                )));
            }
            other => field.push(other),
        }
    }
}

#[cfg(test)]
mod tests {
    use ed25519_dalek::SigningKey;

    use super::*;
    use crate::{
        export::{header, render},
        signing::{CheckpointSigner, KeySource},
    };

    fn export(format: Format, n: i64) -> (String, CheckpointSigner, Vec<StoredCheckpoint>) {
        let signer = CheckpointSigner::new(SigningKey::from_bytes(&[5; 32]), KeySource::File);
        let mut out = header(format);
        let mut prev = GENESIS_HASH.to_owned();
        let mut checkpoints = Vec::new();
        for sequence in 1..=n {
            let content = RecordContent {
                sequence,
                justification: format!("line one\r\nline \"two\", {sequence}"),
                payload_json: "{\"k\":\"v\"}".into(),
                ..Default::default()
            };
            let hash = content.chain_hash(&prev).unwrap();
            let record = ChainedRecord {
                content,
                prev_hash: prev.clone(),
                hash: hash.clone(),
            };
            render(format, &record, &mut out);
            if sequence == n {
                checkpoints.push(StoredCheckpoint {
                    sequence,
                    hash: hash.clone(),
                    signed_at_ms: 1,
                    key_id: signer.key_id().into(),
                    signature: signer.sign(sequence, &hash, 1),
                });
            }
            prev = hash;
        }
        (out, signer, checkpoints)
    }

    #[test]
    fn an_export_reads_back_and_verifies_in_both_formats() {
        for format in [Format::Csv, Format::Jsonl] {
            let (file, signer, checkpoints) = export(format, 4);
            let summary =
                verify_file(file.as_bytes(), format, checkpoints, &signer.verifier()).unwrap();
            assert_eq!((summary.records, summary.checkpoints), (4, 1), "{format:?}");
            assert_eq!(summary.last_signed, Some(4));
        }
    }

    #[test]
    fn one_changed_byte_fails() {
        for format in [Format::Csv, Format::Jsonl] {
            let (file, signer, checkpoints) = export(format, 3);
            let mut bytes = file.into_bytes();
            let at = bytes.len() / 2;
            bytes[at] = if bytes[at] == b'x' { b'y' } else { b'x' };
            assert!(
                verify_file(&bytes[..], format, checkpoints, &signer.verifier()).is_err(),
                "{format:?}"
            );
        }
    }
}
