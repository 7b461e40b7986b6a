"""``ztml up`` and ``ztml down``: the local zero-trust stack on 127.0.0.1.

Registered as top-level commands in :mod:`service.cli.main`. Torch and BentoML are
imported only inside the commands (and BentoML only in the service process).
"""

from __future__ import annotations

import os
import signal
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console

if TYPE_CHECKING:
    from service.stack.runner import ServedPackage

console = Console()
#: The demo model's name in routes and policies.
DEMO_NAME = "digits"
err_console = Console(stderr=True)


def _fail(message: str) -> typer.Exit:
    err_console.print(f"[red]error:[/red] {message}", highlight=False, soft_wrap=True)
    return typer.Exit(1)


class _Stop(Exception):
    """Raised by the signal handler to leave the foreground wait."""


def _raise_stop(signum: int, frame: FrameType | None) -> None:
    del frame
    raise _Stop(signal.Signals(signum).name)


def _provision(home: Path, *, retrain: bool) -> tuple[Path, str]:
    from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

    from service.stack.provision import ensure_demo_model, ensure_keys_and_issuer

    ensure_keys_and_issuer(home)
    tasks: dict[str, TaskID] = {}
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    ) as progress:

        def report(phase: str, done: int, total: int) -> None:
            if phase not in tasks:
                tasks[phase] = progress.add_task(phase, total=total)
            progress.update(tasks[phase], completed=done, total=total)

        model = ensure_demo_model(home, retrain=retrain, progress=report)
    what = "trained" if model.trained_now else "reused"
    console.print(f"model: {what} {model.path} ({model.digest})")
    if model.registered_now:
        console.print("ledger: registered with the trainer key")
    if model.approved_now:
        console.print("ledger: approved with the approver key")
    return model.path, model.digest


def _packages(paths: list[Path]) -> tuple[ServedPackage, ...]:
    """Read each --model package's contract and weights digest; refuse duplicate names.

    Raises:
        StackError: a package is not one (its contract is missing or invalid), or two
            packages (or a package and the demo model) share a name.
    """
    from service.ledger import LedgerError, hash_artifact
    from service.model.contract import CONTRACT_NAME, read_contract
    from service.model.errors import ModelError
    from service.stack.errors import StackError
    from service.stack.runner import ServedPackage

    seen: dict[str, Path] = {}
    packages = []
    for path in paths:
        try:
            contract = read_contract(path / CONTRACT_NAME)
            digest, _ = hash_artifact(path / contract.weights)
        except (ModelError, LedgerError) as err:
            raise StackError(f"--model {path}: {err}") from None
        if contract.name in seen or contract.name == DEMO_NAME:
            other = seen.get(contract.name, "the demo model")
            raise StackError(
                f"--model {path}: the name {contract.name!r} is already served by {other}; "
                "each model of a stack needs its own name (set `name` in its ztml-model.json "
                "and register it again)."
            )
        seen[contract.name] = path
        packages.append(ServedPackage(name=contract.name, path=path.resolve(), digest=digest))
    return tuple(packages)


def _warn_plain_http() -> None:
    err_console.print(
        "[bold red]WARNING: --insecure-plain-http: the model service serves plain HTTP. "
        "Bearer tokens and inputs cross the network in the clear; anyone who can read "
        "the traffic can replay the tokens. The service logs and audits this start.[/bold red]",
        highlight=False,
        soft_wrap=True,
    )


def _print_ready(home: Path, state: object) -> None:
    from service.stack.example import demo_token, example_command, write_example
    from service.stack.state import StackState
    from service.stack.tls import tls_dir

    assert isinstance(state, StackState)
    own = None
    if state.client_auth != "off":
        own = (tls_dir(home) / "client.pem", tls_dir(home) / "client.key")
    command = example_command(
        state.service_url, demo_token(home), ca_file=state.ca_file, client_cert=own
    )
    example = write_example(home, command)
    console.print(
        f"\n[green]ztml is up[/green]: model service {state.service_url}, OPA {state.opa_url}"
    )
    for server in state.models:
        console.print(
            f"model {server.name}: {state.model_url(server)}/predict ({server.digest})",
            highlight=False,
        )
    if state.scheme == "http":
        _warn_plain_http()
    else:
        trust = state.ca_file or "the issuer of your --tls-cert"
        clients = (
            "no client certificates"
            if own is None
            else f"client certificates {state.client_auth} (issuers: {tls_dir(home)}/client-ca.pem;"
            f" the stack's own: {own[0]})"
        )
        console.print(
            f"TLS 1.2+ (1.3 preferred); callers trust {trust}; {clients}", highlight=False
        )
    console.print("Try it (token: role analyst, tenant demo, valid 8 h):\n")
    print(command, flush=True)
    from service.ledger.storage.url import redact_url

    shared = os.environ.get("ZTML_MONITOR_URL")  # the service inherits it (service_env)
    review = redact_url(shared) if shared else home / "review.db"
    console.print(
        f"\nexample:  {example}\n"
        f"health:   {state.service_url}/readyz, /livez, /metrics (same port and TLS)\n"
        f"logs:     {', '.join(info.log for _, info in state.servers())}\n"
        f"audit:    {home / 'audit'} (verify with `ztml audit verify`)\n"
        f"ledger:   {home / 'ledger.db'} (verify with `ztml ledger verify`)\n"
        f"review:   {review} (`ztml review list`)",
        highlight=False,
    )


