"""Build ztml's images without a registry: a Debian base, the service, OPA and PostgreSQL.

- **Base:** a Debian bookworm root file system with Python 3.11, made with debootstrap
  from Debian's packages and cached by its package list.
- **Model service:** the repository's one ``Dockerfile``, built by a private Docker
  daemon (Debian's ``docker.io``, its own data root under the cache, no iptables, no
  bridge; build steps use the host network to reach PyPI) on that base, given by
  image ID. The build context is staged: the files the Dockerfile copies, ``model/`` (the
  primary model) and ``models/<name>/`` (each further model package, by its contract's
  name; served from ``/opt/ztml/models/<name>``).
- **OPA:** the pinned OPA version built static (``CGO_ENABLED=0``), alone in an image.
- **PostgreSQL:** Debian's ``postgresql-15`` in a debootstrapped root file system, with a
  numeric non-root user (10002) that owns its data.

Each image is written as an archive under ``$ZTML_CACHE/images`` and named by the hash of
its inputs, so an unchanged input is not built twice; :func:`import_all` imports them
into the local cluster's containerd under ``ztml.local/<name>`` and their digests.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from service.cluster import images, tools
from service.cluster.errors import ClusterToolError
from service.toolchain.errors import ToolInstallError
from service.toolchain.gobuild import cache_root
from service.toolchain.opa import OPA_VERSION
from service.toolchain.paths import POLICIES_DIR, PROJECT_ROOT

Progress = Callable[[str], None]
SUITE = "bookworm"
MIRROR = os.environ.get("ZTML_DEBIAN_MIRROR", "http://deb.debian.org/debian")
BASE_PACKAGES = ("python3", "python3-venv", "python-is-python3", "ca-certificates")
POSTGRES_PACKAGES = ("postgresql-15",)
POSTGRES_UID = 10002
POSTGRES_ENTRYPOINT = Path(__file__).parent / "postgres" / "docker-entrypoint.sh"
SERVICE_CONTEXT = ("pyproject.toml", "uv.lock", "README.md", "service", "infra")
CONTEXT_IGNORES = shutil.ignore_patterns(
    "__pycache__", "*.pyc", "*_test.rego", "*.key", "*.pem", "*.db", "*.safetensors", ".venv"
)


def _cache(directory: str, name: str | None = None) -> Path:
    """Return ``$ZTML_CACHE/<directory>`` (created), or the path ``name`` inside it."""
    path = cache_root() / directory
    path.mkdir(parents=True, exist_ok=True)
    return path if name is None else path / name


def _key(*parts: object) -> str:
    return hashlib.sha256(json.dumps([str(p) for p in parts]).encode()).hexdigest()[:16]


def _run(command: list[str], *, what: str, env: dict[str, str] | None = None) -> str:
    proc = subprocess.run(command, capture_output=True, text=True, check=False, env=env)
    if proc.returncode != 0:
        said = f"{proc.stdout.strip()}\n{proc.stderr.strip()}".strip()
        tail = "\n".join(said.splitlines()[-12:])
        raise ClusterToolError(f"{what} failed:\n{tail}")
    return proc.stdout


def debian_rootfs(name: str, packages: tuple[str, ...], progress: Progress) -> Path:
    """Return a tarball of a debootstrapped root file system with ``packages`` (cached).

    Raises:
        ClusterToolError: debootstrap is missing or failed.
    """
    tarball = _cache("rootfs", f"{name}-{SUITE}-{_key(SUITE, MIRROR, *packages)}.tar")
    if tarball.exists():
        return tarball
    if shutil.which("debootstrap") is None:
        raise ClusterToolError("debootstrap is missing: `apt-get install -y debootstrap`.")
    progress(f"making the {name} root file system from Debian's packages (debootstrap)")
    with tempfile.TemporaryDirectory(prefix=f"ztml-{name}-", dir=tarball.parent) as tmp:
        root = Path(tmp) / "root"
        _run(
            [
                "debootstrap",
                "--variant=minbase",
                f"--include={','.join(packages)}",
                SUITE,
                str(root),
                MIRROR,
            ],
            what=f"debootstrap of {name}",
        )
        for cache in ("var/cache/apt/archives", "var/lib/apt/lists"):
            for entry in (root / cache).glob("*"):
                if entry.is_file():
                    entry.unlink()
        partial = tarball.with_suffix(".partial")
        with tarfile.open(partial, "w") as tar:
            tar.add(root, arcname=".")
        partial.rename(tarball)
    return tarball


@dataclass(frozen=True)
class Docker:
    """A running private Docker daemon (see :func:`docker_daemon`)."""

    socket: Path

    def __call__(self, *args: str, what: str) -> str:
        """Run ``docker ARGS`` against this daemon; return its output."""
        env = {**os.environ, "DOCKER_HOST": f"unix://{self.socket}", "DOCKER_BUILDKIT": "0"}
        return _run(["/usr/bin/docker", *args], what=what, env=env)


@contextmanager
def docker_daemon() -> Iterator[Docker]:
    """Start Debian's dockerd with its own roots under the cache; stop it afterwards.

    It never touches iptables, makes no bridge and forwards nothing; build steps run
    with the host's network (``--network host``).

    Raises:
        ClusterToolError: dockerd is missing or did not answer.
    """
    if not Path("/usr/sbin/dockerd").exists():
        raise ClusterToolError("dockerd is missing: `apt-get install -y docker.io`.")
    root = _cache("docker")
    for sub in ("data", "exec", "run"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    socket = root / "run" / "docker.sock"
    pidfile = root / "run" / "dockerd.pid"
    if pidfile.exists():  # a daemon left by an interrupted build
        _stop_pid(pidfile)
    socket.unlink(missing_ok=True)
    with (root / "run" / "dockerd.log").open("ab") as log:
        proc = subprocess.Popen(
            [
                "/usr/sbin/dockerd",
                f"--data-root={root / 'data'}",
                f"--exec-root={root / 'exec'}",
                f"--pidfile={pidfile}",
                f"--host=unix://{socket}",
                "--iptables=false",
                "--ip6tables=false",
                "--ip-forward=false",
                "--ip-masq=false",
                "--bridge=none",
                "--containerd-namespace=ztml-build",
                "--containerd-plugins-namespace=ztml-build-plugins",
            ],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    docker = Docker(socket)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                docker("version", what="docker version")
                break
            except ClusterToolError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise ClusterToolError(
                        f"dockerd did not start; see {root / 'run' / 'dockerd.log'}"
                    ) from None
                time.sleep(0.5)
        yield docker
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _stop_pid(pidfile: Path) -> None:
    try:
        pid = int(pidfile.read_text().strip())
        os.kill(pid, signal.SIGTERM)
        for _ in range(100):
            os.kill(pid, 0)
            time.sleep(0.1)
    except (OSError, ValueError):
        pass
    pidfile.unlink(missing_ok=True)


def _source_hash(paths: list[Path]) -> str:
    digest = hashlib.sha256()
    for top in paths:
        files = sorted(p for p in top.rglob("*") if p.is_file()) if top.is_dir() else [top]
        for path in files:
            if CONTEXT_IGNORES(str(path.parent), [path.name]):
                continue
            digest.update(str(path.relative_to(top.parent)).encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def _package_hash(packages: Sequence[Path]) -> str:
    """Hash every file of the packages (weights and data too, unlike the sources)."""
    digest = hashlib.sha256()
    for package in packages:
        for path in sorted(p for p in package.rglob("*") if p.is_file()):
            digest.update(str(path.relative_to(package.parent)).encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def package_names(packages: Sequence[Path]) -> dict[str, Path]:
    """Return each model package's name (its contract's ``name``) and directory.

    The name becomes the package's directory in the image and, in the stack, its
    Deployment's and Service's name, so it must be a DNS label not starting with ``ztml-``.

    Raises:
        ClusterToolError: a directory is not a model package, a name does not fit, or two
            packages share a name.
    """
    from infra.config import MODEL_NAME_RE, RESERVED_PREFIX
    from service.model.contract import ContractError, read_contract

    named: dict[str, Path] = {}
    for package in packages:
        try:
            name = read_contract(package / "ztml-model.json").name
        except ContractError as err:
            raise ClusterToolError(f"--package {package} is not a model package: {err}") from None
        if not MODEL_NAME_RE.fullmatch(name) or name.startswith(RESERVED_PREFIX):
            raise ClusterToolError(
                f"--package {package}: its name {name!r} cannot name a Deployment; the stack "
                f"needs a DNS label of up to 53 characters not starting with '{RESERVED_PREFIX}'."
            )
        if name in named:
            raise ClusterToolError(f"--package {package} and {named[name]} are both {name!r}.")
        named[name] = package
    return named


def _stage_packages(dest: Path, packages: Sequence[Path]) -> None:
    """Copy each package to ``models/<name>/``, readable by the image's user, never writable."""
    (dest / "models").mkdir()
    for name, package in package_names(packages).items():
        target = dest / "models" / name
        shutil.copytree(package, target)
        for path in sorted(target.rglob("*"), reverse=True):
            path.chmod(0o555 if path.is_dir() else 0o444)
        target.chmod(0o555)


