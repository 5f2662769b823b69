"""HashiCorp's Python client (hvac) against credvault's Vault-compatible API (KV v2, TOTP).

Run by tests/vault_compat.rs: python hvac_kv.py URL TOKEN CA_FILE. Exits 0 only when every
check holds; an assertion names the first that does not.
"""
import sys

import hvac
import hvac.exceptions

url, token, ca = sys.argv[1], sys.argv[2], sys.argv[3]

# A bad token: not authenticated, and a read is refused as Vault refuses it.
bad = hvac.Client(url=url, token="cvk_000000000000000000000000000000000000000000000000", verify=ca)
assert not bad.is_authenticated(), "a bad token is not authenticated"
try:
    bad.secrets.kv.v2.read_secret_version(path="app/db", raise_on_deleted_version=True)
    raise AssertionError("a bad token read a secret")
except hvac.exceptions.Forbidden:
    pass

client = hvac.Client(url=url, token=token, verify=ca)
assert client.is_authenticated(), "the key authenticates as a token"
assert client.sys.is_initialized()
assert not client.sys.is_sealed()
me = client.auth.token.lookup_self()["data"]
assert "reveal" in me["policies"] and "write" in me["policies"], me

# Write, read, check-and-set.
w = client.secrets.kv.v2.create_or_update_secret(path="app/db", secret={"user": "svc", "password": "hvac secret one"})
assert w["data"]["version"] == 1, w
r = client.secrets.kv.v2.read_secret_version(path="app/db", raise_on_deleted_version=True)
assert r["data"]["data"] == {"user": "svc", "password": "hvac secret one"}, r
assert r["data"]["metadata"]["version"] == 1
w = client.secrets.kv.v2.create_or_update_secret(path="app/db", secret={"user": "svc", "password": "hvac secret two"}, cas=1)
assert w["data"]["version"] == 2, w
try:
    client.secrets.kv.v2.create_or_update_secret(path="app/db", secret={"x": "y"}, cas=1)
    raise AssertionError("a stale cas was accepted")
except hvac.exceptions.InvalidRequest:
    pass
r = client.secrets.kv.v2.read_secret_version(path="app/db", raise_on_deleted_version=True)
assert r["data"]["data"]["password"] == "hvac secret two"

# Metadata and lists.
m = client.secrets.kv.v2.read_secret_metadata(path="app/db")
assert m["data"]["current_version"] == 2, m
client.secrets.kv.v2.create_or_update_secret(path="app/api/key", secret={"k": "v"})
client.secrets.kv.v2.create_or_update_secret(path="other", secret={"k": "v"})
keys = client.secrets.kv.v2.list_secrets(path="app")["data"]["keys"]
assert keys == ["api/", "db"], keys
keys = client.secrets.kv.v2.list_secrets(path="")["data"]["keys"]
assert keys == ["app/", "other"], keys

# Versions: read an older one; soft delete, undelete, destroy; max_versions.
r = client.secrets.kv.v2.read_secret_version(path="app/db", version=1, raise_on_deleted_version=True)
assert r["data"]["data"]["password"] == "hvac secret one", r
client.secrets.kv.v2.delete_latest_version_of_secret(path="app/db")
try:
    client.secrets.kv.v2.read_secret_version(path="app/db", raise_on_deleted_version=True)
    raise AssertionError("a soft-deleted version was read")
except hvac.exceptions.InvalidPath:
    pass
client.secrets.kv.v2.undelete_secret_versions(path="app/db", versions=[2])
r = client.secrets.kv.v2.read_secret_version(path="app/db", raise_on_deleted_version=True)
assert r["data"]["data"]["password"] == "hvac secret two", r
client.secrets.kv.v2.delete_secret_versions(path="app/db", versions=[1])
client.secrets.kv.v2.destroy_secret_versions(path="app/db", versions=[1])
m = client.secrets.kv.v2.read_secret_metadata(path="app/db")
assert m["data"]["versions"]["1"]["destroyed"] is True, m
assert m["data"]["versions"]["1"]["deletion_time"] != "", m
client.secrets.kv.v2.update_metadata(path="app/db", max_versions=2, custom_metadata={"owner": "hvac"})
client.secrets.kv.v2.create_or_update_secret(path="app/db", secret={"password": "hvac secret three"}, cas=2)
m = client.secrets.kv.v2.read_secret_metadata(path="app/db")
assert sorted(m["data"]["versions"]) == ["2", "3"], m
assert m["data"]["oldest_version"] == 2 and m["data"]["custom_metadata"] == {"owner": "hvac"}, m
r = client.secrets.kv.v2.read_secret_version(path="app/db", version=2, raise_on_deleted_version=True)
assert r["data"]["data"]["password"] == "hvac secret two", r

