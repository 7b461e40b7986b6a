"""The service's configuration: environment variables read once into a frozen dataclass.

Every variable has a safe default except the model path; a bad value stops the service
at start with a message naming the variable and what it accepts.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from service.app.errors import ConfigError
from service.chain.errors import NoteError
from service.chain.note import Verifier
from service.chain.tlog import parse_witness_keys
from service.digests import DIGEST_FORM, DIGEST_RE
from service.toolchain.paths import ztml_home

RiskTier = Literal["low", "medium", "high"]
#: Whether the service asks callers for a TLS client certificate (``ZTML_TLS_CLIENT_AUTH``).
ClientAuth = Literal["off", "optional", "required"]
CLIENT_AUTH_MODES: tuple[ClientAuth, ...] = ("off", "optional", "required")
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")
# BentoML's own request timeout (the service's ``traffic`` setting). The service's deadline
# must end first, so a slow request still gets the service's error shape and its audit event.
BENTOML_TIMEOUT_SECONDS = 30


@dataclass(frozen=True)
class TlsSettings:
    """TLS on the service port (see :mod:`service.app.tls`).

    Attributes:
        cert_file: The server certificate, PEM, leaf first, any intermediates after it
            (``ZTML_TLS_CERT``; ``tls.crt`` of a ``kubernetes.io/tls`` Secret).
        key_file: Its private key, PEM (``ZTML_TLS_KEY``; ``tls.key``). ``ZTML_TLS_DIR``
            names a directory holding both as ``tls.crt`` and ``tls.key`` instead (a
            mounted ``kubernetes.io/tls`` Secret).
        client_ca_file: The CA certificates that may sign callers' client certificates,
            PEM (``ZTML_TLS_CLIENT_CA``; ``ca.crt``); None without client certificates.
        client_auth: ``off`` (no client certificate asked for), ``optional`` (a caller
            may present one; one that does not verify ends the handshake) or ``required``
            (a caller without a verified one cannot complete the handshake)
            (``ZTML_TLS_CLIENT_AUTH``; default ``required`` with a client CA, else ``off``).
    """

    cert_file: Path
    key_file: Path
    client_ca_file: Path | None = None
    client_auth: ClientAuth = "off"


@dataclass(frozen=True)
class AppConfig:
    """Everything the model service reads from its environment.

    Attributes:
        home: the state directory (``ZTML_HOME``; keys, ledger, audit log, review queue).
        model_path: the model artifact (``ZTML_MODEL_PATH``).
        model_digest: a pinned digest the artifact must have (``ZTML_MODEL_DIGEST``).
        ledger_url: the provenance ledger (``ZTML_LEDGER_URL``).
        monitor_url: the store shared by the replicas of a scaled-out service for the
            monitors' state (rate limits, flood counts, extraction histories) and the
            review queue: a ``postgresql://`` URL (``ZTML_MONITOR_URL``); None (unset)
            keeps them in SQLite files under ``home``, shared by this host's workers only.
        trust_dir: directory of trusted ``*.pub`` keys (``ZTML_TRUST_DIR``).
        ledger_witnesses: witnesses that must all have cosigned the ledger checkpoint the
            start-up gate relies on (``ZTML_LEDGER_WITNESS_KEYS``: their
            ``cosignature/v1`` vkeys, separated by white space; default none).
        oms_signers_dir: directory of the ``*.pub`` keys trusted to sign the model's OMS
            bundle (``ZTML_OMS_SIGNERS_DIR``, default ``<trust_dir>/oms_signers``).
        opa_url: the OPA server (``ZTML_OPA_URL``): ``unix:///path/to/opa.sock`` or
            ``http(s)://host:port``.
        opa_timeout_seconds: the time OPA has for one decision (``ZTML_OPA_TIMEOUT_MS``).
        opa_tls_files: for mutual TLS with OPA (an ``https`` URL): the CA that signed OPA's
            certificate, the service's client certificate and its key
            (``ZTML_OPA_CA_FILE``, ``ZTML_OPA_CERT_FILE``, ``ZTML_OPA_KEY_FILE``; all or none).
        model_name: the model's name in policies (``ZTML_MODEL_NAME``).
        tenant: the tenant owning the model (``ZTML_TENANT``).
        risk_tier: the model's risk tier (``ZTML_RISK_TIER``).
        max_body_bytes: the largest accepted request body (``ZTML_MAX_BODY_BYTES``).
        max_batch: the hard cap on instances per request (``ZTML_MAX_BATCH``).
        rate_per_minute: the rate limit of a subject without a role the policy knows (and
            gives no limit; it denies such a subject anyway) (``ZTML_RATE_PER_MINUTE``).
        rate_burst: the token bucket's burst (``ZTML_RATE_BURST``).
        flood_subject_per_minute: one subject's request rate that is a flood
            (``ZTML_FLOOD_SUBJECT_PER_MINUTE``).
        flood_global_per_minute: the whole service's request rate that is a flood; set it
            to what the deployment can serve (``ZTML_FLOOD_GLOBAL_PER_MINUTE``).
        audit_stdout: also print audit records on stdout (``ZTML_AUDIT_STDOUT``).
        workers: BentoML worker processes (``ZTML_WORKERS``).
        squeeze_fpr: the squeezer's calibrated false-positive rate (``ZTML_SQUEEZE_FPR``).
        suspicion_threshold: suspicion above which a request is queued for review
            (``ZTML_SUSPICION_THRESHOLD``).
        drift_window: inputs per drift test (``ZTML_DRIFT_WINDOW``).
        drift_alpha: the drift test's family-wise error rate (``ZTML_DRIFT_ALPHA``).
        request_timeout_seconds: the deadline for one request, body upload included; a
            slower request gets 504 (``ZTML_REQUEST_TIMEOUT_MS``, below BentoML's own
            30 s).
        tls: TLS on the service port (``ZTML_TLS_*``); None when none is configured, and
            then the service starts only with ``insecure_plain_http``.
        insecure_plain_http: serve plain HTTP, without TLS, on the service port
            (``ZTML_INSECURE_PLAIN_HTTP``; default false). Bearer tokens then cross the
            network in the clear; the start is logged and audited as such.
    """

    home: Path
    model_path: Path
    model_digest: str | None
    ledger_url: str
    monitor_url: str | None
    trust_dir: Path
    ledger_witnesses: tuple[Verifier, ...]
    oms_signers_dir: Path
    opa_url: str
    opa_timeout_seconds: float
    opa_tls_files: tuple[Path, Path, Path] | None
    model_name: str
    tenant: str
    risk_tier: RiskTier
    max_body_bytes: int
    max_batch: int
    rate_per_minute: float
    rate_burst: int
    flood_subject_per_minute: float
    flood_global_per_minute: float
    audit_stdout: bool
    workers: int
    squeeze_fpr: float
    suspicion_threshold: float
    drift_window: int
    drift_alpha: float
    request_timeout_seconds: float
    tls: TlsSettings | None = None
    insecure_plain_http: bool = False

    @property
    def monitor_db(self) -> Path:
        """The monitor's shared SQLite database."""
        return self.home / "run" / "monitor.db"

    @property
    def monitor_store(self) -> Path | str:
        """Where the monitors keep their state: the shared URL, else the SQLite file."""
        return self.monitor_url or self.monitor_db

    @property
    def review_store(self) -> Path | str:
        """Where the review queue is: the shared URL, else the SQLite file."""
        return self.monitor_url or self.review_db

    @property
    def audit_dir(self) -> Path:
        """The audit log directory (one chain per worker process)."""
        return self.home / "audit"

    @property
    def review_db(self) -> Path:
        """The review queue database."""
        return self.home / "review.db"

    @property
    def issuers_path(self) -> Path:
        """The trusted token issuers."""
        return self.home / "issuers.json"


