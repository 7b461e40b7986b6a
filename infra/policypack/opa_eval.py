"""Evaluate the repository's Rego policies with the real ``opa`` binary.

Standard library only: the CrossGuard policy pack runs this module in its own
virtualenv, and the Pulumi program's deploy gate and the tests import it too.

Policies are staged into a temporary directory with the repository's layout (so data
files land under ``data.data.*`` exactly as in the policy tests) and evaluated with
``opa eval --format json``.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import string
import subprocess
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ADMISSION_QUERY = (
    "[r | params := input.parameters; some i, o in input.objects; "
    'ns := object.get(o, ["metadata", "namespace"], ""); '
    "d := data.ztml.admission.deny with input as "
    '{"review": {"object": o, "operation": "CREATE", "namespace": ns}, '
    '"parameters": params}; '
    'r := {"index": i, "deny": d}]'
)
ADMISSION_PARTS = ("admission", "lib", "data")
CLUSTER_SCOPED_KINDS = frozenset(
    {
        "Namespace",
        "ClusterRole",
        "ClusterRoleBinding",
        "PersistentVolume",
        "StorageClass",
        "CustomResourceDefinition",
        "PriorityClass",
        "ValidatingWebhookConfiguration",
        "MutatingWebhookConfiguration",
    }
)
OPA_TIMEOUT_SECONDS = 120


class OpaEvalError(Exception):
    """OPA failed, or the query was undefined; the message carries OPA's words."""


@dataclass(frozen=True)
class Violation:
    """One admission finding.

    Attributes:
        kind: Kind of the offending object.
        name: Name of the offending object.
        msg: The policy's message.
        details: The policy's details object.
    """

    kind: str
    name: str
    msg: str
    details: Mapping[str, Any]


def stage_policies(policies_dir: Path, dest: Path, parts: Iterable[str]) -> Path:
    """Copy ``policies/<part>`` trees (without ``*_test.rego``) into ``dest/policies``.

    Args:
        policies_dir: The repository's ``policies/`` directory.
        dest: An empty scratch directory.
        parts: Top-level policy directories to copy (e.g. ``provenance``, ``lib``).

    Returns:
        The staged root to pass to ``opa eval -d``.

    Raises:
        OpaEvalError: a requested part does not exist.
    """
    root = dest / "policies"
    for part in parts:
        source = policies_dir / part
        if not source.is_dir():
            raise OpaEvalError(f"Policy directory {source} is missing.")
        shutil.copytree(source, root / part, ignore=shutil.ignore_patterns("*_test.rego", "*.md"))
    return root


