"""The OMS attacks every check point must refuse, and the keys to sign test models with.

Each attack changes one thing after a model directory was signed: one byte of the
weights, one byte of the contract (``metrics.json``, kept valid JSON), one byte of the
bundle (inside its signature), or the whole bundle, re-signed by a key nobody trusts.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from service.oms import BUNDLE_NAME, init_signing_key, sign_model

ATTACKS = ("weights", "contract", "bundle", "untrusted-signer")
#: What the refusal says for each attack (a fragment of the OMS reason).
REFUSALS = {
    "weights": "changed: model.safetensors",
    "contract": "changed: metrics.json",
    "bundle": "does not verify",
    "untrusted-signer": "not a trusted OMS signer",
}


@dataclass(frozen=True)
class OmsKeys:
    """A signing key and the directory of trusted signers that holds its public key."""

    key: Path
    signers: Path


def make_keys(directory: Path) -> OmsKeys:
    """Create an OMS signing key in ``directory/keys`` and trust it there."""
    info = init_signing_key(directory / "keys")
    return OmsKeys(info.private_path, info.public_path.parent)


def flip_byte(path: Path, index: int = -1) -> None:
    """Flip the lowest bit of one byte of ``path`` (default: the last)."""
    data = bytearray(path.read_bytes())
    data[index] ^= 0x01
    path.write_bytes(bytes(data))


def tamper_contract(path: Path) -> None:
    """Change one digit of a JSON file: still valid JSON, one byte different."""
    text = path.read_bytes()
    match = re.search(rb"[0-9]", text)
    assert match is not None, f"{path} has no digit to change"
    at = match.start()
    digit = b"1" if text[at : at + 1] != b"1" else b"2"
    path.write_bytes(text[:at] + digit + text[at + 1 :])


def tamper_bundle(path: Path) -> None:
    """Change one base64 character inside the bundle's signature (the JSON stays valid)."""
    text = path.read_bytes()
    match = re.search(rb'"sig": ?"', text)
    assert match is not None, f"{path} has no signature"
    at = match.end() + 12
    char = b"A" if text[at : at + 1] != b"A" else b"B"
    path.write_bytes(text[:at] + char + text[at + 1 :])


def attack(name: str, model_dir: Path, *, scratch: Path) -> None:
    """Carry out attack ``name`` on the signed ``model_dir`` (``scratch``: a spare dir)."""
    if name == "weights":
        flip_byte(model_dir / "model.safetensors")
    elif name == "contract":
        tamper_contract(model_dir / "metrics.json")
    elif name == "bundle":
        tamper_bundle(model_dir / BUNDLE_NAME)
    elif name == "untrusted-signer":
        stranger = make_keys(scratch / "stranger")
        sign_model(model_dir, key=stranger.key)
    else:
        raise ValueError(f"unknown attack {name!r}")