def _int(env: Mapping[str, str], name: str, default: int, *, low: int, high: int) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not an integer ({low}..{high}).") from None
    if not low <= value <= high:
        raise ConfigError(f"{name}={value} is out of range; use {low}..{high}.")
    return value


def _float(env: Mapping[str, str], name: str, default: float, *, low: float, high: float) -> float:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a number ({low}..{high}).") from None
    if not low <= value <= high:  # also refuses NaN
        raise ConfigError(f"{name}={value} is out of range; use {low}..{high}.")
    return value


def _bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    lowered = raw.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name}={raw!r} is not a boolean; use true or false.")


def _name(env: Mapping[str, str], name: str, default: str) -> str:
    value = env.get(name) or default
    if not _NAME_RE.fullmatch(value):
        raise ConfigError(
            f"{name}={value!r} is not a valid name (letters, digits, '.', '_', '-'; "
            "at most 63 characters)."
        )
    return value


def _tls(env: Mapping[str, str]) -> tuple[TlsSettings | None, bool]:
    """Read the ``ZTML_TLS_*`` settings and the plain-HTTP opt-out.

    Raises:
        ConfigError: the settings contradict each other or are incomplete.
    """
    plain = _bool(env, "ZTML_INSECURE_PLAIN_HTTP", False)
    cert, key = env.get("ZTML_TLS_CERT") or "", env.get("ZTML_TLS_KEY") or ""
    if tls_dir := env.get("ZTML_TLS_DIR") or "":
        # A mounted kubernetes.io/tls Secret: tls.crt and tls.key in one directory.
        if cert or key:
            raise ConfigError(
                "ZTML_TLS_DIR names the directory of tls.crt and tls.key; unset "
                "ZTML_TLS_CERT and ZTML_TLS_KEY, or ZTML_TLS_DIR."
            )
        cert, key = f"{tls_dir}/tls.crt", f"{tls_dir}/tls.key"
    client_ca = env.get("ZTML_TLS_CLIENT_CA") or ""
    mode = env.get("ZTML_TLS_CLIENT_AUTH") or ("required" if client_ca else "off")
    if mode not in CLIENT_AUTH_MODES:
        raise ConfigError(
            f"ZTML_TLS_CLIENT_AUTH={mode!r} must be one of {', '.join(CLIENT_AUTH_MODES)}."
        )
    if plain:
        given = [
            n
            for n in ("ZTML_TLS_DIR", "ZTML_TLS_CERT", "ZTML_TLS_KEY", "ZTML_TLS_CLIENT_CA")
            if env.get(n)
        ]
        if given:
            raise ConfigError(
                f"ZTML_INSECURE_PLAIN_HTTP=true turns TLS off, yet {', '.join(given)} "
                "set: unset one or the other."
            )
        return None, True
    if not cert and not key and not client_ca:
        return None, False  # the start-up check refuses to serve without TLS
    if not cert or not key:
        missing = "ZTML_TLS_CERT" if not cert else "ZTML_TLS_KEY"
        raise ConfigError(
            f"TLS needs both ZTML_TLS_CERT and ZTML_TLS_KEY (PEM files); {missing} is unset."
        )
    if mode == "off" and client_ca:
        raise ConfigError(
            "ZTML_TLS_CLIENT_CA is set but ZTML_TLS_CLIENT_AUTH=off: set it to optional or "
            "required, or unset ZTML_TLS_CLIENT_CA."
        )
    if mode != "off" and not client_ca:
        raise ConfigError(
            f"ZTML_TLS_CLIENT_AUTH={mode} needs ZTML_TLS_CLIENT_CA, the CA certificates "
            "that sign callers' client certificates."
        )
    settings = TlsSettings(
        cert_file=Path(cert).expanduser(),
        key_file=Path(key).expanduser(),
        client_ca_file=Path(client_ca).expanduser() if client_ca else None,
        client_auth=mode,  # checked above
    )
    return settings, False


