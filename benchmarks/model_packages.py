"""The models of the models benchmark: trained once, cached, installed in a stack's home.

The two examples are trained by their own ``train.py`` (as a user would) and the digits
demo model by :func:`service.model.pipeline.build_model` with the profile ``ztml up``
trains (evaluated at the deploy gate's ε only, as the tests' harness does). Each is cached
under ``~/.cache/ztml/bench-models/<name>-<hash>``, the hash covering the sources that
made it (the example's Python files; the demo's training code), so an edit retrains it.

A package is installed in a ``ZTML_HOME`` the documented way, with the ``ztml`` command:
``model sign``, ``model register --evaluation`` and ``ledger approve``; the demo model is
copied to where ``ztml up`` finds it, which registers and approves it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from service.stack.provision import DEMO_DEFENSE, DEMO_PROFILE, demo_model_dir
from service.toolchain.paths import PROJECT_ROOT

CACHE = Path.home() / ".cache" / "ztml" / "bench-models"
EXAMPLES = PROJECT_ROOT / "examples"
ZTML = str(Path(sys.executable).with_name("ztml"))
#: The demo model's training code: a change to any of these retrains the cached demo.
DEMO_SOURCES = ("artifact", "config", "data", "defenses", "net", "pipeline", "train")
#: How a benchmark package is registered (the demo model: as ``ztml up`` registers it).
TENANT = "demo"
RISK_TIER = "low"
MAX_BATCH = 64


def _digest(files: list[Path]) -> str:
    sha = hashlib.sha256()
    for path in sorted(files):
        sha.update(path.relative_to(PROJECT_ROOT).as_posix().encode() + b"\0")
        sha.update(path.read_bytes() + b"\0")
    return sha.hexdigest()[:16]


def _publish(staging: Path, target: Path) -> Path:
    """Move a finished ``staging`` directory to ``target`` (another run may have won)."""
    try:
        os.replace(staging, target)
    except OSError:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def example_package(name: str) -> Path:
    """Return the cached package of ``examples/<name>``, training it when needed.

    Raises:
        RuntimeError: The example's ``train.py`` failed (its output is in the message).
    """
    source = EXAMPLES / name
    files = sorted(source.rglob("*.py"))
    target = CACHE / f"{name}-{_digest(files)}"
    if (target / "ztml-model.json").is_file():
        return target
    CACHE.mkdir(parents=True, exist_ok=True)
    staging = CACHE / f".{target.name}.{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    run = subprocess.run(
        [sys.executable, str(source / "train.py"), "--out", str(staging)],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    if run.returncode != 0:
        shutil.rmtree(staging, ignore_errors=True)
        raise RuntimeError(f"examples/{name}/train.py failed:\n{run.stdout}{run.stderr}"[-4000:])
    return _publish(staging, target)


def demo_artifact() -> Path:
    """Return the cached demo model (``model.safetensors`` + ``metrics.json``)."""
    from service.gate.requirements import load_requirements
    from service.model.config import EvalConfig
    from service.model.pipeline import build_model

    files = [PROJECT_ROOT / "service" / "model" / f"{n}.py" for n in DEMO_SOURCES]
    target = CACHE / f"demo-{DEMO_DEFENSE}-{DEMO_PROFILE}-{_digest(files)}"
    if (target / "metrics.json").is_file():
        return target
    CACHE.mkdir(parents=True, exist_ok=True)
    staging = CACHE / f".{target.name}.{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    gate = load_requirements().for_modality("image")
    build_model(
        DEMO_DEFENSE, DEMO_PROFILE, out_dir=staging, eval=EvalConfig(epsilons=(gate.epsilon,))
    )
    return _publish(staging, target)


def ztml(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run ``ztml ARGS`` and return it (output captured, exit status not checked)."""
    return subprocess.run(
        [ZTML, *args], env=env, cwd=PROJECT_ROOT, capture_output=True, text=True, check=False
    )


def _check(run: subprocess.CompletedProcess[str]) -> None:
    if run.returncode != 0:
        command = " ".join(run.args[1:]) if isinstance(run.args, list) else str(run.args)
        raise RuntimeError(f"ztml {command} failed:\n{run.stdout}{run.stderr}"[-3000:])


def install_demo(source: Path, home: Path) -> Path:
    """Copy the cached demo model to where ``ztml up`` serves it from; return that dir."""
    target = demo_model_dir(home)
    target.mkdir(mode=0o700, parents=True, exist_ok=True)
    for name in ("model.safetensors", "metrics.json"):
        shutil.copy2(source / name, target / name)
    return target


def install_package(
    source: Path,
    *,
    into: Path,
    evaluation: dict[str, Any],
    digest: str,
    env: dict[str, str],
) -> Path:
    """Copy a package into ``into``, then sign, register and approve it with ``ztml``.

    Args:
        source: The cached package.
        into: Where the copy goes (readable by the stack's service user).
        evaluation: Its evaluation document (``ztml model evaluate --out`` without the
            digest), registered as its evidence.
        digest: The weights digest (``ServedModel.weights_digest``).
        env: The environment with ``ZTML_HOME``.

    Returns:
        The installed package directory.

    Raises:
        RuntimeError: A ``ztml`` command failed (its output is in the message).
    """
    package = into / source.name
    shutil.copytree(source, package)
    # safetensors writes 0600 files; a root `ztml up` serves as an unprivileged user.
    for path in [package, *package.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    evidence = into / f"{source.name}.evaluation.json"
    evidence.write_text(json.dumps({**evaluation, "model_digest": digest}, indent=2))
    _check(ztml("model", "sign", str(package), env=env))
    _check(
        ztml(
            "model",
            "register",
            str(package),
            "--evaluation",
            str(evidence),
            "--tenant",
            TENANT,
            "--risk-tier",
            RISK_TIER,
            "--max-batch",
            str(MAX_BATCH),
            "--explanations",
            env=env,
        )
    )
    _check(ztml("ledger", "approve", digest, "--comment", "models benchmark", env=env))
    return package
