"""1Password's Python Connect SDK (onepasswordconnectsdk) against credvault's Connect API.

Run by tests/connect_compat.rs: python connect_sdk.py URL TOKEN CA_FILE PASSWORD. Exits 0 only
when every check holds; an assertion names the first that does not.
"""
import sys

import onepasswordconnectsdk
from onepasswordconnectsdk.client import new_client
from onepasswordconnectsdk.config import ClientConfig, load_dict

url, token, ca, password = sys.argv[1:5]
client = new_client(url, token, config=ClientConfig(ca_file=ca))

vaults = client.get_vaults()
assert [v.name for v in vaults] == ["production"], vaults
vault = client.get_vault_by_title("production")
assert vault.id == vaults[0].id and len(vault.id) == 26, vault
assert client.get_vault(vault.id).items == 2

items = client.get_items(vault.id)
assert sorted(i.title for i in items) == ["github-prod", "stripe-live"], items
assert all(len(i.id) == 26 for i in items)
assert [i.title for i in client.get_items(vault.id, 'title eq "stripe-live"')] == ["stripe-live"]

# By title, through the vault's name, as automations written for Connect look items up.
item = client.get_item("stripe-live", "production")
assert item.category == "LOGIN", item.category
fields = {f.id: f for f in item.fields}
assert fields["password"].type == "CONCEALED" and fields["password"].value == password
assert fields["password"].purpose == "PASSWORD"
assert fields["username"].value == "ops@acme.example" and fields["username"].purpose == "USERNAME"
otp = fields["totp_secret"]
assert otp.type == "OTP" and otp.value is None and len(otp.totp) == 6 and otp.totp.isdigit(), otp
assert item.urls[0].href == "https://dashboard.stripe.example/login"

# By id.
same = client.get_item(item.id, vault.id)
assert same.title == "stripe-live" and same.id == item.id

# The SDK's own loader.
loaded = load_dict(client, {"pw": {"opitem": "stripe-live", "opfield": ".password", "opvault": vault.id}})
assert loaded == {"pw": password}, loaded

# A missing item is Connect's 404.
try:
    client.get_item_by_id("a" * 26, vault.id)
    raise AssertionError("a missing item was found")
except onepasswordconnectsdk.client.FailedToRetrieveItemException as e:
    assert "404" in str(e), e
print("connect: ok")
