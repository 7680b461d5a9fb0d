#!/usr/bin/env python3
"""Verify a PIM audit export offline, from docs/audit-format.md alone.

Usage:
    verify-audit.py FILE [--checkpoints FILE.checkpoints.jsonl] [--public-key HEX|PEMFILE]
                         [--format csv|jsonl] [--strict]

Exit status: 0 when the file verifies, 1 when it does not (the first failing sequence is
printed), 2 on a usage error. Needs only the standard library and the `cryptography` package
(Debian: python3-cryptography) for Ed25519.
"""

import argparse
import csv
import hashlib
import json
import os
import re
import sys

FIELDS = [
    "sequence", "occurred_at", "recorded_at", "event_id", "event_type", "producer",
    "producer_sequence", "activity", "category", "actor_type", "actor_id", "target_type",
    "subject", "target_principal_id", "role_id", "scope", "result", "result_reason",
    "justification", "ticket", "correlation_id", "trace_id", "payload_type", "payload_json",
]
COLUMNS = FIELDS + ["prev_hash", "hash"]
GENESIS = "0" * 64
HEX64 = re.compile(r"^[0-9a-f]{64}$")
DECIMAL = re.compile(r"^(0|[1-9][0-9]*)$")


class Broken(Exception):
    def __init__(self, sequence, reason):
        super().__init__(f"sequence {sequence}: {reason}")
        self.sequence = sequence
        self.reason = reason


def field(value):
    data = value.encode("utf-8")
    return len(data).to_bytes(4, "big") + data


def record_hash(prev_hash, record):
    encoding = field("pim.audit.record.v1") + b"".join(field(record[name]) for name in FIELDS)
    return hashlib.sha256(bytes.fromhex(prev_hash) + encoding).hexdigest()


def checkpoint_message(checkpoint):
    return (field("pim.audit.checkpoint.v1") + field(str(checkpoint["sequence"]))
            + field(checkpoint["hash"]) + field(checkpoint["signed_at"]))


def as_text(value, name, line):
    """JSON Lines: integers for the two sequences, strings for everything else."""
    if name in ("sequence", "producer_sequence"):
        if type(value) is not int or value < 0:
            raise Broken(f"line {line}", f"{name} is not a non-negative integer")
        return str(value)
    if not isinstance(value, str):
        raise Broken(f"line {line}", f"{name} is not a string")
    return value


def read_records(path, fmt):
    """Yields each record as a dict of the 26 columns, all text."""
    if fmt == "csv":
        with open(path, newline="", encoding="utf-8", errors="strict") as f:
            reader = csv.reader(f, strict=True)
            header = next(reader, None)
            if header != COLUMNS:
                raise Broken("header", "the CSV header is not the 26 columns of the format")
            for row in reader:
                if len(row) != len(COLUMNS):
                    raise Broken(f"line {reader.line_num}", f"{len(row)} fields, not {len(COLUMNS)}")
                yield dict(zip(COLUMNS, row))
    else:
        with open(path, encoding="utf-8", errors="strict", newline="\n") as f:
            for number, line in enumerate(f, 1):
                if not line.endswith("\n"):
                    raise Broken(f"line {number}", "the last line does not end with a line feed")
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as e:
                    raise Broken(f"line {number}", f"not JSON: {e}")
                if not isinstance(obj, dict) or sorted(obj) != sorted(COLUMNS):
                    raise Broken(f"line {number}", "the keys are not the 26 columns of the format")
                yield {name: as_text(obj[name], name, number) for name in COLUMNS}


def load_public_key(spec):
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    if os.path.exists(spec):
        with open(spec, "rb") as f:
            data = f.read()
        if b"BEGIN PUBLIC KEY" in data:
            key = load_pem_public_key(data)
            if not isinstance(key, Ed25519PublicKey):
                raise SystemExit("the public key is not an Ed25519 key")
            return key
        spec = data.decode().strip()
    return Ed25519PublicKey.from_public_bytes(bytes.fromhex(spec))


def load_checkpoints(path):
    checkpoints = {}
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            c = json.loads(line)
            if type(c.get("sequence")) is not int:
                raise Broken(f"checkpoint line {number}", "sequence is not an integer")
            for key in ("hash", "signed_at", "key_id", "signature"):
                if not isinstance(c.get(key), str):
                    raise Broken(f"checkpoint line {number}", f"{key} is not a string")
            checkpoints[c["sequence"]] = c
    return checkpoints


