#!/usr/bin/env python3
"""A `sealed` record body vector (docs/formats.md, "Audit log v1", sealed records), computed
from the written specification with Python's `cryptography` (AESGCM), independently of the
Rust code.

Run: python3 gen_sealed.py > sealed.json
"""
import base64
import json
import struct

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

KEY = bytes(range(0x20, 0x40))
NONCE = bytes(range(0x60, 0x6C))
LOG = "00112233445566778899aabbccddeeff"
SEQ = 41
EVENT = (b'{"id":"evt_0000000000000001","time":"2026-09-21T14:13:20.123Z","tenant":"acme",'
         b'"actor":"alice","action":"accessed","outcome":"success"}')


def framed(parts):
    return b"".join(struct.pack(">Q", len(p)) + p for p in parts)


aad = framed([b"credvault-audit sealed v1", LOG.encode(), str(SEQ).encode()])
sealed = NONCE + AESGCM(KEY).encrypt(NONCE, EVENT, aad)
print(json.dumps({
    "source": "credvault docs/formats.md sealed records; made by gen_sealed.py",
    "key_hex": KEY.hex(), "nonce_hex": NONCE.hex(), "log": LOG, "seq": SEQ,
    "event": EVENT.decode(), "aad_hex": aad.hex(),
    "body": {"sealed": base64.standard_b64encode(sealed).decode()},
}, indent=1))
