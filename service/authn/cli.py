"""``ztml token``: issue and inspect the bearer tokens the model service accepts."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from service.authn.errors import AuthenticationError, AuthnError
from service.authn.issuer import ensure_local_issuer, issue_token, issuers_path
from service.authn.trust import DEFAULT_AUDIENCE, LOCAL_ISSUER, IssuerTrust
from service.authn.verifier import JWTVerifier
from service.console import err_console, fail
from service.keys.errors import KeyError_
from service.keys.store import Signer
from service.toolchain.paths import POLICIES_DIR, ztml_home

app = typer.Typer(help="Issue and inspect bearer tokens (EdDSA JWTs) for the model service.")


def _split(value: str | None) -> list[str]:
    return [part.strip() for part in (value or "").split(",") if part.strip()]


def _scopes_for(roles: list[str]) -> list[str]:
    """Return the actions the role data grants to ``roles`` (empty if unknown)."""
    try:
        data = json.loads((POLICIES_DIR / "data" / "roles.json").read_text())
        known = data["roles"]
    except (OSError, ValueError, KeyError, TypeError):
        return []
    scopes: list[str] = []
    for role in roles:
        for action in known.get(role, {}).get("actions", []):
            if isinstance(action, str) and action not in scopes:
                scopes.append(action)
    return scopes


@app.command("issue")
def issue(
    sub: Annotated[str, typer.Option("--sub", help="Subject (user or client name).")],
    roles: Annotated[str, typer.Option(help="Comma-separated roles, e.g. predictor,analyst.")],
    tenant: Annotated[str, typer.Option(help="Tenant of the subject, e.g. demo.")],
    ttl: Annotated[int, typer.Option(help="Lifetime in seconds (max 7 days).")] = 3600,
    scopes: Annotated[
        str | None,
        typer.Option(help="Comma-separated scopes. Default: the actions the roles grant."),
    ] = None,
    key: Annotated[
        Path | None,
        typer.Option(help="Ed25519 private key to sign with. Default: $ZTML_HOME/keys/issuer.key."),
    ] = None,
    issuer: Annotated[str, typer.Option(help="The iss claim.")] = LOCAL_ISSUER,
    audience: Annotated[str, typer.Option(help="The aud claim.")] = DEFAULT_AUDIENCE,
) -> None:
    """Print a signed token, and nothing else, so `$(ztml token issue ...)` works.

    With the default key the local issuer is trusted in $ZTML_HOME/issuers.json (key
    and file are created if missing), so the service accepts the token.
    """
    role_list = _split(roles)
    if not role_list:
        raise fail("--roles is empty; pass e.g. --roles predictor,analyst.")
    scope_list = _split(scopes) if scopes is not None else _scopes_for(role_list)
    if not scope_list:
        raise fail(
            f"No scopes for roles {', '.join(role_list)} (unknown roles?); pass --scopes, "
            "e.g. --scopes predict,metadata."
        )
    home = ztml_home()
    try:
        if key is None:
            ensure_local_issuer(home)
            signer = Signer.from_file(home / "keys" / "issuer.key", identity=issuer)
        else:
            signer = Signer.from_file(key, identity=issuer)
            _warn_if_untrusted(home, signer.key_id)
        token = issue_token(
            signer,
            issuer=issuer,
            audience=audience,
            sub=sub,
            roles=role_list,
            tenant=tenant,
            scopes=scope_list,
            ttl_seconds=ttl,
        )
    except (AuthnError, KeyError_) as err:
        raise fail(str(err)) from None
    typer.echo(token)


def _warn_if_untrusted(home: Path, kid: str) -> None:
    path = issuers_path(home)
    try:
        trusted = kid in IssuerTrust.load(path).keys
    except AuthnError:
        trusted = False
    if not trusted:
        err_console.print(
            f"[yellow]warning:[/yellow] key {kid} is not trusted in {path}; the service "
            "will reject this token until the key is added there.",
            highlight=False,
            soft_wrap=True,
        )


@app.command("inspect")
def inspect(
    token: Annotated[str, typer.Argument(help="The token ('Bearer ' optional; '-' reads stdin).")],
    issuers: Annotated[
        Path | None,
        typer.Option(help="Trust file. Default: $ZTML_HOME/issuers.json."),
    ] = None,
) -> None:
    """Verify a token as the service would and print its claims, or why it is rejected."""
    if token == "-":  # noqa: S105 - "-" means stdin, not a password
        token = sys.stdin.read().strip()
    header = token if token.lower().startswith("bearer ") else f"Bearer {token}"
    path = issuers or issuers_path(ztml_home())
    try:
        verifier = JWTVerifier(IssuerTrust.load(path))
        claims = verifier.verify(header)
    except AuthenticationError as err:
        raise fail(f"token rejected: {err.reason}") from None
    except AuthnError as err:
        raise fail(str(err)) from None
    typer.echo(
        json.dumps(
            {
                "sub": claims.sub,
                "roles": list(claims.roles),
                "tenant": claims.tenant,
                "scopes": list(claims.scopes),
                "iss": claims.iss,
                "jti": claims.jti,
                "exp": claims.exp,
            },
            indent=2,
        )
    )