def key_id_of(public_key):
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    raw = public_key.public_bytes(Encoding.Raw, PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def check_signature(public_keys, checkpoint):
    """public_keys: {key_id: key} of every trusted key."""
    from cryptography.exceptions import InvalidSignature

    public_key = public_keys.get(checkpoint["key_id"])
    if public_key is None:
        raise Broken(checkpoint["sequence"], f"checkpoint signed by key {checkpoint['key_id']}, "
                     f"not by a trusted key ({', '.join(sorted(public_keys))})")
    try:
        public_key.verify(bytes.fromhex(checkpoint["signature"]), checkpoint_message(checkpoint))
    except (InvalidSignature, ValueError):
        raise Broken(checkpoint["sequence"], "checkpoint signature does not verify")


def verify(path, fmt, checkpoints, public_key, strict):
    """Returns a summary line; raises Broken at the first failure."""
    expected = None
    prev = None
    count = 0
    signed = 0
    last_signed = None
    notes = []
    for record in read_records(path, fmt):
        seq_text = record["sequence"]
        if not DECIMAL.match(seq_text):
            raise Broken(seq_text, "sequence is not a decimal number")
        sequence = int(seq_text)
        if expected is None:
            expected = sequence
            if sequence == 1:
                prev = GENESIS
            elif sequence - 1 in checkpoints:
                anchor = checkpoints[sequence - 1]
                if public_key is not None:
                    check_signature(public_key, anchor)
                prev = anchor["hash"]
            else:
                prev = record["prev_hash"]
                notes.append(f"the first record ({sequence}) is not anchored by a checkpoint: "
                             "the file is verified relative to it")
        if sequence != expected:
            raise Broken(expected, f"record missing (next record is {sequence})")
        for name in ("prev_hash", "hash"):
            if not HEX64.match(record[name]):
                raise Broken(sequence, f"{name} is not 64 lower-case hex digits")
        if record_hash(record["prev_hash"], record) != record["hash"]:
            raise Broken(sequence, "the record does not hash to its hash (changed or moved)")
        if record["prev_hash"] != prev:
            raise Broken(sequence, "prev_hash is not the previous record's hash")
        checkpoint = checkpoints.get(sequence)
        if checkpoint is not None:
            if public_key is not None:
                check_signature(public_key, checkpoint)
            if checkpoint["hash"] != record["hash"]:
                raise Broken(sequence, "the signed checkpoint names another hash")
            signed += 1
            last_signed = sequence
        prev = record["hash"]
        expected = sequence + 1
        count += 1
    if count == 0:
        return "OK: the file holds no records", notes
    last = expected - 1
    for sequence in checkpoints:
        if sequence >= expected:
            raise Broken(expected, f"a checkpoint at {sequence} names a record the file lacks")
    if public_key is None:
        notes.append("no --public-key given: checkpoint signatures were NOT checked")
    if last_signed != last:
        unsigned = f"records {(last_signed or expected - count - 1) + 1} to {last} are chained but not covered by a signed checkpoint"
        if strict:
            raise Broken((last_signed or expected - count - 1) + 1, unsigned)
        notes.append(unsigned)
    return f"OK: {count} records ({expected - count} to {last}), {signed} checkpoints verified", notes


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("file")
    parser.add_argument("--checkpoints", help="default: FILE.checkpoints.jsonl when it exists")
    parser.add_argument("--public-key", action="append",
                        help="hex of a trusted raw 32-byte key, or a file (PEM or hex); "
                             "repeat it, or separate hex keys with commas, to trust earlier keys too")
    parser.add_argument("--format", choices=["csv", "jsonl"], help="default: by the file's extension")
    parser.add_argument("--strict", action="store_true",
                        help="fail unless a signed checkpoint covers the last record")
    args = parser.parse_args()
    fmt = args.format or ("jsonl" if args.file.endswith((".jsonl", ".json")) else "csv")
    checkpoints_path = args.checkpoints or args.file + ".checkpoints.jsonl"
    try:
        checkpoints = {}
        if os.path.exists(checkpoints_path):
            checkpoints = load_checkpoints(checkpoints_path)
        elif args.checkpoints:
            print(f"{checkpoints_path}: not found", file=sys.stderr)
            return 2
        public_key = None
        if args.public_key:
            keys = [load_public_key(spec) for arg in args.public_key for spec in arg.split(",") if spec.strip()]
            public_key = {key_id_of(key): key for key in keys}
        if checkpoints and public_key is None and args.strict:
            print("--strict needs --public-key", file=sys.stderr)
            return 2
        summary, notes = verify(args.file, fmt, checkpoints, public_key, args.strict)
    except Broken as broken:
        print(f"FAIL at {broken.sequence}: {broken.reason}")
        return 1
    except (UnicodeDecodeError, csv.Error, ValueError) as error:
        print(f"FAIL: the file cannot be read as {fmt}: {error}")
        return 1
    print(summary)
    for note in notes:
        print(f"note: {note}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
