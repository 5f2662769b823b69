#!/usr/bin/env python3
"""Record MAC v1 vectors (docs/formats.md, "Record MACs v1"), computed from the written
specification with Python's hmac/hashlib only, independently of the Rust code.

Run: python3 make_record_mac_vectors.py > record_mac_v1.json
"""
import hashlib
import hmac
import json
import struct

DATA_KEY = bytes(range(32))
KEY_ID = bytes(range(0xA0, 0xB0))


def mac_key(data_key):
    # HKDF-Expand (RFC 5869) with the data key as PRK, one block.
    return hmac.new(data_key, b"credvault record mac v1" + b"\x01", hashlib.sha256).digest()


def b(x):
    if isinstance(x, str):
        x = x.encode()
    return struct.pack(">Q", len(x)) + x


def u64(v):
    return struct.pack(">Q", v)


def i64(v):
    return struct.pack(">q", v)


def opt_i64(v):
    return b"\x00" if v is None else b"\x01" + i64(v)


def lst(items):
    return u64(len(items)) + b"".join(b(i) for i in items)


def credential(r):
    m = b("credential") + b(r["tenant"]) + b(r["id"]) + b(r["name"]) + b(r["type"])
    m += b(r["environment"]) + b(r["description"]) + lst(r["tags"])
    m += bytes([1 if r["is_active"] else 0]) + opt_i64(r["expires_at"])
    m += b(r["created_by"]) + i64(r["created_at"]) + i64(r["updated_at"]) + u64(r["version"])
    m += b(r["public"]) + lst(r["secret_fields"]) + b(bytes.fromhex(r["key_id"]))
    m += b(bytes.fromhex(r["secret"]))
    # Reveal policies set on the credential: only when there are some, sorted by field.
    reveal = r.get("reveal", {})
    if reveal:
        m += b("reveal") + u64(len(reveal))
        for field in sorted(reveal):
            m += b(field) + b(reveal[field])
    return m


def data_key(k):
    m = b("data key") + b(k["tenant"]) + b(k["tenant"]) + b(k["tenant_name"])
    m += i64(k["tenant_created_at"]) + b(bytes.fromhex(k["key_id"])) + i64(k["created_at"])
    return m


def tag(msg):
    return "01" + hmac.new(mac_key(DATA_KEY), msg, hashlib.sha256).hexdigest()


cred = {
    "tenant": "acme", "id": "cred_" + "0123456789abcdef" * 2, "name": "bot",
    "type": "llm_api_key", "environment": "production", "description": "d\u00e9j\u00e0",
    "tags": ["ci", "llm"], "is_active": True, "expires_at": None, "created_by": "alice",
    "created_at": 1790000000000, "updated_at": 1790000000001, "version": 3,
    "public": '{"base_url":"https://api.example.com/v1"}',
    "secret_fields": ["api_key"], "key_id": KEY_ID.hex(), "secret": "0102030405",
}
cred2 = dict(cred, is_active=False, expires_at=-5, tags=[], secret_fields=[], description="")
cred3 = dict(cred, type="basic_auth_totp", secret_fields=["password", "totp_secret"],
             reveal={"totp_secret": "write-only", "password": "use-only"})
key = {"tenant": "acme", "tenant_name": "Acme", "tenant_created_at": 1789999999000,
       "key_id": KEY_ID.hex(), "created_at": 1789999999001}
print(json.dumps({
    "source": "credvault, docs/formats.md Record MACs v1; made by make_record_mac_vectors.py",
    "data_key": DATA_KEY.hex(),
    "mac_key": mac_key(DATA_KEY).hex(),
    "credentials": [dict(row=cred, mac=tag(credential(cred))),
                    dict(row=cred2, mac=tag(credential(cred2))),
                    dict(row=cred3, mac=tag(credential(cred3)))],
    "data_keys": [dict(row=key, mac=tag(data_key(key)))],
}, indent=1, ensure_ascii=False))
