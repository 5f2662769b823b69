#!/usr/bin/env python3
"""Vectors for the credvault-kms payloads, written from docs/formats.md with Python's
`cryptography` and hashlib (not from the Rust code). Run: python3 gen_vectors.py > kms_v1.json"""
import hashlib, json, struct
from cryptography.hazmat.primitives.ciphers.aead import AESGCM


def context(pairs):
    out = struct.pack(">H", len(pairs))
    for k, v in sorted(pairs.items(), key=lambda kv: kv[0].encode()):
        out += struct.pack(">H", len(k.encode())) + k.encode()
        out += struct.pack(">H", len(v.encode())) + v.encode()
    return out


def header_prefix(provider, version, key_id):
    p = provider.encode()
    return bytes([1, len(p)]) + p + struct.pack(">I", version) + key_id


ctx = context({"tenant": "acme", "purpose": "vector"})
key_id = bytes(range(0x10, 0x20))
data_key = bytes(range(0x40, 0x60))

# PKCS#11: AES-256-GCM in the token, AAD = full header (with payload length 61) || context.
master = bytes(range(0x00, 0x20))
iv = bytes.fromhex("a1a2a3a4a5a6a7a8a9aaabac")
provider = "pkcs11:credvault-ci/vector"
header = header_prefix(provider, 1, key_id) + struct.pack(">H", 61)
ct = AESGCM(master).encrypt(iv, data_key, header + ctx)
pkcs11 = {
    "token_key": master.hex(),
    "provider": provider,
    "context": ctx.hex(),
    "data_key": data_key.hex(),
    "wrapped": (header + bytes([1]) + iv + ct).hex(),
}

# AWS KMS: the encryption context sent to KMS binds the header prefix and the context.
kms_provider = "aws-kms:1234abcd-12ab-34cd-56ef-1234567890ab"
prefix = header_prefix(kms_provider, 1, key_id)
digest = hashlib.sha256(struct.pack(">I", len(prefix)) + prefix + ctx).hexdigest()
kms = {
    "provider": kms_provider,
    "key_id": key_id.hex(),
    "context": ctx.hex(),
    "header_prefix": prefix.hex(),
    "kms_context": {"credvault-aad-sha256": digest},
}
print(json.dumps({"pkcs11_aes256gcm_v1": pkcs11, "aws_kms_context_v1": kms}, indent=2))
