"""``ztml model``: train, evaluate, sign and register models.

``train`` writes ``DIR/<defense>/model.safetensors`` and ``metrics.json`` of the digits
classifier (with ``all`` also ``DIR/report.md`` and ``DIR/robustness.png``); ``evaluate``
attacks a digits artifact or a model package (``ztml-model.json``) and prints, or writes
with ``--out``, its clean and robust accuracy; ``sign`` writes the OMS bundle
``model.sig`` of a model directory or file; ``register`` verifies that bundle and signs
the model's register record into the provenance ledger after checking the metrics (or a
package's evaluation) describe that very model.
Torch is imported inside the commands, so ``ztml --help`` stays fast.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from service.console import err_console, fail
from service.model.errors import ModelError
from service.toolchain.paths import ztml_home

if TYPE_CHECKING:
    from service.model.train import ProgressFn

app = typer.Typer(
    help=(
        "Models: the digits classifier's adversarial training (PGD, TRADES) and defensive "
        "distillation; robustness evaluation under FGSM/PGD/AutoAttack of the digits model "
        "or a model package (ztml-model.json); OMS signing; ledger registration."
    ),
    no_args_is_help=True,
)
console = Console()


class DefenseChoice(StrEnum):
    """Defenses ``train`` accepts (``all`` trains every one and writes a report)."""

    none = "none"
    pgd = "pgd"
    trades = "trades"
    distill = "distill"
    all = "all"


class ProfileChoice(StrEnum):
    """Training profiles (``tiny`` is for smoke tests and promises no accuracy)."""

    tiny = "tiny"
    fast = "fast"
    full = "full"


@contextmanager
def _errors() -> Iterator[None]:
    try:
        yield
    except ModelError as exc:
        raise fail(exc) from None


@contextmanager
def _progress() -> Iterator[ProgressFn]:
    bars = Progress(
        TextColumn("{task.description:<32}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err_console,
        transient=False,
    )
    tasks: dict[str, Any] = {}

    def update(phase: str, done: int, total: int) -> None:
        if phase not in tasks:
            tasks[phase] = bars.add_task(phase, total=total)
        bars.update(tasks[phase], completed=done, total=total)

    with bars:
        yield update


@app.command()
def train(
    defense: Annotated[
        DefenseChoice, typer.Option("--defense", help="Defense to train, or all of them.")
    ] = DefenseChoice.pgd,
    profile: Annotated[
        ProfileChoice,
        typer.Option("--profile", help="fast (local stack), full (reported numbers), tiny."),
    ] = ProfileChoice.fast,
    out: Annotated[
        Path | None,
        typer.Option("--out", help="Output directory (default $ZTML_HOME/models)."),
    ] = None,
    model_version: Annotated[
        str | None,
        typer.Option("--model-version", help="Model version (default 1.0.0+<defense>.<profile>)."),
    ] = None,
) -> None:
    """Train, evaluate and save models: DIR/<defense>/model.safetensors and metrics.json."""
    from service.model.config import DEFENSES
    from service.model.pipeline import build_model
    from service.model.report import attack_table, robustness_table, write_report

    out_dir = out or ztml_home() / "models"
    defenses = list(DEFENSES) if defense is DefenseChoice.all else [defense.value]
    results: list[dict[str, Any]] = []
    with _errors():
        with _progress() as progress:
            for name in defenses:

                def tagged(phase: str, done: int, total: int, _name: str = name) -> None:
                    progress(f"{_name}: {phase}", done, total)

                built = build_model(
                    name,
                    profile.value,
                    out_dir=out_dir / name,
                    version=model_version,
                    progress=tagged,
                )
                results.append(built.metrics)
                err_console.print(f"wrote {built.artifact_path} and {built.metrics_path.name}")
        console.print(robustness_table(results, baseline="none" if len(results) > 1 else None))
        console.print(attack_table(results))
        if defense is DefenseChoice.all:
            md, png = write_report(results, out_dir)
            console.print(f"report: {md}  plot: {png}")


def _is_package(path: Path) -> bool:
    from service.model.contract import CONTRACT_NAME

    root = path if path.is_dir() else path.parent
    return (root / CONTRACT_NAME).is_file()


def _write_json(path: Path, doc: dict[str, Any]) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(doc, indent=2) + "\n")
    except OSError as exc:
        raise fail(f"cannot write {path}: {exc.strerror or exc}") from None


@app.command()
def evaluate(
    artifact: Annotated[
        Path,
        typer.Argument(
            help="A digits model.safetensors file, or a model package directory "
            "(with ztml-model.json)."
        ),
    ],
    steps: Annotated[
        int, typer.Option("--steps", min=1, help="PGD steps (the deploy gate needs >= 100).")
    ] = 100,
    restarts: Annotated[
        int,
        typer.Option(
            "--restarts",
            min=1,
            help="PGD random restarts, run as one batch (the deploy gate needs >= 10).",
        ),
    ] = 10,
    autoattack: Annotated[
        bool,
        typer.Option(
            "--autoattack/--no-autoattack",
            help="Also run torchattacks' standard AutoAttack and record the worst case over "
            "PGD and AutoAttack (the deploy gate reads only that worst case).",
        ),
    ] = True,
    profile: Annotated[
        ProfileChoice | None,
        typer.Option(
            "--profile",
            help="Use a profile's evaluation settings instead of --steps/--restarts/"
            "--autoattack: fast and full meet the deploy gate; tiny (10 steps, 1 restart, "
            "no AutoAttack) is for smoke tests and the gate refuses it.",
        ),
    ] = None,
    epsilon: Annotated[
        list[float] | None,
        typer.Option(
            "--epsilon",
            min=0.0,
            max=1.0,
            help="Attack only at this epsilon (repeatable; default 0.05, 0.1, 0.2 and 0.3). "
            "The deploy gate needs an entry at its epsilon for the model's modality "
            "(0.1 for images, 0.05 for tabular models) or above.",
        ),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            help="Write the evaluation document (with the evaluated weights' model_digest) "
            "to this file, for `ztml model register --evaluation`.",
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the evaluation as JSON.")] = False,
) -> None:
    """Attack a model on its test data and print clean and robust accuracy.

    At each epsilon (0.05, 0.1, 0.2, 0.3, or those given with --epsilon): FGSM; PGD on
    cross-entropy and on the CW logit margin (its worst case is "pgd"); torchattacks'
    AutoAttack (APGD-CE, APGD-T, FAB-T, Square); and "worst-case", per example the worst
    of PGD and AutoAttack: an example is robust only if every attack fails. Each entry
    records attack, epsilon, steps and restarts.

    A model package is attacked in unit space: each feature is scaled to [0, 1] by the
    bounds its contract declares, so epsilon is a fraction of each feature's range; the
    test data is the package's data.test and the dataset is recorded as <name>/test.
    """
    from service.model.config import EvalConfig, config_for
    from service.model.evaluate import evaluate_model, evaluate_served
    from service.model.report import attack_table, robustness_table
    from service.model.seeding import seed_everything

    with _errors():
        if profile is not None:
            config = config_for("none", profile.value).eval
        else:
            config = EvalConfig(steps=steps, restarts=restarts, autoattack=autoattack)
        if epsilon:
            config = replace(config, epsilons=tuple(sorted(set(epsilon))))
        seed_everything(0)
        if _is_package(artifact):
            from service.model.package import open_model

            served = open_model(artifact)
            digest, version = served.weights_digest, served.contract.version
            label = served.contract.name

            def run(progress: Any = None) -> dict[str, Any]:
                return evaluate_served(served, config, progress=progress)
        else:
            from service.model.artifact import load_artifact

            loaded = load_artifact(artifact)
            digest, version = loaded.digest, loaded.metadata["version"]
            label = loaded.metadata["defense"]

            def run(progress: Any = None) -> dict[str, Any]:
                return evaluate_model(loaded.model, config, progress=progress)

        if as_json:
            evaluation = run()
            typer.echo(json.dumps({"digest": digest, "evaluation": evaluation}, indent=2))
        else:
            with _progress() as bars:
                evaluation = run(lambda d, t: bars("evaluating", d, t))
        if out is not None:
            _write_json(out, {**evaluation, "model_digest": digest})
            err_console.print(f"wrote {out}")
        if as_json:
            return
        doc = {"model": {"defense": label}, "evaluation": evaluation}
        console.print(f"{artifact}  {digest}  version {version}")
        console.print(robustness_table([doc], show_time=False))
        console.print(attack_table([doc]))


@app.command()
def sign(
    model: Annotated[
        Path,
        typer.Argument(help="The model directory (every file in it is signed) or one file."),
    ],
    key: Annotated[
        Path | None,
        typer.Option(
            "--key",
            help="EC private key, PEM (default $ZTML_HOME/keys/oms-signer.key, made by "
            "`ztml keys init`).",
        ),
    ] = None,
    signature: Annotated[
        Path | None,
        typer.Option(
            "--signature",
            help="Where to write the bundle (default: model.sig in the model directory, or "
            "beside the file).",
        ),
    ] = None,
) -> None:
    """Sign a model in OMS format (OpenSSF model signing) with a key; write model.sig.

    Registration, the deploy gate, the pod's init step and the service's start verify
    the bundle against the trusted OMS signer keys ($ZTML_TRUST_DIR/oms_signers, by
    default $ZTML_HOME/keys/oms_signers). The library's own
    `model_signing verify key MODEL --signature MODEL/model.sig --public_key KEY.pub`
    accepts it too.
    """
    from service.oms import OmsError, default_signing_key, sign_model

    try:
        bundle = sign_model(
            model, key=key or default_signing_key(ztml_home() / "keys"), bundle=signature
        )
    except OmsError as exc:
        raise fail(exc) from None
    console.print(
        f"signed {', '.join(bundle.files)} of {model}: wrote {bundle.path} ({bundle.digest}, "
        f"key {bundle.key_hint[:16]})",
        highlight=False,
    )


class RiskTier(StrEnum):
    """Risk tiers a served model can be registered with."""

    low = "low"
    medium = "medium"
    high = "high"


@app.command()
def register(
    artifact: Annotated[
        Path,
        typer.Argument(
            help="The digits model.safetensors, or a model package directory (with "
            "ztml-model.json, signed as a whole by `ztml model sign DIR`)."
        ),
    ],
    metrics: Annotated[
        Path | None,
        typer.Option(
            "--metrics", help="Digits model: the metrics.json written next to the artifact."
        ),
    ] = None,
    evaluation: Annotated[
        Path | None,
        typer.Option(
            "--evaluation",
            help="Model package: the file written by `ztml model evaluate DIR --out FILE`.",
        ),
    ] = None,
    tenant: Annotated[
        str | None,
        typer.Option(
            "--tenant",
            help="The tenant owning the model (required for a package; for the digits model "
            "it records serving settings only when given).",
        ),
    ] = None,
    risk_tier: Annotated[
        RiskTier,
        typer.Option("--risk-tier", help="The model's risk tier (the policy's strictest: high)."),
    ] = RiskTier.high,
    max_batch: Annotated[
        int,
        typer.Option(
            "--max-batch", min=1, max=1024, help="The most instances one request may carry."
        ),
    ] = 64,
    explanations: Annotated[
        bool,
        typer.Option(
            "--explanations/--no-explanations", help="Whether the server offers /explain."
        ),
    ] = True,
    ledger: Annotated[
        str | None,
        typer.Option(
            "--ledger",
            envvar="ZTML_LEDGER_URL",
            show_default=False,
            help="Ledger: a path, sqlite:///abs/path or postgresql://... "
            "(default $ZTML_HOME/ledger.db).",
        ),
    ] = None,
    key: Annotated[
        Path | None,
        typer.Option("--key", help="Trainer private key (default $ZTML_HOME/keys/trainer.key)."),
    ] = None,
    identity: Annotated[
        str | None, typer.Option("--identity", help="Signer identity (default trainer@<host>).")
    ] = None,
    oms_signers: Annotated[
        Path | None,
        typer.Option(
            "--oms-signers",
            help="Trusted OMS signer public keys (default $ZTML_TRUST_DIR/oms_signers or "
            "$ZTML_HOME/keys/oms_signers).",
        ),
    ] = None,
    detector_fpr: Annotated[
        float,
        typer.Option(
            "--detector-fpr",
            min=0.001,
            max=0.5,
            help="The perturbation detector's false-positive rate on clean inputs: its "
            "threshold is calibrated on the model's validation data and recorded with the "
            "registration (the service recomputes it at every start and refuses a mismatch).",
        ),
    ] = 0.05,
) -> None:
    """Register a model in the provenance ledger, signed with the trainer key.

    The digits model: ARTIFACT is its model.safetensors and --metrics its metrics.json.
    A model package: ARTIFACT is the directory, --evaluation the file written by
    `ztml model evaluate DIR --out FILE` (use a gate-strength profile: fast or full), and
    --tenant, --risk-tier, --max-batch and --explanations say how it is served. The name,
    version and contract come from its ztml-model.json.

    The model's OMS bundle (model.sig, see `ztml model sign`) must verify against a
    trusted OMS signer key first; for a package it must sign the whole directory.
    """
    from service.model.register import register_model, register_package

    serving = None
    if tenant is not None:
        serving = {
            "tenant": tenant,
            "risk_tier": risk_tier.value,
            "max_batch": max_batch,
            "explanations": explanations,
        }
    with _errors():
        if _is_package(artifact):
            if evaluation is None or metrics is not None:
                raise fail(
                    "a model package is registered with --evaluation FILE (from `ztml model "
                    "evaluate DIR --out FILE`), not --metrics"
                )
            if serving is None:
                raise fail("a model package needs --tenant (and --risk-tier, --max-batch)")
            record = register_package(
                artifact,
                evaluation_path=evaluation,
                serving=serving,
                detector_fpr=detector_fpr,
                ledger_url=ledger,
                key_path=key,
                identity=identity,
                oms_signers=oms_signers,
            )
        else:
            if metrics is None or evaluation is not None:
                raise fail(
                    "the digits model is registered with --metrics metrics.json (--evaluation "
                    "is for model packages)"
                )
            record = register_model(
                artifact,
                metrics,
                ledger_url=ledger,
                key_path=key,
                identity=identity,
                oms_signers=oms_signers,
                serving=serving,
                detector_fpr=detector_fpr,
            )
    console.print(
        f"registered {record.model_digest} as {record.payload['name']} "
        f"{record.payload['version']} (seq {record.seq}, signed by {record.identity} "
        f"{record.key_id})",
        highlight=False,
    )
