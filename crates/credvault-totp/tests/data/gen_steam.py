#!/usr/bin/env python3
"""Steam Guard codes from an independent implementation (Python hmac), for steam_guard.json."""
import base64, hmac, hashlib, json, os, struct
CHARS = "23456789BCDFGHJKMNPQRTVWXY"
def steam(secret: bytes, t: int) -> str:
    mac = hmac.new(secret, struct.pack(">Q", t // 30), hashlib.sha1).digest()
    off = mac[-1] & 0x0F
    v = struct.unpack(">I", mac[off:off + 4])[0] & 0x7FFFFFFF
    out = ""
    for _ in range(5):
        out += CHARS[v % len(CHARS)]
        v //= len(CHARS)
    return out
secrets = [bytes(range(20)), b"12345678901234567890", bytes.fromhex("c4a2f1e07b3d9a5566778899aabbccddeeff0011")]
cases = []
for s in secrets:
    for t in (0, 59, 1_111_111_109, 1_700_000_000, 2_000_000_000, 20_000_000_000):
        cases.append({"secret_base32": base64.b32encode(s).decode().rstrip("="), "time": t, "code": steam(s, t)})
json.dump({"source": "gen_steam.py (Python hmac)", "tests": cases},
          open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "steam_guard.json"), "w"), indent=1)
