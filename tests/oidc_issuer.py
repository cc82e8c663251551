"""A tiny OIDC issuer for tests: a JWKS and a client-credentials token endpoint on loopback.

Consumes HTTP requests (`GET /jwks`, `POST /token` with HTTP Basic client authentication).
Produces RS256 JWTs (PyJWT, a fresh RSA key per issuer) with `iss`, `aud`, `sub`, `scope`,
`iat` and `exp`, which a Kafka broker configured with `OAuthBearerListener` accepts. A wrong
client secret gets 401 `invalid_client`, as a real identity provider answers.

    with OidcIssuer({"svc": "secret"}) as issuer:
        LocalKafka(oauth=issuer.listener())
"""

from __future__ import annotations

import base64
import json
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa

from bus.localkafka import OAuthBearerListener

__all__ = ["OidcIssuer"]

AUDIENCE = "dastra-kafka-test-cluster"


class OidcIssuer:
    """A token endpoint and JWKS on 127.0.0.1 (a free port), for as long as it is open."""

    def __init__(self, clients: dict[str, str], *, lifetime_s: int = 3600) -> None:
        self._clients = dict(clients)
        self._lifetime_s = lifetime_s
        self._key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self._kid = "test-key-1"
        self.issued = 0  # tokens handed out
        self.refused = 0  # token requests refused
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        if self._server is None:
            raise RuntimeError("the issuer is not running: use `with OidcIssuer(...)`")
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    @property
    def issuer(self) -> str:
        return self.base_url

    @property
    def token_url(self) -> str:
        return f"{self.base_url}/token"

    @property
    def jwks_url(self) -> str:
        return f"{self.base_url}/jwks"

    def listener(self) -> OAuthBearerListener:
        """The broker's configuration for tokens from this issuer."""
        return OAuthBearerListener(
            jwks_url=self.jwks_url, token_url=self.token_url, audience=AUDIENCE, issuer=self.issuer
        )

    def _jwks(self) -> dict[str, Any]:
        jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(self._key.public_key()))
        jwk.update({"kid": self._kid, "use": "sig", "alg": "RS256"})
        return {"keys": [jwk]}

    def _issue(self, client_id: str, scope: str | None) -> dict[str, Any]:
        now = int(time.time())
        claims = {
            "iss": self.issuer,
            "aud": AUDIENCE,
            "sub": client_id,
            "iat": now,
            "exp": now + self._lifetime_s,
            "scope": scope or "kafka",
        }
        token = jwt.encode(claims, self._key, algorithm="RS256", headers={"kid": self._kid})
        with self._lock:
            self.issued += 1
        return {"access_token": token, "token_type": "Bearer", "expires_in": self._lifetime_s}

    def _authenticate(self, header: str | None, form: dict[str, str]) -> str | None:
        client_id = secret = None
        if header and header.lower().startswith("basic "):
            try:
                decoded = base64.b64decode(header[6:]).decode()
            except ValueError:
                return None
            raw_id, _, raw_secret = decoded.partition(":")
            client_id = urllib.parse.unquote_plus(raw_id)
            secret = urllib.parse.unquote_plus(raw_secret)
        else:  # client_secret_post
            client_id, secret = form.get("client_id"), form.get("client_secret")
        if client_id is not None and self._clients.get(client_id) == secret:
            return client_id
        return None

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        issuer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass  # quiet: pytest shows failures, not every request

            def _answer(self, status: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                if self.path.split("?")[0] == "/jwks":
                    self._answer(200, issuer._jwks())
                else:
                    self._answer(404, {"error": "not_found"})

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                form = dict(urllib.parse.parse_qsl(self.rfile.read(length).decode()))
                if self.path.split("?")[0] != "/token":
                    self._answer(404, {"error": "not_found"})
                elif form.get("grant_type") != "client_credentials":
                    self._answer(400, {"error": "unsupported_grant_type"})
                else:
                    client_id = issuer._authenticate(self.headers.get("Authorization"), form)
                    if client_id is None:
                        with issuer._lock:
                            issuer.refused += 1
                        self._answer(
                            401,
                            {"error": "invalid_client", "error_description": "bad credentials"},
                        )
                    else:
                        self._answer(200, issuer._issue(client_id, form.get("scope")))

        return Handler

    def __enter__(self) -> OidcIssuer:
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="oidc-issuer", daemon=True
        )
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._server = self._thread = None