def _stage_context(dest: Path, model_dir: Path | None, packages: Sequence[Path] = ()) -> None:
    for name in SERVICE_CONTEXT:
        source = PROJECT_ROOT / name
        if source.is_dir():
            shutil.copytree(source, dest / name, ignore=CONTEXT_IGNORES)
        else:
            shutil.copy2(source, dest / name)
    (dest / "model").mkdir()
    if model_dir is not None:
        for entry in model_dir.iterdir():
            if entry.is_file():
                shutil.copy2(entry, dest / "model" / entry.name)
                # Readable by the image's numeric user, never writable: the classic
                # builder copies modes as they are (a trained model is often 0600).
                (dest / "model" / entry.name).chmod(0o444)
    _stage_packages(dest, packages)
    for name in ("Dockerfile", ".dockerignore"):
        shutil.copy2(PROJECT_ROOT / name, dest / name)
    shutil.copytree(
        POLICIES_DIR,
        dest / "policies",
        ignore=shutil.ignore_patterns("*_test.rego", "examples", ".*"),
    )
    shutil.copy2(tools.OPA_STATIC.path("opa"), dest / "opa")
    shutil.copy2(host_ca_bundle(), dest / "build-ca.crt")


def host_ca_bundle() -> Path:
    """Return the CA bundle this host trusts (``SSL_CERT_FILE``, else Debian's bundle).

    The image's builder stage uses it to reach PyPI exactly as the host does, through any
    TLS-inspecting proxy the host trusts; the runtime image does not contain it.

    Raises:
        ClusterToolError: no bundle is found.
    """
    for candidate in (os.environ.get("SSL_CERT_FILE"), "/etc/ssl/certs/ca-certificates.crt"):
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    raise ClusterToolError(
        "no CA bundle found for the image build: set SSL_CERT_FILE to your CA bundle."
    )


