"""Two servers the credential testers log into during the tests, on loopback ports.

- SMTP: aiosmtpd (the asyncio SMTP server of the Python project), AUTH PLAIN/LOGIN required,
  one user.
- OAuth2: an RFC 6749 section 4.4 token endpoint built on oauthlib's BackendApplicationServer,
  one client (secret in the form body or HTTP Basic).

Usage: tester_services.py SMTP_USER SMTP_PASSWORD OAUTH_CLIENT OAUTH_SECRET PORTS_FILE
Writes "SMTP_PORT OAUTH_PORT" to PORTS_FILE once both listen, then serves until killed.
"""

import os
import socket
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

# oauthlib refuses plain http:// URIs unless told this is a test.
os.environ["OAUTHLIB_INSECURE_TRANSPORT"] = "1"
from oauthlib.oauth2 import BackendApplicationServer, RequestValidator  # noqa: E402

smtp_user, smtp_password, client_id, client_secret, ports_file = sys.argv[1:6]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Sink:
    async def handle_DATA(self, server, session, envelope):
        return "250 OK"


def authenticator(server, session, envelope, mechanism, auth_data):
    ok = (
        isinstance(auth_data, LoginPassword)
        and auth_data.login == smtp_user.encode()
        and auth_data.password == smtp_password.encode()
    )
    # handled=False: the server answers 235 or 535 itself.
    return AuthResult(success=ok, handled=False)


class Client:
    def __init__(self, cid):
        self.client_id = cid


class Validator(RequestValidator):
    def client_authentication_required(self, request, *args, **kwargs):
        return True

    def authenticate_client(self, request, *args, **kwargs):
        cid, secret = request.client_id, request.client_secret
        if not cid and request.headers.get("Authorization", "").startswith("Basic "):
            import base64

            raw = base64.b64decode(request.headers["Authorization"][6:]).decode()
            cid, _, secret = raw.partition(":")
        if cid == client_id and secret == client_secret:
            request.client = Client(cid)
            return True
        return False

    def validate_grant_type(self, cid, grant_type, client, request, *args, **kwargs):
        return grant_type == "client_credentials"

    def validate_scopes(self, cid, scopes, client, request, *args, **kwargs):
        return all(s in ("read", "write") for s in scopes)

    def get_default_scopes(self, cid, request, *args, **kwargs):
        return ["read"]

    def save_bearer_token(self, token, request, *args, **kwargs):
        pass


oauth = BackendApplicationServer(Validator())


class TokenHandler(BaseHTTPRequestHandler):
    def do_POST(self):
        length = min(int(self.headers.get("Content-Length") or 0), 65536)
        body = self.rfile.read(length).decode("utf-8", "replace")
        uri = "http://127.0.0.1%s" % self.path
        headers, out, status = oauth.create_token_response(
            uri, http_method="POST", body=body, headers=dict(self.headers)
        )
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(out.encode())

    def log_message(self, *args):
        pass


smtp_port = free_port()
smtp = Controller(
    Sink(),
    hostname="127.0.0.1",
    port=smtp_port,
    authenticator=authenticator,
    auth_required=True,
    auth_require_tls=False,
)
smtp.start()
http = ThreadingHTTPServer(("127.0.0.1", 0), TokenHandler)
threading.Thread(target=http.serve_forever, daemon=True).start()
with open(ports_file + ".tmp", "w") as f:
    f.write("%d %d\n" % (smtp_port, http.server_address[1]))
os.replace(ports_file + ".tmp", ports_file)
threading.Event().wait()
