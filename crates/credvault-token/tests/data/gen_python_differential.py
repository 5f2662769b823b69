#!/usr/bin/env python3
"""Fernet accept/reject verdicts from Python `cryptography` (the reference implementation), for a
corpus of valid, tampered and re-encoded tokens. Run once (cryptography 48.0.0) to write
python_differential.json; the Rust tests must agree with every verdict. Tokens are built with
fixed IVs and timestamps so the file is reproducible:  python3 gen_python_differential.py
"""
import base64, json, os
from cryptography.fernet import Fernet, InvalidToken

HERE = os.path.dirname(os.path.abspath(__file__))
K1 = "cw_0x689RpI-jtRR7oE8h_eQsKImvJapLeSbXpwF4e4="          # the Fernet spec's key
K2 = base64.urlsafe_b64encode(bytes(range(32))).decode()

def verdict(key, token, ttl, now):
    f = Fernet(key)
    try:
        pt = f.decrypt(token) if ttl is None else f.decrypt_at_time(token, ttl, now)
        return pt.hex()
    except InvalidToken:
        return None
    except ValueError:  # e.g. non-ASCII str: the call fails, the token is not accepted
        return None

cases = []
def add(kind, key, token, ttl, now):
    cases.append({"kind": kind, "key": key, "token": token, "ttl": ttl, "now": now,
                  "plaintext": verdict(key, token, ttl, now)})

T0 = 499162800  # 1985-10-26T01:20:00-07:00, the spec's time
for n, pt in enumerate([b"", b"h", b"hello", b"x" * 15, b"y" * 16, b"z" * 17, bytes(range(100))]):
    iv = bytes([(n * 16 + i) % 256 for i in range(16)])
    raw = base64.urlsafe_b64decode(Fernet(K1)._encrypt_from_parts(pt, T0, iv))
    tok = base64.urlsafe_b64encode(raw).decode()
    add("valid", K1, tok, None, T0)
    add("valid ttl", K1, tok, 60, T0 + 60)                 # boundary: ts + ttl == now passes
    add("expired", K1, tok, 60, T0 + 61)
    add("future within skew", K1, tok, 60, T0 - 60)
    add("future beyond skew", K1, tok, 60, T0 - 61)
    add("future, no ttl", K1, tok, None, 0)
    add("wrong key", K2, tok, None, T0)
    # Bit flips in every region of the decoded token, re-encoded canonically.
    for pos in sorted({0, 1, 8, 9, 24, 25, len(raw) - 33, len(raw) - 32, len(raw) - 1}):
        for bit in (0, 7):
            b = bytearray(raw); b[pos] ^= 1 << bit
            add(f"bit flip byte {pos} bit {bit}", K1, base64.urlsafe_b64encode(bytes(b)).decode(), None, T0)
    # Truncation of the decoded bytes.
    for cut in sorted({0, 1, 8, 9, 25, 41, 56, 57, 72, len(raw) - 16, len(raw) - 1}):
        if cut < len(raw):
            add(f"truncated to {cut}", K1, base64.urlsafe_b64encode(raw[:cut]).decode(), None, T0)
    # Re-encodings of the same bytes and string-level damage.
    add("standard alphabet", K1, base64.b64encode(raw).decode(), None, T0)
    add("no padding", K1, tok.rstrip("="), None, T0)
    add("surrounding whitespace", K1, "  \n" + tok + "\n\t", None, T0)
    add("newlines inside", K1, tok[:20] + "\n" + tok[20:40] + "\r\n" + tok[40:], None, T0)
    add("garbage inside", K1, tok[:10] + "!*." + tok[10:], None, T0)
    add("trailing garbage after padding", K1, tok + "garbage", None, T0)
    add("extra padding", K1, tok + "==", None, T0)
    add("one char deleted", K1, tok[:30] + tok[31:], None, T0)
    add("one char duplicated", K1, tok[:30] + tok[30] + tok[30:], None, T0)
    c = tok[30]
    add("one char case-swapped", K1, tok[:30] + (c.lower() if c.isupper() else c.upper()) + tok[31:], None, T0)
    stripped = tok.rstrip("=")
    if len(stripped) % 4 in (2, 3):
        last = stripped[-1]
        alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
        i = alphabet.index(last)
        other = alphabet[i ^ 1]
        add("non-canonical trailing bits", K1, stripped[:-1] + other + tok[len(stripped):], None, T0)
    add("non-ascii inside", K1, tok[:10] + "é" + tok[10:], None, T0)

# Extreme timestamps (Python integers do not overflow; Rust must not either).
for ts in (0, 2**32, 2**63, 2**64 - 1):
    raw = base64.urlsafe_b64decode(Fernet(K1)._encrypt_from_parts(b"edge", ts, bytes(16)))
    tok = base64.urlsafe_b64encode(raw).decode()
    for ttl, now in ((None, 0), (60, 0), (2**64 - 1, 2**64 - 1), (60, 2**63), (1, ts)):
        add(f"timestamp {ts}", K1, tok, ttl, now)

# Empty and junk strings.
for junk in ["", "=", "====", "gA==", "gAAAAAA=", "%%%%", "\u00e9"]:
    add("junk", K1, junk, None, T0)

with open(os.path.join(HERE, "python_differential.json"), "w") as f:
    json.dump({"source": "gen_python_differential.py, Python cryptography " + __import__("cryptography").__version__,
               "tests": cases}, f, indent=0)
    f.write("\n")
acc = sum(1 for c in cases if c["plaintext"] is not None)
print(len(cases), "cases,", acc, "accepted by Python")
for k in ["standard alphabet","no padding","surrounding whitespace","newlines inside","garbage inside","trailing garbage after padding","extra padding","non-canonical trailing bits","non-ascii inside","one char deleted"]:
    v = [c["plaintext"] is not None for c in cases if c["kind"] == k]
    print(f"  {k}: accepted {sum(v)}/{len(v)}")
