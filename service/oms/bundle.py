"""Sign a model in OMS format and verify its bundle against the trusted signer keys.

An OMS bundle (OpenSSF model signing, the ``model-signing`` library) is a Sigstore bundle
whose DSSE envelope carries an in-toto statement listing the SHA-256 of every signed file.
ztml signs with a key (no public Sigstore service is needed): :func:`sign_model` signs a
model directory (every file: the weights and the metadata beside them, e.g.
``metrics.json``) or a single model file, and writes the bundle beside the model as
``model.sig`` (the library's default name), so ``model_signing verify key`` accepts it too.

:func:`verify_model_bundle` is what every check point runs (registration, the deploy gate,
the pod's init step and the service's start, the last two through the gate): the bundle
beside the artifact must be signed by a trusted key (:mod:`service.oms.signers`), verify
with the library, cover the artifact, leave no file of the directory unsigned, and not
change while it is checked. Anything else raises an :class:`~service.oms.errors.OmsError`
naming the fix; nothing returns "not verified".
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from service.oms.errors import (
    OmsBundleError,
    OmsModelError,
    OmsUntrustedSignerError,
    OmsVerificationError,
)
from service.oms.signers import TrustedSigners, load_signing_key

BUNDLE_NAME = "model.sig"
MAX_BUNDLE_BYTES = 16 * 1024 * 1024
#: What the library leaves out of a directory by default (and what ztml accepts unsigned).
GIT_PATHS = frozenset({".git", ".github", ".gitattributes", ".gitignore"})
_SINGLE_FILE = "."  # the resource name of a model that is one file


@dataclass(frozen=True)
class OmsBundle:
    """A bundle and what it says was signed.

    Attributes:
        path: The bundle file.
        digest: ``sha256:<hex>`` of the bundle's bytes (what the ledger records).
        key_hint: The signing key's hint (hex SHA-256 of its PEM public key).
        resources: The signed files as ``(name, algorithm, hex digest)``; a name is
            relative to the model directory, ``"."`` for a model that is one file.
        ignored: The paths the signer left out of a signed directory.
    """

    path: Path
    digest: str
    key_hint: str
    resources: tuple[tuple[str, str, str], ...]
    ignored: tuple[str, ...]

    @property
    def files(self) -> tuple[str, ...]:
        """The signed file names."""
        return tuple(name for name, _, _ in self.resources)

    @property
    def single_file(self) -> bool:
        """Whether the bundle signs one file rather than a directory."""
        return self.files == (_SINGLE_FILE,)

    def file_digests(self) -> dict[str, str]:
        """Each signed file of a directory bundle with its ``sha256:<hex>``.

        Names are relative to the model directory, ``/``-separated. A single-file bundle,
        or a file signed with another algorithm, gives no entry.
        """
        if self.single_file:
            return {}
        return {
            name: "sha256:" + hex_digest
            for name, algorithm, hex_digest in self.resources
            if algorithm == "sha256"
        }

    def signed_digest(self, artifact: Path) -> str | None:
        """The ``sha256:<hex>`` the bundle signs for ``artifact``, if it signs one in SHA-256."""
        name = _SINGLE_FILE if self.single_file else Path(artifact).name
        for resource, algorithm, hex_digest in self.resources:
            if resource == name and algorithm == "sha256":
                return "sha256:" + hex_digest
        return None

    def ledger_entry(self) -> dict[str, str]:
        """The register record's ``oms_bundle`` field: the bundle digest and signer hint."""
        return {"digest": self.digest, "key_hint": self.key_hint}


@dataclass(frozen=True)
class VerifiedBundle:
    """A bundle that verified against a trusted key and the model's files.

    Attributes:
        bundle: The verified bundle.
        model_path: What was verified: the model directory, or the file.
        signer: The trusted public key file that verified it.
    """

    bundle: OmsBundle
    model_path: Path
    signer: Path


def bundle_path(model: Path) -> Path:
    """Return where the bundle of ``model`` lives: ``model.sig`` in its directory.

    For a model directory that is ``DIR/model.sig``; for a file (the weights a check point
    is given), ``model.sig`` beside it.
    """
    model = Path(model)
    return (model if model.is_dir() else model.parent) / BUNDLE_NAME