def up(
    port: Annotated[
        int | None, typer.Option(help="Model service port on 127.0.0.1 (default: a free one).")
    ] = None,
    opa_port: Annotated[
        int | None, typer.Option(help="OPA port on 127.0.0.1 (default: a free one).")
    ] = None,
    workers: Annotated[int, typer.Option(min=1, max=8, help="BentoML worker processes.")] = 1,
    retrain: Annotated[
        bool, typer.Option(help="Train a new demo model even if one exists.")
    ] = False,
    detach: Annotated[
        bool, typer.Option(help="Start in the background and return (stop with `ztml down`).")
    ] = False,
    tls_cert: Annotated[
        Path | None,
        typer.Option(
            help="Your server certificate (PEM) for the service port, with --tls-key "
            "(default: one from the stack's local CA in $ZTML_HOME/tls).",
            exists=True,
            dir_okay=False,
        ),
    ] = None,
    tls_key: Annotated[
        Path | None,
        typer.Option(help="The private key (PEM) of --tls-cert.", exists=True, dir_okay=False),
    ] = None,
    client_ca: Annotated[
        Path | None,
        typer.Option(
            help="CA certificates (PEM) that sign callers' client certificates (mutual TLS; "
            "implies --client-auth required unless given).",
            exists=True,
            dir_okay=False,
        ),
    ] = None,
    client_auth: Annotated[
        str | None,
        typer.Option(
            help="Client certificates: off, optional (verified when presented) or required "
            "(no handshake without one). The stack's own CA is always an accepted issuer.",
        ),
    ] = None,
    insecure_plain_http: Annotated[
        bool,
        typer.Option(
            "--insecure-plain-http",
            help="Serve plain HTTP instead of TLS: tokens cross in the clear (logged, audited).",
        ),
    ] = False,
    model: Annotated[
        list[Path] | None,
        typer.Option(
            "--model",
            help="A model package directory to serve beside the demo model (repeatable). "
            "Each must be signed (`ztml model sign`), registered (`ztml model register`) "
            "and approved (`ztml ledger approve`); each gets its own model service, port "
            "and routes /v1/models/<name>/predict|explain|metadata.",
            exists=True,
            file_okay=False,
        ),
    ] = None,
) -> None:
    """Start the local zero-trust stack: OPA and hardened model services on 127.0.0.1.

    The demo digits model is always served (trained, signed, registered and approved on
    the first run); each --model package gets its own model service behind the same OPA,
    keys, ledger and audit log. A model the ledger and policy do not vouch for stops the
    start, naming every reason.
    """
    from service.stack.errors import StackError
    from service.stack.runner import StackOptions, check_not_running, start_stack, stop_stack, watch
    from service.toolchain.errors import ToolchainError
    from service.toolchain.opa import find_opa
    from service.toolchain.paths import ztml_home

    mode = client_auth or ("required" if client_ca is not None else "off")
    if mode not in ("off", "optional", "required"):
        raise _fail(f"--client-auth {mode!r} must be off, optional or required.")
    home = ztml_home()
    if insecure_plain_http:
        _warn_plain_http()
    # Ctrl-C or SIGTERM at any point from here stops whatever was started, in order.
    previous = {s: signal.signal(s, _raise_stop) for s in (signal.SIGINT, signal.SIGTERM)}
    state = None
    stopped: str | None = None
    try:
        check_not_running(home)
        find_opa()  # fail before minutes of training, not after
        packages = _packages(model or [])
        model_path, digest = _provision(home, retrain=retrain)
        console.print("starting OPA and the model service ...")
        state = start_stack(
            StackOptions(
                home=home,
                model_path=model_path,
                model_digest=digest,
                port=port,
                opa_port=opa_port,
                workers=workers,
                detached=detach,
                tls_cert=tls_cert,
                tls_key=tls_key,
                client_ca=client_ca,
                client_auth=mode,  # type: ignore[arg-type]  # checked above
                insecure_plain_http=insecure_plain_http,
                models=packages,
            )
        )
        _print_ready(home, state)
        if detach:
            console.print("Detached; stop it with `ztml down`.")
            return
        console.print("Press Ctrl-C to stop.")
        stopped = watch(state)
    except (StackError, ToolchainError) as err:
        raise _fail(str(err)) from None
    except (_Stop, KeyboardInterrupt):
        if state is None:
            err_console.print("interrupted before the stack was up; nothing is left running.")
            raise typer.Exit(130) from None
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if state is not None and not detach:
            console.print("stopping ...")
            stop_stack(state)
            console.print("stopped.")
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if stopped is not None:
        raise _fail(f"the {stopped} exited; see the logs in {home / 'logs'}.")


def down() -> None:
    """Stop a stack started with `ztml up --detach`."""
    from service.stack.errors import StackError
    from service.stack.runner import stop_stack
    from service.stack.state import read_state
    from service.toolchain.paths import ztml_home

    home = ztml_home()
    try:
        state = read_state(home)
    except StackError as err:
        raise _fail(str(err)) from None
    if state is None:
        console.print(f"No ztml stack is running from {home}.")
        return
    stop_stack(state)
    console.print(f"Stopped the stack (service pid {state.service.pid}, OPA pid {state.opa.pid}).")
