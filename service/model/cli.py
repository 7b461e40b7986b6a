"""``ztml model``: train, evaluate, sign and register the digits classifier.

``train`` writes ``DIR/<defense>/model.safetensors`` and ``metrics.json`` (with ``all``
also ``DIR/report.md`` and ``DIR/robustness.png``); ``evaluate`` attacks an artifact and
prints its clean and robust accuracy; ``sign`` writes the OMS bundle ``model.sig`` of a
model directory or file; ``register`` verifies that bundle and signs the artifact's
register record into the provenance ledger after checking the metrics describe that very
artifact.
Torch is imported inside the commands, so ``ztml --help`` stays fast.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
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
        "The digits classifier: adversarial training (PGD, TRADES), defensive distillation, "
        "robustness evaluation under FGSM/PGD, safe safetensors artifacts, ledger registration."
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


@app.command()
def evaluate(
    artifact: Annotated[Path, typer.Argument(help="A model.safetensors file.")],
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
    as_json: Annotated[bool, typer.Option("--json", help="Print the evaluation as JSON.")] = False,
) -> None:
    """Attack an artifact on the test split and print clean and robust accuracy.

    At each epsilon (0.05, 0.1, 0.2, 0.3): FGSM; PGD on cross-entropy and on the CW logit
    margin (its worst case is "pgd"); torchattacks' AutoAttack (APGD-CE, APGD-T, FAB-T,
    Square); and "worst-case", per example the worst of PGD and AutoAttack: an example is
    robust only if every attack fails. Each entry records attack, epsilon, steps and restarts.
    """
    from service.model.artifact import load_artifact
    from service.model.config import EvalConfig
    from service.model.evaluate import evaluate_model
    from service.model.report import attack_table, robustness_table
    from service.model.seeding import seed_everything

    with _errors():
        loaded = load_artifact(artifact)
        seed_everything(0)
        config = EvalConfig(steps=steps, restarts=restarts, autoattack=autoattack)
        if as_json:
            evaluation = evaluate_model(loaded.model, config)
            typer.echo(json.dumps({"digest": loaded.digest, "evaluation": evaluation}, indent=2))
            return
        with _progress() as progress:
            evaluation = evaluate_model(
                loaded.model, config, progress=lambda d, t: progress("evaluating", d, t)
            )
        doc = {
            "model": {"defense": loaded.metadata["defense"]},
            "evaluation": evaluation,
        }
        console.print(f"{artifact}  {loaded.digest}  version {loaded.metadata['version']}")
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


@app.command()
def register(
    artifact: Annotated[Path, typer.Argument(help="The model.safetensors to register.")],
    metrics: Annotated[
        Path, typer.Option("--metrics", help="The metrics.json written next to the artifact.")
    ],
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
) -> None:
    """Register an artifact in the provenance ledger, signed with the trainer key.

    The model's OMS bundle (model.sig beside the artifact, see `ztml model sign`) must
    verify against a trusted OMS signer key first.
    """
    from service.model.register import register_model

    with _errors():
        record = register_model(
            artifact,
            metrics,
            ledger_url=ledger,
            key_path=key,
            identity=identity,
            oms_signers=oms_signers,
        )
    console.print(
        f"registered {record.model_digest} as {record.payload['name']} "
        f"{record.payload['version']} (seq {record.seq}, signed by {record.identity} "
        f"{record.key_id})",
        highlight=False,
    )