def load_config(env: Mapping[str, str] | None = None) -> AppConfig:
    """Read the service configuration from the environment.

    Args:
        env: the environment (default ``os.environ``).

    Raises:
        ConfigError: a variable is missing or has a bad value; the message names it.
    """
    env = os.environ if env is None else env
    home = Path(env["ZTML_HOME"]).expanduser() if env.get("ZTML_HOME") else ztml_home()
    raw_model = env.get("ZTML_MODEL_PATH")
    model_path = (
        Path(raw_model).expanduser() if raw_model else home / "models" / "model.safetensors"
    )
    digest = env.get("ZTML_MODEL_DIGEST") or None
    if digest is not None and not DIGEST_RE.fullmatch(digest):
        raise ConfigError(f"ZTML_MODEL_DIGEST={digest!r} is not '{DIGEST_FORM}'.")
    opa_url = env.get("ZTML_OPA_URL") or "http://127.0.0.1:8181"
    if not re.fullmatch(r"https?://[^/\s]+/?|unix:///[^\s?#]+", opa_url):
        raise ConfigError(
            f"ZTML_OPA_URL={opa_url!r} is neither unix:///absolute/path/to/opa.sock "
            "nor an http(s)://host:port URL."
        )
    tls_names = ("ZTML_OPA_CA_FILE", "ZTML_OPA_CERT_FILE", "ZTML_OPA_KEY_FILE")
    tls_values = [env.get(name) or "" for name in tls_names]
    tls_files: tuple[Path, Path, Path] | None = None
    if any(tls_values):
        if not all(tls_values):
            missing = ", ".join(n for n, v in zip(tls_names, tls_values, strict=True) if not v)
            raise ConfigError(
                f"Mutual TLS to OPA needs all of {', '.join(tls_names)}; {missing} unset."
            )
        if not opa_url.startswith("https://"):
            raise ConfigError(
                f"ZTML_OPA_URL={opa_url!r} must be https:// when ZTML_OPA_CA_FILE is set."
            )
        ca, cert, key = (Path(v).expanduser() for v in tls_values)
        tls_files = (ca, cert, key)
    trust_dir = Path(env.get("ZTML_TRUST_DIR") or home / "keys").expanduser()
    try:
        witnesses = parse_witness_keys((env.get("ZTML_LEDGER_WITNESS_KEYS") or "").split())
    except NoteError as err:
        raise ConfigError(
            f"ZTML_LEDGER_WITNESS_KEYS: {err}; give the witnesses' vkeys, separated by spaces."
        ) from None
    oms_signers = env.get("ZTML_OMS_SIGNERS_DIR")
    monitor_url = env.get("ZTML_MONITOR_URL") or None
    if monitor_url is not None and not monitor_url.startswith(("postgresql://", "postgres://")):
        scheme = monitor_url.split(":", 1)[0] if "://" in monitor_url else "none"
        raise ConfigError(
            f"ZTML_MONITOR_URL is not a postgresql:// URL (scheme {scheme!r}); use "
            "postgresql://user@host:port/db or postgresql://?service=NAME, or unset it to keep "
            "the monitors' state in SQLite under ZTML_HOME."
        )
    tls, insecure_plain_http = _tls(env)
    tier = env.get("ZTML_RISK_TIER") or "low"
    if tier not in ("low", "medium", "high"):
        raise ConfigError(f"ZTML_RISK_TIER={tier!r} must be low, medium or high.")
    return AppConfig(
        home=home,
        model_path=model_path,
        model_digest=digest,
        ledger_url=env.get("ZTML_LEDGER_URL") or str(home / "ledger.db"),
        monitor_url=monitor_url,
        trust_dir=trust_dir,
        ledger_witnesses=tuple(witnesses),
        oms_signers_dir=(
            Path(oms_signers).expanduser() if oms_signers else trust_dir / "oms_signers"
        ),
        opa_url=opa_url if opa_url.startswith("unix:") else opa_url.rstrip("/"),
        opa_timeout_seconds=_int(env, "ZTML_OPA_TIMEOUT_MS", 250, low=10, high=10_000) / 1000,
        opa_tls_files=tls_files,
        model_name=_name(env, "ZTML_MODEL_NAME", "digits"),
        tenant=_name(env, "ZTML_TENANT", "demo"),
        risk_tier=tier,  # type: ignore[arg-type]  # checked above
        max_body_bytes=_int(env, "ZTML_MAX_BODY_BYTES", 256 * 1024, low=1024, high=64 << 20),
        max_batch=_int(env, "ZTML_MAX_BATCH", 256, low=1, high=4096),
        rate_per_minute=_float(env, "ZTML_RATE_PER_MINUTE", 120.0, low=1.0, high=1e7),
        rate_burst=_int(env, "ZTML_RATE_BURST", 30, low=1, high=1_000_000),
        flood_subject_per_minute=_float(
            env, "ZTML_FLOOD_SUBJECT_PER_MINUTE", 1200.0, low=1.0, high=1e9
        ),
        flood_global_per_minute=_float(
            env, "ZTML_FLOOD_GLOBAL_PER_MINUTE", 6000.0, low=1.0, high=1e9
        ),
        audit_stdout=_bool(env, "ZTML_AUDIT_STDOUT", False),
        workers=_int(env, "ZTML_WORKERS", 1, low=1, high=64),
        squeeze_fpr=_float(env, "ZTML_SQUEEZE_FPR", 0.05, low=0.001, high=0.5),
        suspicion_threshold=_float(env, "ZTML_SUSPICION_THRESHOLD", 0.7, low=0.0, high=1.0),
        drift_window=_int(env, "ZTML_DRIFT_WINDOW", 200, low=10, high=1_000_000),
        drift_alpha=_float(env, "ZTML_DRIFT_ALPHA", 0.01, low=1e-9, high=0.5),
        request_timeout_seconds=_int(
            env,
            "ZTML_REQUEST_TIMEOUT_MS",
            20_000,
            low=100,
            high=(BENTOML_TIMEOUT_SECONDS - 2) * 1000,
        )
        / 1000,
        tls=tls,
        insecure_plain_http=insecure_plain_http,
    )