def _read(path: Path) -> bytes:
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_BUNDLE_BYTES + 1)
    except FileNotFoundError:
        raise OmsBundleError(
            f"No OMS bundle at {path}: sign the model with `ztml model sign <model dir>` (or "
            f"`model_signing sign key <model dir> --signature {path}`)."
        ) from None
    except OSError as err:
        raise OmsBundleError(f"Cannot read the OMS bundle {path}: {err.strerror}.") from None
    if len(data) > MAX_BUNDLE_BYTES:
        raise OmsBundleError(f"The OMS bundle {path} is larger than {MAX_BUNDLE_BYTES} bytes.")
    return data


def _field(data: Any, *keys: str) -> Any:
    for key in keys:
        if not isinstance(data, dict) or key not in data:
            raise KeyError(".".join(keys))
        data = data[key]
    return data


def parse_bundle(path: Path, data: bytes | None = None) -> OmsBundle:
    """Read what a bundle claims (nothing is verified here).

    Raises:
        OmsBundleError: the bundle is missing, unreadable, or not a key-signed OMS bundle
            of a file-serialized model.
    """
    path = Path(path)
    raw = _read(path) if data is None else data
    try:
        document = json.loads(raw)
        hint = _field(document, "verificationMaterial", "publicKey", "hint")
        payload = base64.b64decode(_field(document, "dsseEnvelope", "payload"), validate=True)
        predicate = _field(json.loads(payload), "predicate")
        resources = _field(predicate, "resources")
        serialization = _field(predicate, "serialization")
        signed = tuple(
            (str(_field(r, "name")), str(r.get("algorithm", "")), str(_field(r, "digest")))
            for r in resources
        )
        ignored = tuple(str(p) for p in serialization.get("ignore_paths", ()))
        method = serialization.get("method")
    except (ValueError, KeyError, TypeError, AttributeError, binascii.Error) as err:
        raise OmsBundleError(
            f"{path} is not an OMS bundle ({type(err).__name__}: {err}); sign the model "
            "again with `ztml model sign`."
        ) from None
    if not isinstance(hint, str) or not hint:
        raise OmsBundleError(
            f"The OMS bundle {path} names no signing key (an older bundle format, or not "
            "signed with a key); sign the model again with `ztml model sign`."
        )
    if method != "files" or not signed:
        raise OmsBundleError(
            f"The OMS bundle {path} uses {method!r} serialization; ztml checks file-serialized "
            "bundles (the library's default): sign the model again without sharding."
        )
    return OmsBundle(
        path=path,
        digest="sha256:" + hashlib.sha256(raw).hexdigest(),
        key_hint=hint,
        resources=signed,
        ignored=ignored,
    )


def sign_model(model: Path, *, key: Path, bundle: Path | None = None) -> OmsBundle:
    """Sign a model directory (every file in it) or a model file; write the OMS bundle.

    Args:
        model: The model directory (weights and the metadata beside them) or one file.
        key: The EC private key (PEM, mode 0600), e.g. ``$ZTML_HOME/keys/oms-signer.key``.
        bundle: Where to write the bundle (default :func:`bundle_path`, ``model.sig``
            beside the weights). Inside a signed directory it is left out of the signature.

    Returns:
        The written bundle.

    Raises:
        OmsModelError: the model does not exist.
        OmsKeyError: the key is missing, readable by others or not a supported EC key.
        OmsBundleError: signing or writing the bundle failed.
    """
    import model_signing

    model = Path(model)
    if not model.exists():
        raise OmsModelError(f"Cannot sign {model}: it does not exist.")
    load_signing_key(key)  # refuses loose permissions and unsupported keys, with the fix
    target = Path(bundle) if bundle is not None else bundle_path(model)
    ignored: list[Path] = []
    if model.is_dir():
        with contextlib.suppress(ValueError):  # a bundle outside the directory: none
            ignored.append(target.resolve().relative_to(model.resolve()))
    hashing = model_signing.hashing.Config().set_ignored_paths(paths=ignored)
    try:
        model_signing.signing.Config().use_elliptic_key_signer(private_key=key).set_hashing_config(
            hashing
        ).sign(model, target)
    except Exception as err:  # the library raises many types; any is a failed signing
        raise OmsBundleError(f"Signing {model} failed: {type(err).__name__}: {err}") from None
    return parse_bundle(target)