# Delete: gone.
client.secrets.kv.v2.delete_metadata_and_all_versions(path="other")
try:
    client.secrets.kv.v2.read_secret_version(path="other", raise_on_deleted_version=True)
    raise AssertionError("a deleted secret was read")
except hvac.exceptions.InvalidPath:
    pass
# The TOTP engine (hvac has no class for it: its generic read/write/list/delete, as for any
# engine). Codes are checked against RFC 6238 computed here with hmac and hashlib.
import base64
import hashlib
import hmac
import struct
import time
import urllib.parse


def rfc6238(url, t):
    q = urllib.parse.parse_qs(urllib.parse.urlparse(url).query)
    secret = q["secret"][0].upper()
    key = base64.b32decode(secret + "=" * (-len(secret) % 8))
    algo = q.get("algorithm", ["SHA1"])[0].lower()
    digits = int(q.get("digits", ["6"])[0])
    period = int(q.get("period", ["30"])[0])
    mac = hmac.new(key, struct.pack(">Q", int(t) // period), getattr(hashlib, algo)).digest()
    o = mac[-1] & 0x0F
    value = (struct.unpack(">I", mac[o:o + 4])[0] & 0x7FFFFFFF) % (10 ** digits)
    return str(value).zfill(digits)


made = client.write_data("totp/keys/hvac-bot", data={"generate": True, "issuer": "Acme", "account_name": "bot@acme.example", "algorithm": "SHA256", "digits": 8})
url = made["data"]["url"]
assert url.startswith("otpauth://totp/"), made
before = time.time()
code = client.read("totp/code/hvac-bot")["data"]["code"]
after = time.time()
assert code in (rfc6238(url, before), rfc6238(url, after)), (code, url)
assert client.write_data("totp/code/hvac-bot", data={"code": code})["data"]["valid"] is True
try:
    client.write_data("totp/code/hvac-bot", data={"code": code})
    raise AssertionError("a used code was accepted again")
except hvac.exceptions.InvalidRequest:
    pass
imported = "otpauth://totp/Example:alice?secret=JBSWY3DPEHPK3PXP&issuer=Example&period=60"
client.write_data("totp/keys/hvac-imported", data={"url": imported})
k = client.read("totp/keys/hvac-imported")["data"]
assert k == {"account_name": "alice", "algorithm": "SHA1", "digits": 6, "issuer": "Example", "period": 60}, k
now = time.time()
code = client.read("totp/code/hvac-imported")["data"]["code"]
assert code in (rfc6238(imported, now), rfc6238(imported, time.time())), code
keys = client.list("totp/keys")["data"]["keys"]
assert keys == ["hvac-bot", "hvac-imported"], keys
client.delete("totp/keys/hvac-imported")
assert client.list("totp/keys")["data"]["keys"] == ["hvac-bot"]
# The transit engine, through hvac's own transit class.
transit = client.secrets.transit
transit.create_key(name="hvac-orders")
plain = base64.b64encode(b"hvac transit plaintext").decode()
ct = transit.encrypt_data(name="hvac-orders", plaintext=plain)["data"]["ciphertext"]
assert ct.startswith("vault:v1:"), ct
assert transit.decrypt_data(name="hvac-orders", ciphertext=ct)["data"]["plaintext"] == plain
transit.rotate_key(name="hvac-orders")
assert transit.read_key(name="hvac-orders")["data"]["latest_version"] == 2
rewrapped = transit.rewrap_data(name="hvac-orders", ciphertext=ct)["data"]["ciphertext"]
assert rewrapped.startswith("vault:v2:"), rewrapped
assert transit.decrypt_data(name="hvac-orders", ciphertext=rewrapped)["data"]["plaintext"] == plain
batch = transit.encrypt_data(name="hvac-orders", batch_input=[{"plaintext": plain}, {"plaintext": plain}])["data"]["batch_results"]
assert len(batch) == 2 and all(b["ciphertext"].startswith("vault:v2:") for b in batch), batch
dk = transit.generate_data_key(name="hvac-orders", key_type="plaintext")["data"]
assert transit.decrypt_data(name="hvac-orders", ciphertext=dk["ciphertext"])["data"]["plaintext"] == dk["plaintext"]
transit.update_key_configuration(name="hvac-orders", min_decryption_version=2)
try:
    transit.decrypt_data(name="hvac-orders", ciphertext=ct)
    raise AssertionError("a retired version decrypted")
except hvac.exceptions.InvalidRequest:
    pass
assert transit.list_keys()["data"]["keys"] == ["hvac-orders"]
try:
    transit.delete_key(name="hvac-orders")
    raise AssertionError("a key was deleted without deletion_allowed")
except hvac.exceptions.InvalidRequest:
    pass
transit.update_key_configuration(name="hvac-orders", deletion_allowed=True)
transit.delete_key(name="hvac-orders")
print("hvac: ok")
