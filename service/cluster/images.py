"""Images without a registry: OCI archives made from local files, imported into containerd.

An image here is one uncompressed layer of files (a static binary, and for the toolbox
busybox's applet links), a config that names its entry point and numeric user, and a
manifest. The archive is reproducible (fixed times and owners), so the same inputs give
the same digest; pods reference images by that digest (``name@sha256:...``) and the
cluster never pulls.
"""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
import tarfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from service.cluster.errors import ClusterStartError

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
# busybox applets the toolbox image links, enough for checks from inside a pod.
TOOLBOX_APPLETS = (
    "sh",
    "cat",
    "id",
    "ls",
    "grep",
    "nc",
    "nslookup",
    "sleep",
    "touch",
    "echo",
    "timeout",
    "test",
    "httpd",
    "mkdir",
    "rm",
    "chmod",
)


@dataclass(frozen=True)
class ImageSpec:
    """What goes into one image.

    Attributes:
        name: The repository part (``ztml.local/pause``).
        tag: The tag.
        files: Path in the image -> (source file on the host, mode).
        links: Path in the image -> symlink target.
        entrypoint: The entry point.
        user: Numeric ``uid:gid``.
        env: Environment variables.
    """

    name: str
    tag: str
    files: Mapping[str, tuple[Path, int]]
    links: Mapping[str, str] = field(default_factory=dict)
    entrypoint: Sequence[str] = ()
    user: str = "65532:65532"
    env: Sequence[str] = ("PATH=/bin",)

    @property
    def tagged(self) -> str:
        """Return ``name:tag``."""
        return f"{self.name}:{self.tag}"


@dataclass(frozen=True)
class BuiltImage:
    """An OCI archive on disk and the references that pin it."""

    spec: ImageSpec
    archive: Path
    digest: str

    @property
    def pinned(self) -> str:
        """Return the digest reference pods use (``name@sha256:...``)."""
        return f"{self.spec.name}@{self.digest}"


def _tar_info(name: str, *, size: int = 0, mode: int = 0o755) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = size
    info.mode = mode
    info.mtime = 0
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def _layer(spec: ImageSpec) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        directories = sorted(
            {str(Path(p).parent).lstrip("/") for p in [*spec.files, *spec.links]} - {""}
        )
        for directory in [*directories, "tmp"]:
            info = _tar_info(directory, mode=0o1777 if directory == "tmp" else 0o755)
            info.type = tarfile.DIRTYPE
            tar.addfile(info)
        for target, (source, mode) in sorted(spec.files.items()):
            data = source.read_bytes()
            tar.addfile(_tar_info(target.lstrip("/"), size=len(data), mode=mode), io.BytesIO(data))
        for target, link in sorted(spec.links.items()):
            info = _tar_info(target.lstrip("/"), mode=0o777)
            info.type = tarfile.SYMTYPE
            info.linkname = link
            tar.addfile(info)
    return buffer.getvalue()


def _blob(tar: tarfile.TarFile, data: bytes) -> str:
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    tar.addfile(
        _tar_info(f"blobs/sha256/{digest[7:]}", size=len(data), mode=0o644), io.BytesIO(data)
    )
    return digest