# The library reports a mismatch as the repr of a list of lines, so quotes may be escaped.
_MISMATCH = (
    ("changed", re.compile(r"Hash mismatch for \\?'([^'\\]+)\\?'")),
    ("not signed", re.compile(r"Extra files found in model \\?'[^'\\]*\\?': ([^\"'\\\]]+)")),
    ("missing", re.compile(r"Missing files in model \\?'[^'\\]*\\?': ([^\"'\\\]]+)")),
)


def _describe(err: Exception) -> str:
    """A short reason from the library's error (its digests are bytes reprs)."""
    text = str(err)
    parts = [
        f"{what}: {', '.join(found)}"
        for what, pattern in _MISMATCH
        if (found := [m.strip() for m in pattern.findall(text)])
    ]
    if parts:
        return "files differ from the signed ones (" + "; ".join(parts) + ")"
    if not text:
        return f"the signature does not verify ({type(err).__name__})"
    return f"{type(err).__name__}: {text[:300]}"


def _model_path(artifact: Path, bundle: OmsBundle) -> Path:
    """What the bundle signs for ``artifact``: the file itself, or its directory."""
    if bundle.single_file:
        return artifact
    if artifact.name not in bundle.files:
        raise OmsVerificationError(
            f"The OMS bundle {bundle.path} does not sign {artifact.name}; sign the whole "
            f"model directory {artifact.parent} with `ztml model sign`."
        )
    unsigned = sorted(set(bundle.ignored) - GIT_PATHS - {bundle.path.name, BUNDLE_NAME})
    if unsigned:
        raise OmsVerificationError(
            f"The OMS bundle {bundle.path} leaves {', '.join(unsigned)} unsigned; every file "
            f"beside the weights must be signed: sign {artifact.parent} again without "
            "--ignore-paths."
        )
    return artifact.parent


def verify_model_bundle(
    artifact: Path, *, signers: TrustedSigners, bundle: Path | None = None
) -> VerifiedBundle:
    """Verify the OMS bundle of a model artifact against the trusted signer keys.

    The bundle (default: ``model.sig`` beside ``artifact``) must name a trusted key,
    verify with ``model_signing`` against that key and the model's files (the artifact's
    directory, or the artifact alone for a single-file bundle), cover the artifact and
    leave nothing but git metadata and itself unsigned, and be unchanged afterwards.

    Args:
        artifact: The model weights file the check point serves or registers.
        signers: The trusted OMS signer keys.
        bundle: Another bundle path.

    Raises:
        OmsBundleError: the bundle is missing, unreadable or malformed.
        OmsUntrustedSignerError: the bundle's key is not trusted.
        OmsVerificationError: the signature does not verify, or a file was changed,
            added, removed or left unsigned.
        OmsModelError: the artifact does not exist.
    """
    import model_signing

    artifact = Path(artifact)
    if not artifact.is_file():
        raise OmsModelError(
            f"Artifact {artifact} does not exist or is not a file; pass the model weights "
            "(e.g. the model.safetensors written by `ztml model train`)."
        )
    path = Path(bundle) if bundle is not None else bundle_path(artifact)
    raw = _read(path)
    claimed = parse_bundle(path, raw)
    key_file = signers.keys.get(claimed.key_hint)
    if key_file is None:
        raise OmsUntrustedSignerError(
            f"The OMS bundle {path} is signed by key {claimed.key_hint[:16]}…, which is not a "
            f"trusted OMS signer; if you trust its owner, add their PEM public key to "
            f"{signers.directory}."
        )
    model_path = _model_path(artifact, claimed)
    try:
        model_signing.verifying.Config().use_elliptic_key_verifier(public_key=key_file).verify(
            model_path, path
        )
    except Exception as err:  # the library raises many types; any is a refusal
        raise OmsVerificationError(
            f"The OMS signature {path} does not verify for {model_path}: {_describe(err)}. "
            "The model or its bundle was changed: restore the signed files, or sign the "
            "model again with a trusted key."
        ) from None
    if _read(path) != raw:
        raise OmsVerificationError(f"The OMS bundle {path} changed during verification.")
    return VerifiedBundle(bundle=claimed, model_path=model_path, signer=key_file)
