"""Rendering manifests to a directory is not supported: the stack's Secrets would be plaintext."""

from __future__ import annotations

from typing import Any


def test_the_program_talks_to_a_cluster_and_never_renders_yaml(any_run: Any) -> None:
    providers = {u: s for u, s in any_run.states.items() if "pulumi:providers:kubernetes" in u}
    assert len(providers) == 1, providers
    (inputs,) = providers.values()
    assert "renderYamlToDirectory" not in inputs
    assert inputs["context"] == any_run.config.kube_context


def test_the_stack_declares_secrets_that_a_rendering_would_write_in_plaintext(
    scaled_run: Any,
) -> None:
    # Why rendering is refused: these would land in files as base64, not encrypted.
    keys = {
        key
        for manifest in scaled_run.of_kind("Secret").values()
        for key in (manifest.get("stringData") or manifest.get("data") or {})
    }
    assert {"password", "pg_service.conf"} <= keys, keys