def opa_eval(
    opa: Path,
    *,
    query: str,
    input_doc: object,
    roots: Sequence[Path],
    data_doc: Mapping[str, Any] | None = None,
) -> Any:
    """Run ``opa eval`` and return the value of the query's single expression.

    Args:
        opa: The ``opa`` binary.
        query: The Rego query.
        input_doc: The input document.
        roots: Policy/data roots passed with ``-d``.
        data_doc: Extra data merged at the data root (e.g. ``{"inventory": ...}``).

    Returns:
        The expression's value.

    Raises:
        OpaEvalError: OPA failed or the query is undefined.
    """
    with tempfile.TemporaryDirectory(prefix="ztml-opa-") as tmp:
        input_path = Path(tmp) / "input.json"
        input_path.write_text(json.dumps(input_doc), encoding="utf-8")
        command = [str(opa), "eval", "--format", "json", "-i", str(input_path)]
        for root in roots:
            command += ["-d", str(root)]
        if data_doc is not None:
            data_path = Path(tmp) / "extra-data.json"
            data_path.write_text(json.dumps(data_doc), encoding="utf-8")
            command += ["-d", str(data_path)]
        command.append(query)
        try:
            result = subprocess.run(
                command, capture_output=True, text=True, timeout=OPA_TIMEOUT_SECONDS, check=False
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise OpaEvalError(f"Could not run {opa}: {exc}") from exc
    if result.returncode != 0:
        raise OpaEvalError(f"opa eval failed: {(result.stderr or result.stdout).strip()[:2000]}")
    try:
        results = json.loads(result.stdout).get("result") or []
        return results[0]["expressions"][0]["value"]
    except (ValueError, LookupError, AttributeError) as exc:
        raise OpaEvalError(f"Query {query!r} is undefined (no result from OPA).") from exc


def auto_name(name: str, seed: str | None = None) -> str:
    """Return ``name-<7 hex>`` as Pulumi's auto-naming does (seeded for repeatability)."""
    rng = random.Random(seed if seed is not None else name)  # noqa: S311 - names, not secrets
    return f"{name}-" + "".join(rng.choice(string.hexdigits[:16]) for _ in range(7))


PULUMI_SIG_KEY = "4dabf18193072939515e22adb298388d"


def _drop_empty(value: Any) -> Any:
    """Return ``value`` as plain JSON data: dicts, lists, strings, numbers, booleans.

    The engine hands a policy pack read-only proxies (``pulumi_policy``'s mapping and
    sequence proxies, which ``json`` cannot serialize), the mocks hand plain dicts; both
    become plain dicts and lists here, before OPA sees them.
    """
    if isinstance(value, Mapping) and PULUMI_SIG_KEY in value and "value" in value:
        value = value["value"]  # a Pulumi secret (or other wrapped value): its plain value
    if isinstance(value, Mapping):
        return {
            str(k): _drop_empty(v)
            for k, v in value.items()
            if v is not None and not str(k).startswith("__")
        }
    if isinstance(value, Sequence) and not isinstance(value, str | bytes):
        return [_drop_empty(v) for v in value if v is not None]
    if isinstance(value, float) and value.is_integer():
        return int(value)  # the engine's protobuf numbers are doubles; Kubernetes wants ints
    return value


def manifest_from_props(logical_name: str, props: Mapping[str, Any]) -> dict[str, Any]:
    """Turn a pulumi-kubernetes resource's properties into a Kubernetes manifest.

    The properties already use Kubernetes field names (``apiVersion``, ``kind``,
    camelCase); this drops unset values and Pulumi-internal keys and fills
    ``metadata.name`` as Pulumi's auto-naming would when the program gave none.

    Args:
        logical_name: The resource's Pulumi name.
        props: Its input properties.

    Returns:
        The manifest.
    """
    manifest = _drop_empty(dict(props))
    manifest.pop("status", None)
    metadata = manifest.setdefault("metadata", {})
    if not metadata.get("name"):
        metadata["name"] = auto_name(logical_name)
    return manifest


def build_inventory(manifests: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """Build Gatekeeper's ``data.inventory`` from manifests.

    Returns:
        ``{"namespace": {ns: {apiVersion: {kind: {name: obj}}}},
        "cluster": {apiVersion: {kind: {name: obj}}}}``.
    """
    inventory: dict[str, Any] = {"namespace": {}, "cluster": {}}
    for obj in manifests:
        api, kind = obj.get("apiVersion", ""), obj.get("kind", "")
        metadata = obj.get("metadata", {})
        name = metadata.get("name", "")
        if kind in CLUSTER_SCOPED_KINDS:
            scope = inventory["cluster"]
        else:
            scope = inventory["namespace"].setdefault(metadata.get("namespace", "default"), {})
        scope.setdefault(api, {}).setdefault(kind, {})[name] = obj
    return inventory


def find_opa_binary(repo_root: Path | None = None) -> Path:
    """Locate ``opa``: $ZTML_OPA, the repository's ``.tools/bin/opa``, then PATH.

    Raises:
        OpaEvalError: no binary was found.
    """
    candidates: list[Path] = []
    if env := os.environ.get("ZTML_OPA"):
        candidates.append(Path(env))
    if repo_root is not None:
        candidates.append(repo_root / ".tools" / "bin" / "opa")
    if on_path := shutil.which("opa"):
        candidates.append(Path(on_path))
    for candidate in candidates:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    raise OpaEvalError("No opa binary found: set ZTML_OPA or run `scripts/run setup`.")


def admission_violations(
    opa: Path,
    policies_dir: Path,
    manifests: Sequence[Mapping[str, Any]],
    *,
    inventory: Mapping[str, Any] | None = None,
    parameters: Mapping[str, Any] | None = None,
) -> list[Violation]:
    """Evaluate ``data.ztml.admission.deny`` for every manifest in one OPA run.

    Args:
        opa: The ``opa`` binary.
        policies_dir: The repository's ``policies/`` directory.
        manifests: The objects to review.
        inventory: Gatekeeper inventory; built from ``manifests`` when omitted.
        parameters: Gatekeeper-style parameters overriding the policy's settings.

    Returns:
        Every violation, in manifest order.

    Raises:
        OpaEvalError: OPA failed or the admission policy is not loaded.
    """
    inv = build_inventory(manifests) if inventory is None else inventory
    with tempfile.TemporaryDirectory(prefix="ztml-admission-") as tmp:
        root = stage_policies(policies_dir, Path(tmp), ADMISSION_PARTS)
        results = opa_eval(
            opa,
            query=ADMISSION_QUERY,
            input_doc={"objects": list(manifests), "parameters": dict(parameters or {})},
            roots=[root],
            data_doc={"inventory": inv},
        )
    if not isinstance(results, list) or sorted(e.get("index") for e in results) != list(
        range(len(manifests))
    ):
        raise OpaEvalError(
            "The admission policy gave no decision for some objects (data.ztml.admission.deny "
            "undefined): refusing to treat that as admitted."
        )
    violations: list[Violation] = []
    for entry in results:
        obj = manifests[entry["index"]]
        for finding in entry["deny"]:
            violations.append(
                Violation(
                    kind=str(obj.get("kind", "")),
                    name=str(obj.get("metadata", {}).get("name", "")),
                    msg=str(finding.get("msg", finding)),
                    details=finding.get("details", {}) if isinstance(finding, dict) else {},
                )
            )
    return violations