def build_image(spec: ImageSpec, out_dir: Path) -> BuiltImage:
    """Write ``spec`` as an OCI image-layout archive under ``out_dir``; return it."""
    layer = _layer(spec)
    layer_digest = "sha256:" + hashlib.sha256(layer).hexdigest()
    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "config": {
                "Entrypoint": list(spec.entrypoint),
                "User": spec.user,
                "Env": list(spec.env),
                "WorkingDir": "/",
            },
            "rootfs": {"type": "layers", "diff_ids": [layer_digest]},
        },
        sort_keys=True,
    ).encode()
    out_dir.mkdir(parents=True, exist_ok=True)
    archive = out_dir / f"{spec.name.replace('/', '_')}-{spec.tag}.tar"
    with tarfile.open(archive, mode="w", format=tarfile.PAX_FORMAT) as tar:
        config_digest = _blob(tar, config)
        _blob(tar, layer)
        manifest = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": OCI_MANIFEST,
                "config": {"mediaType": OCI_CONFIG, "digest": config_digest, "size": len(config)},
                "layers": [{"mediaType": OCI_LAYER, "digest": layer_digest, "size": len(layer)}],
            },
            sort_keys=True,
        ).encode()
        manifest_digest = _blob(tar, manifest)
        index = json.dumps(
            {
                "schemaVersion": 2,
                "manifests": [
                    {
                        "mediaType": OCI_MANIFEST,
                        "digest": manifest_digest,
                        "size": len(manifest),
                        "annotations": {
                            "io.containerd.image.name": spec.tagged,
                            "org.opencontainers.image.ref.name": spec.tag,
                        },
                    }
                ],
            },
            sort_keys=True,
        ).encode()
        layout = b'{"imageLayoutVersion":"1.0.0"}'
        tar.addfile(_tar_info("oci-layout", size=len(layout), mode=0o644), io.BytesIO(layout))
        tar.addfile(_tar_info("index.json", size=len(index), mode=0o644), io.BytesIO(index))
    return BuiltImage(spec=spec, archive=archive, digest=manifest_digest)


def _ctr(socket: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["ctr", "--address", str(socket), "--namespace", "k8s.io", *args],
        capture_output=True,
        text=True,
        check=False,
    )


def import_archive(archive: Path, tagged: str, *, socket: Path) -> str:
    """Import an OCI or docker archive holding ``tagged``; pin it by digest; return the digest.

    The image is recorded under its tag and under ``name@digest``, the reference pods use.

    Raises:
        ClusterStartError: ``ctr`` refused the archive or the image is not in it.
    """
    proc = _ctr(socket, "images", "import", str(archive))
    if proc.returncode != 0:
        raise ClusterStartError(
            f"importing {archive} into containerd failed: {proc.stderr.strip()}"
        )
    listed = _ctr(socket, "images", "ls", f"name=={tagged}")
    rows = [line.split() for line in listed.stdout.splitlines()[1:] if line.strip()]
    if not rows:
        raise ClusterStartError(f"{archive} holds no image named {tagged}")
    digest = rows[0][2]
    name = tagged.rsplit(":", 1)[0]
    proc = _ctr(socket, "images", "tag", "--force", tagged, f"{name}@{digest}")
    if proc.returncode != 0:
        raise ClusterStartError(f"pinning {tagged} by digest failed: {proc.stderr.strip()}")
    _forget_older(name, digest, socket=socket)
    return digest


def _forget_older(name: str, digest: str, *, socket: Path) -> None:
    """Drop the references of older builds of ``name``; containerd then frees their layers.

    Running containers keep what they use until they stop; the model service image is
    about 8 GB, so every stale build left behind would take that much disk.
    """
    listed = _ctr(socket, "images", "ls", "-q")
    stale = [
        ref
        for ref in listed.stdout.split()
        if ref.startswith(f"{name}@") and ref != f"{name}@{digest}"
    ]
    if stale:
        _ctr(socket, "images", "rm", *stale)


def present(reference: str, *, socket: Path) -> bool:
    """Return whether containerd holds ``reference`` (a ``name@digest``)."""
    listed = _ctr(socket, "images", "ls", "-q", f"name=={reference}")
    return reference in listed.stdout.split()


def import_image(image: BuiltImage, *, socket: Path) -> None:
    """Import an image built here (its digest is known before the import).

    Raises:
        ClusterStartError: ``ctr`` refused it, or containerd computed another digest.
    """
    digest = import_archive(image.archive, image.spec.tagged, socket=socket)
    if digest != image.digest:
        raise ClusterStartError(
            f"containerd recorded {image.spec.tagged} as {digest}, not {image.digest}"
        )


def toolbox_spec(busybox: Path) -> ImageSpec:
    """Return the toolbox image: busybox and its applets, for checks from inside pods."""
    return ImageSpec(
        name="ztml.local/toolbox",
        tag="busybox",
        files={"/bin/busybox": (busybox, 0o755)},
        links={f"/bin/{applet}": "busybox" for applet in TOOLBOX_APPLETS},
        entrypoint=("/bin/sh",),
        user="10001:10001",
    )
