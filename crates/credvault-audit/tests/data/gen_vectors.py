#!/usr/bin/env python3
"""Independent writer of audit log v1 vectors, from docs/formats.md alone (standard library only).

Writes vectors.jsonl (a log: genesis, checkpoint, two events, recovery after a torn line,
checkpoint), vectors.anchor, and vectors.json (expected values for keyed identifiers).
Run from this directory: python3 gen_vectors.py
"""
import hashlib, hmac, json, struct

KEY = bytes([0x42]) * 32
LOG = "00112233445566778899aabbccddeeff"


def parts_mac(key, parts):
    m = hmac.new(key, digestmod=hashlib.sha256)
    for p in parts:
        m.update(struct.pack(">Q", len(p)))
        m.update(p)
    return m.hexdigest()


def line(seq, prev, ty, body):
    head = '{"v":1,"seq":%d,"prev":"%s","type":"%s","body":%s' % (
        seq, prev, ty, json.dumps(body, separators=(",", ":"), ensure_ascii=False))
    h = hashlib.sha256(head.encode()).hexdigest()
    return (head + ',"hash":"%s"}\n' % h).encode(), h


def millis(ts):
    # ts like 2026-09-21T14:13:20.123Z
    import datetime
    d = datetime.datetime.strptime(ts, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=datetime.timezone.utc)
    return int(d.timestamp() * 1000 + 0.5)


out = b""
prev = "0" * 64
seq = 0


def add(ty, body):
    global out, prev, seq
    b, h = line(seq, prev, ty, body)
    out += b
    prev, seq = h, seq + 1
    return h


def checkpoint(ts):
    covers = seq - 1
    mac = parts_mac(KEY, [b"credvault-audit checkpoint v1", LOG.encode(), str(covers).encode(),
                          prev.encode(), str(millis(ts)).encode()])
    return add("checkpoint", {"log": LOG, "covers": covers, "head": prev, "time": ts, "mac": mac})


add("genesis", {"log": LOG, "format": "credvault-audit/1", "time": "2026-09-21T14:13:20.000Z"})
checkpoint("2026-09-21T14:13:20.001Z")
add("event", {"id": "0f1e2d3c-4b5a-4987-8695-a4b3c2d1e0f0", "time": "2026-09-21T14:13:21.500Z",
              "tenant": "acme", "actor": "alice", "source_ip": "198.51.100.23", "action": "accessed",
              "resource": {"id": "cred_1", "name": "stripe", "type": "http_bearer_token",
                           "environment": "production"},
              "outcome": "success",
              "details": {"kind": "accessed", "service": "n8n", "fields": ["token"]}})
add("event", {"id": "1f1e2d3c-4b5a-4987-8695-a4b3c2d1e0f1", "time": "2026-09-21T14:13:22.000Z",
              "tenant": "acme", "actor": "bob", "action": "updated", "outcome": "success",
              "details": {"kind": "updated", "changes": [
                  {"field": "password", "secret": True},
                  {"field": "host", "secret": False, "old": "db1", "new": "db2 \u00e9\"\\"}]}})
# A torn write (a crash), then the recovery record a reopening writer appends.
torn = b'{"v":1,"seq":4,"prev":"' + prev.encode() + b'","type":"event","bo'
offset = len(out)
out += torn + b"\n"
add("recovery", {"torn_offset": offset, "torn_len": len(torn),
                 "torn_sha256": hashlib.sha256(torn).hexdigest(), "time": "2026-09-21T14:14:00.000Z"})
cp_time = "2026-09-21T14:14:00.001Z"
cp_hash = checkpoint(cp_time)
anchor_mac = parts_mac(KEY, [b"credvault-audit anchor v1", LOG.encode(), str(seq - 1).encode(),
                             cp_hash.encode(), str(millis(cp_time)).encode()])
anchor = {"v": 1, "log": LOG, "seq": seq - 1, "hash": cp_hash, "time": cp_time, "mac": anchor_mac}

salt = bytes.fromhex(parts_mac(KEY, [b"credvault-audit identifier salt v1", LOG.encode()]))
ident = "hmac-sha256:" + hmac.new(salt, b"198.51.100.23", hashlib.sha256).hexdigest()

# The tag of the head (last record's seq and hash) as a store keeps it outside the log.
head_tag = parts_mac(KEY, [b"credvault-audit head v1", str(seq - 1).encode(), prev.encode()])

open("vectors.jsonl", "wb").write(out)
open("vectors.anchor", "w").write(json.dumps(anchor, separators=(",", ":")) + "\n")
open("vectors.json", "w").write(json.dumps({
    "key_hex": KEY.hex(), "log": LOG, "records": seq, "events": 2, "checkpoints": 2,
    "head": prev, "head_seq": seq - 1, "head_tag": head_tag,
    "identifier": {"value": "198.51.100.23", "hashed": ident}}, indent=1) + "\n")
