"""Make sure the local stack has what it serves: keys, a token issuer and a demo model.

Everything is reused when present: keys are never regenerated, the demo model is trained
only when its artifact is missing (or ``--retrain``), signed in OMS format (``model.sig``
over its directory, with ``$ZTML_HOME/keys/oms-signer.key``) only when newly trained or
unsigned, and ledger records are added only when missing. Registration is signed by
the trainer key and approval by the approver key under a different identity, as the
provenance policy demands.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from service.stack.errors import ProvisionError

TRAINER_IDENTITY = "trainer@ztml-local"
APPROVER_IDENTITY = "approver@ztml-local"
DEMO_DEFENSE = "pgd"
DEMO_PROFILE = "fast"
#: How the demo model is served, recorded with its registration (the policy's model facts).
DEMO_SERVING = {"tenant": "demo", "risk_tier": "low", "max_batch": 256, "explanations": True}

# progress(description, completed, total)
Progress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class DemoModel:
    """The demo model the stack serves."""

    path: Path
    metrics_path: Path
    digest: str
    trained_now: bool
    registered_now: bool
    approved_now: bool


def demo_model_dir(home: Path) -> Path:
    """Return where the demo model's artifact and metrics live."""
    return home / "models" / f"demo-{DEMO_DEFENSE}-{DEMO_PROFILE}"


def ensure_keys_and_issuer(home: Path) -> None:
    """Create the standard keys, the OMS signing key and the local token issuer when missing.

    Raises:
        ProvisionError: a key or the issuer file is unusable.
    """
    from service.authn import AuthnError, ensure_local_issuer
    from service.keys.errors import KeyError_
    from service.keys.store import init_keys
    from service.oms import OmsError, init_signing_key

    try:
        init_keys(home / "keys")
        init_signing_key(home / "keys")
        ensure_local_issuer(home)
    except (KeyError_, AuthnError, OmsError) as err:
        raise ProvisionError(f"Cannot prepare keys or the token issuer: {err}") from None


def train_demo_model(model_dir: Path, progress: Progress) -> Path:
    """Train, evaluate and save the fast PGD-trained demo model with its metrics.json.

    Returns:
        The artifact path.

    Raises:
        ProvisionError: training, evaluation or saving failed.
    """
    from service.model.errors import ModelError
    from service.model.pipeline import build_model

    model_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        built = build_model(DEMO_DEFENSE, DEMO_PROFILE, out_dir=model_dir, progress=progress)
    except ModelError as err:
        raise ProvisionError(f"Training the demo model failed: {err}") from None
    return built.artifact_path


def ensure_demo_model(home: Path, *, retrain: bool, progress: Progress) -> DemoModel:
    """Return the registered and approved demo model, training it only when needed.

    Raises:
        ProvisionError: training failed, or the ledger refuses the model (for example
            it was revoked: retrain with ``--retrain``).
    """
    from service.keys.errors import KeyError_
    from service.keys.store import Signer
    from service.ledger import LedgerError, NotRegisteredError, hash_artifact, open_ledger
    from service.model.errors import ModelError
    from service.model.register import register_model
    from service.oms import (
        OmsError,
        bundle_path,
        default_signing_key,
        sign_model,
        signers_dir,
    )

    model_dir = demo_model_dir(home)
    path = model_dir / "model.safetensors"
    metrics_path = model_dir / "metrics.json"
    ledger_url = home / "ledger.db"
    trained_now = False
    if retrain or not path.exists() or not metrics_path.exists():
        train_demo_model(model_dir, progress)
        trained_now = True
    registered_now = approved_now = False
    try:
        approver = Signer.from_file(home / "keys" / "approver.key", APPROVER_IDENTITY)
        digest, _ = hash_artifact(path)
        if trained_now or not bundle_path(model_dir).exists():
            sign_model(model_dir, key=default_signing_key(home / "keys"))
        try:
            with open_ledger(ledger_url) as ledger:
                ledger.model(digest)
        except NotRegisteredError:
            register_model(
                path,
                metrics_path,
                ledger_url=ledger_url,
                key_path=home / "keys" / "trainer.key",
                identity=TRAINER_IDENTITY,
                oms_signers=signers_dir(home / "keys", env={}),
                serving=dict(DEMO_SERVING),
            )
            registered_now = True
        with open_ledger(ledger_url) as ledger:
            state = ledger.model(digest)
            if state.status == "revoked":
                raise ProvisionError(
                    f"The demo model {digest} is revoked in the ledger; train a new one with "
                    "`ztml up --retrain`."
                )
            if state.status != "approved":
                ledger.approve(digest, signer=approver, comment="demo model approved by ztml up")
                approved_now = True
    except (LedgerError, KeyError_, ModelError, OmsError) as err:
        raise ProvisionError(
            f"Cannot register or approve the demo model: {err} If the demo model was changed "
            "or damaged, train a new one with `ztml up --retrain`."
        ) from None
    return DemoModel(path, metrics_path, digest, trained_now, registered_now, approved_now)
