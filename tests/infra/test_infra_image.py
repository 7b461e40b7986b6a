"""Static checks of the service image definition and the k3d image script (no build)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "Dockerfile"
SCRIPT = REPO / "scripts" / "k3d-image"
PLACEHOLDER = "sha256:" + "0" * 64


def _stages() -> list[tuple[str, list[str]]]:
    stages: list[tuple[str, list[str]]] = []
    for line in DOCKERFILE.read_text().splitlines():
        if line.startswith("FROM "):
            stages.append((line, []))
        elif stages:
            stages[-1][1].append(line)
    return stages


def _args() -> dict[str, str]:
    return dict(re.findall(r"^ARG (\w+)=(\S+)$", DOCKERFILE.read_text(), re.M))


def test_every_base_image_is_pinned_by_digest() -> None:
    args = _args()
    for line, _ in _stages():
        image = line.split()[1]
        if image == "scratch":
            continue
        image = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], image)
        # A registry reference pinned by digest, or a local image ID.
        assert re.search(r"(@|^)sha256:[0-9a-f]{64}$", image), f"unpinned base: {line}"


def test_placeholder_base_is_marked_and_replaced_by_the_image_build() -> None:
    assert _args()["BASE_IMAGE"] == PLACEHOLDER
    assert "PLACEHOLDER" in DOCKERFILE.read_text()
    build = (REPO / "service" / "cluster" / "imagebuild.py").read_text()
    assert 'f"--build-arg=BASE_IMAGE={base_id.strip()}"' in build


def test_runtime_stage_runs_as_numeric_non_root_user() -> None:
    line, body = _stages()[-1]
    users = [b.split()[1] for b in body if b.startswith("USER ")]
    assert users, f"final stage {line!r} sets no USER"
    user, _, group = users[-1].partition(":")
    assert user.isdigit() and int(user) >= 10000, users[-1]
    assert not group or group.isdigit(), users[-1]


def test_runtime_stage_has_no_build_tools() -> None:
    _, body = _stages()[-1]
    text = "\n".join(body)
    for tool in ("curl", "wget", "gcc", "build-essential", "apt-get install", "uv sync"):
        assert tool not in text, f"final stage mentions {tool}"


def test_builder_installs_from_the_lock() -> None:
    text = DOCKERFILE.read_text()
    assert "uv sync --locked --no-dev" in text
    assert "COPY pyproject.toml uv.lock" in text


def test_dockerignore_keeps_secrets_and_state_out() -> None:
    ignore = (REPO / ".dockerignore").read_text().splitlines()
    assert ignore[ignore.index("*") if "*" in ignore else 0] == "*"
    for pattern in ("**/*.key", "**/*.pem", "**/*.db", "**/*.safetensors"):
        assert pattern in ignore
    # Only the staged model directory and packages may bring a model artifact in.
    assert [p for p in ignore if p.startswith("!") and "safetensors" in p] == [
        "!model/*.safetensors",
        "!models/**/*.safetensors",
    ]


def test_k3d_image_script_is_valid_bash_and_imports() -> None:
    subprocess.run(["bash", "-n", str(SCRIPT)], check=True)
    text = SCRIPT.read_text()
    assert "k3d image import" in text
    assert "pulumi config set ztml:image" in text
