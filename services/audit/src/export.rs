//! Rendering records for export, exactly as `docs/audit-format.md` describes: CSV (RFC 4180,
//! every field quoted, CRLF) or JSON Lines, with the chain fields, and checkpoints as JSON Lines.

use std::borrow::Cow;

use pim_proto::audit::v1::Checkpoint;
use serde_json::{Map, Value};

use crate::record::{COLUMNS, ChainedRecord, instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Csv,
    Jsonl,
}

/// What a file starts with: the CSV header row, or nothing.
pub fn header(format: Format) -> String {
    match format {
        Format::Csv => {
            let mut line = COLUMNS.join(",");
            line.push_str("\r\n");
            line
        }
        Format::Jsonl => String::new(),
    }
}

/// Appends one record to `out`.
pub fn render(format: Format, record: &ChainedRecord, out: &mut String) {
    let mut values = record.content.field_texts().to_vec();
    values.push(Cow::Borrowed(&record.prev_hash));
    values.push(Cow::Borrowed(&record.hash));
    match format {
        Format::Csv => {
            for (i, value) in values.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push('"');
                if value.contains('"') {
                    out.push_str(&value.replace('"', "\"\""));
                } else {
                    out.push_str(value);
                }
                out.push('"');
            }
            out.push_str("\r\n");
        }
        Format::Jsonl => {
            let mut object = Map::new();
            for (column, value) in COLUMNS.iter().zip(values) {
                let value = match *column {
                    "sequence" => Value::from(record.content.sequence),
                    "producer_sequence" => Value::from(record.content.producer_sequence),
                    _ => Value::String(value.into_owned()),
                };
                object.insert((*column).to_owned(), value);
            }
            out.push_str(&Value::Object(object).to_string());
            out.push('\n');
        }
    }
}

/// One checkpoint as a JSON line of the checkpoint file.
pub fn checkpoint_line(checkpoint: &Checkpoint) -> String {
    let signed_at = checkpoint
        .signed_at
        .as_ref()
        .map(pim_proto::millis_from_timestamp)
        .unwrap_or_default();
    let line = serde_json::json!({
        "sequence": checkpoint.sequence,
        "hash": checkpoint.hash,
        "signed_at": instant(signed_at),
        "key_id": checkpoint.key_id,
        "signature": checkpoint.signature,
    });
    format!("{line}\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::RecordContent;

    fn record() -> ChainedRecord {
        ChainedRecord {
            content: RecordContent {
                sequence: 4,
                justification: "said \"now\", then\r\nleft".into(),
                ..Default::default()
            },
            prev_hash: "p".into(),
            hash: "h".into(),
        }
    }

    #[test]
    fn csv_quotes_every_field_and_doubles_quotes() {
        let mut out = String::new();
        render(Format::Csv, &record(), &mut out);
        assert!(
            out.starts_with("\"4\",\"1970-01-01T00:00:00.000Z\""),
            "{out}"
        );
        assert!(out.contains("\"said \"\"now\"\", then\r\nleft\""), "{out}");
        assert!(out.ends_with("\"p\",\"h\"\r\n"));
        assert_eq!(header(Format::Csv).split(',').count(), 26);
    }

    #[test]
    fn json_lines_keep_integers_as_numbers_and_the_rest_as_strings() {
        let mut out = String::new();
        render(Format::Jsonl, &record(), &mut out);
        assert_eq!(out.matches('\n').count(), 1);
        let value: Value = serde_json::from_str(out.trim_end()).unwrap();
        assert_eq!(value["sequence"], 4);
        assert_eq!(value["justification"], "said \"now\", then\r\nleft");
        assert_eq!(value["hash"], "h");
    }
}