def service_image(
    model_dir: Path | None, progress: Progress, *, packages: Sequence[Path] = ()
) -> Path:
    """Build the model service image from the Dockerfile; return its docker archive.

    Args:
        model_dir: The primary model's directory (baked at ``/opt/ztml/model``), or None.
        progress: Told what the build is doing.
        packages: Further model packages, each baked at ``/opt/ztml/models/<name>``.

    Raises:
        ClusterToolError: a step failed (its last words are in the message).
    """
    base = debian_rootfs("debian-python", BASE_PACKAGES, progress)
    try:
        tools.OPA_STATIC.ensure()
    except ToolInstallError as err:
        raise ClusterToolError(str(err)) from None
    inputs = [PROJECT_ROOT / n for n in (*SERVICE_CONTEXT, "Dockerfile", ".dockerignore")]
    inputs += [POLICIES_DIR, tools.OPA_STATIC.path("opa")]
    if model_dir is not None:
        inputs.append(model_dir)
    package_names(packages)  # refuse a bad package before anything is built
    key = _key(base.name, _source_hash(inputs), _package_hash(packages))
    archive = _cache("images", f"model-service-{key}.tar")
    if archive.exists():
        return archive
    _drop_older(archive)
    with docker_daemon() as docker, tempfile.TemporaryDirectory(prefix="ztml-ctx-") as ctx:
        progress("importing the Debian base into the image builder")
        base_id = docker("import", str(base), "ztml.local/debian-python:bookworm", what="import")
        _stage_context(Path(ctx), model_dir, packages)
        progress("building the model service image from the Dockerfile (locked environment)")
        tag = "ztml.local/model-service:build"
        docker(
            "build",
            "--network=host",
            f"--build-arg=BASE_IMAGE={base_id.strip()}",
            f"--tag={tag}",
            ctx,
            what="docker build of the model service",
        )
        progress("exporting the model service image")
        _save(docker, tag, archive)
    return archive


def _drop_older(archive: Path) -> None:
    """Delete the older archives of ``archive``'s image (``<name>-<key>.tar``).

    They are stale once the image's inputs changed, and the build needs their room
    (about 8 GB for the model service).
    """
    stem = archive.name.rsplit("-", 1)[0]
    for old in archive.parent.glob(f"{stem}-*.tar"):
        old.unlink()


def _save(docker: Docker, tag: str, archive: Path) -> None:
    """Write ``tag`` to ``archive`` and empty the builder.

    The service image holds the locked environment (torch with its CUDA libraries, about
    8 GB); keeping the builder's layers would fill the disk.
    """
    partial = archive.with_suffix(".partial")
    docker("save", f"--output={partial}", tag, what="docker save")
    partial.rename(archive)
    docker("system", "prune", "--all", "--force", what="pruning the image builder")


