#!/usr/bin/env python3
"""Independent implementation of credvault envelope v1 and v2 and local wrapped-key v1
(docs/formats.md), written against the spec with Python `cryptography`, used once to produce the
frozen vectors in envelope_v1.json, envelope_v2.json and wrapped_key_v1.json. Re-running it must
reproduce the files byte for byte.

    python3 gen_vectors.py > /dev/null   # writes both JSON files next to this script
"""
import hashlib, json, os, struct, base64
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

HERE = os.path.dirname(os.path.abspath(__file__))

def ctx_encode(pairs):
    items = sorted(pairs, key=lambda kv: kv[0].encode())
    out = struct.pack(">H", len(items))
    for k, v in items:
        kb, vb = k.encode(), v.encode()
        out += struct.pack(">H", len(kb)) + kb + struct.pack(">H", len(vb)) + vb
    return out

def envelope(key, key_id, nonce, pairs, pt):
    header = bytes([1, 1]) + key_id
    aad = header + bytes(32 - len(header)) + ctx_encode(pairs)  # header zero-padded to 32 bytes
    ct_tag = AESGCM(key).encrypt(nonce, pt, aad)
    return header + nonce + ct_tag

V2_DOMAIN = b"credvault envelope v2 context\x00\x01"

def envelope_v2(key, key_id, nonce, pairs, pt):
    header = bytes([2, 1]) + key_id
    aad = hashlib.sha256(V2_DOMAIN + ctx_encode(pairs)).digest()
    ct_tag = AESGCM(key).encrypt(nonce, pt, aad)
    return header + nonce + ct_tag

def wrapped_local(master, version, dek_id, dek, nonce, pairs):
    pid = b"local"
    payload_len = 1 + 12 + 32 + 16
    header = bytes([1, len(pid)]) + pid + struct.pack(">I", version) + dek_id + struct.pack(">H", payload_len)
    ct_tag = AESGCM(master).encrypt(nonce, dek, header + ctx_encode(pairs))
    return header + bytes([1]) + nonce + ct_tag

def h(b): return b.hex()

key = bytes(range(32))
key_id = bytes.fromhex("00112233445566778899aabbccddeeff")
ENVELOPE_CASES = [
    ("empty plaintext, empty context", bytes(12), [], b""),
    ("password field", bytes.fromhex("000102030405060708090a0b"),
     [("tenant", "acme"), ("credential", "cred_01"), ("field", "password"), ("environment", "production")],
     b"correct horse battery staple"),
    ("unicode context and 300-byte secret", bytes.fromhex("ffffffffffffffffffffffff"),
     [("tenant", "t\u00e9nant-\u00fc"), ("field", "api_key"), ("z", ""), ("a", "first")],
     bytes((i * 7 + 3) % 256 for i in range(300))),
    ("context longer than 256 bytes", bytes.fromhex("0c0b0a090807060504030201"),
     [("tenant", "acme"), ("note", "n" * 300)], b"x"),
]
cases = []
# v1 froze the first three cases.
for name, nonce, pairs, pt in ENVELOPE_CASES[:3]:
    cases.append({"name": name, "key": h(key), "key_id": h(key_id), "nonce": h(nonce),
                  "context": [[k, v] for k, v in pairs], "context_encoded": h(ctx_encode(pairs)),
                  "plaintext": h(pt), "envelope": h(envelope(key, key_id, nonce, pairs, pt))})

v2cases = []
for name, nonce, pairs, pt in ENVELOPE_CASES:
    v2cases.append({"name": name, "key": h(key), "key_id": h(key_id), "nonce": h(nonce),
                    "context": [[k, v] for k, v in pairs], "context_encoded": h(ctx_encode(pairs)),
                    "context_digest": h(hashlib.sha256(V2_DOMAIN + ctx_encode(pairs)).digest()),
                    "plaintext": h(pt), "envelope": h(envelope_v2(key, key_id, nonce, pairs, pt))})
with open(os.path.join(HERE, "envelope_v2.json"), "w") as f:
    json.dump({"source": "tests/data/gen_vectors.py (Python cryptography AESGCM and hashlib, independent of the Rust code)",
               "format": "credvault envelope v2", "tests": v2cases}, f, indent=1)
    f.write("\n")

with open(os.path.join(HERE, "envelope_v1.json"), "w") as f:
    json.dump({"source": "tests/data/gen_vectors.py (Python cryptography AESGCM, independent of the Rust code)",
               "format": "credvault envelope v1", "tests": cases}, f, indent=1)
    f.write("\n")

master1 = bytes([0x42]) * 32
master2 = bytes(range(100, 132))
wcases = []
for name, version, master, dek_id, dek, nonce, pairs in [
    ("version 1", 1, master1, bytes([0xaa]) * 16, bytes(range(32, 64)), bytes.fromhex("0a0b0c0d0e0f101112131415"), [("tenant", "acme")]),
    ("version 2, empty context", 2, master2, bytes.fromhex("0f0e0d0c0b0a09080706050403020100"), bytes([0x5c]) * 32, bytes(12), []),
]:
    wcases.append({"name": name, "master_version": version, "context": [[k, v] for k, v in pairs],
                   "data_key_id": h(dek_id), "data_key": h(dek), "nonce": h(nonce),
                   "wrapped": h(wrapped_local(master, version, dek_id, dek, nonce, pairs))})
keyring_text = "credvault-keyring-v1 active=2\n1:%s\n2:%s\n" % (
    base64.b64encode(master1).decode(), base64.b64encode(master2).decode())
with open(os.path.join(HERE, "wrapped_key_v1.json"), "w") as f:
    json.dump({"source": "tests/data/gen_vectors.py (Python cryptography AESGCM, independent of the Rust code)",
               "format": "credvault wrapped key v1, provider local", "keyring_text": keyring_text,
               "tests": wcases}, f, indent=1)
    f.write("\n")