def opa_image() -> images.BuiltImage:
    """Return OPA's image: the pinned version, static, as its only file.

    Raises:
        ClusterToolError: the static OPA did not build.
    """
    try:
        tools.OPA_STATIC.ensure()
    except ToolInstallError as err:
        raise ClusterToolError(str(err)) from None
    return images.build_image(
        images.ImageSpec(
            name="ztml.local/opa",
            tag=f"{OPA_VERSION}-static",
            files={"/opa": (tools.OPA_STATIC.path("opa"), 0o755)},
            entrypoint=("/opa",),
            user="65532:65532",
        ),
        _cache("images"),
    )


def postgres_image(progress: Progress) -> Path:
    """Return the PostgreSQL image archive (Debian's postgresql-15, user 10002).

    Its entrypoint, ``postgres/docker-entrypoint.sh``, keeps the official image's contract
    (``docker-entrypoint.sh postgres``, ``POSTGRES_USER``, ``POSTGRES_DB``,
    ``POSTGRES_PASSWORD_FILE``, ``PGDATA``), so the Pulumi program runs either image.
    """
    rootfs = debian_rootfs("postgres", POSTGRES_PACKAGES, progress)
    dockerfile = (
        "FROM {base}\n"
        f"RUN groupadd --gid {POSTGRES_UID} pgdata "
        f"&& useradd --uid {POSTGRES_UID} --gid {POSTGRES_UID} --no-create-home "
        "--home-dir /var/lib/postgresql pgdata\n"
        "COPY docker-entrypoint.sh /usr/local/bin/docker-entrypoint.sh\n"
        "ENV PATH=/usr/local/bin:/usr/lib/postgresql/15/bin:/usr/sbin:/usr/bin:/sbin:/bin "
        "PGDATA=/var/lib/postgresql/data\n"
        f"USER {POSTGRES_UID}:{POSTGRES_UID}\n"
        'ENTRYPOINT ["/usr/local/bin/docker-entrypoint.sh"]\n'
        'CMD ["postgres"]\n'
    )
    entrypoint = POSTGRES_ENTRYPOINT.read_bytes()
    key = _key(rootfs.stem, dockerfile, hashlib.sha256(entrypoint).hexdigest())
    archive = _cache("images", f"postgres-{key}.tar")
    if archive.exists():
        return archive
    _drop_older(archive)
    with docker_daemon() as docker, tempfile.TemporaryDirectory(prefix="ztml-pg-") as ctx:
        base_id = docker("import", str(rootfs), "ztml.local/postgres-base:15", what="import")
        (Path(ctx) / "Dockerfile").write_text(dockerfile.format(base=base_id.strip()))
        script = Path(ctx) / "docker-entrypoint.sh"
        script.write_bytes(entrypoint)
        script.chmod(0o555)
        docker("build", "--tag=ztml.local/postgres:15", ctx, what="docker build of PostgreSQL")
        _save(docker, "ztml.local/postgres:15", archive)
    return archive


def build_all(
    model_dir: Path | None, progress: Progress, *, packages: Sequence[Path] = ()
) -> dict[str, tuple[Path, str]]:
    """Build every stack image; return name -> (archive, the name:tag inside it)."""
    opa = opa_image()
    service = service_image(model_dir, progress, packages=packages)
    return {
        "opa": (opa.archive, opa.spec.tagged),
        "postgres": (postgres_image(progress), "ztml.local/postgres:15"),
        "model-service": (service, "ztml.local/model-service:build"),
    }


def main(argv: list[str] | None = None) -> int:
    """``python -m service.cluster.imagebuild [--model DIR] [--package DIR ...]``: build them.

    Prints one line per image: its name, its archive and the ``name:tag`` inside it
    (``scripts/k3d-image`` imports them into k3d).
    """
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--model", type=Path, default=None, help="model artifact directory")
    parser.add_argument(
        "--package",
        type=Path,
        action="append",
        default=[],
        help="a further model package directory (repeatable)",
    )
    args = parser.parse_args(argv)
    for option, path in [("--model", args.model), *(("--package", p) for p in args.package)]:
        if path is not None and not path.is_dir():
            print(f"error: {option} {path} is not a directory", file=sys.stderr)
            return 2
    try:
        built = build_all(
            args.model,
            lambda message: print(f"==> {message}", file=sys.stderr),
            packages=args.package,
        )
    except ClusterToolError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    for name, (archive, tagged) in built.items():
        print(name, archive, tagged)
    return 0


if __name__ == "__main__":
    sys.exit(main())
