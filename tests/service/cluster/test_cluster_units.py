"""The local cluster's building blocks, checked without starting anything."""

from __future__ import annotations

import json
import stat
import tarfile
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from service.cluster import configs, images, node, pki
from service.cluster.layout import Layout


def _spec(tmp_path: Path) -> images.ImageSpec:
    binary = tmp_path / "tool"
    binary.write_bytes(b"\x7fELF not really")
    return images.ImageSpec(
        name="ztml.local/example",
        tag="1",
        files={"/bin/tool": (binary, 0o755)},
        links={"/bin/alias": "tool"},
        entrypoint=("/bin/tool",),
        user="10001:10001",
    )


def _members(archive: Path) -> dict[str, bytes]:
    with tarfile.open(archive) as tar:
        return {
            m.name: tar.extractfile(m).read()  # type: ignore[union-attr]
            for m in tar.getmembers()
            if m.isfile()
        }


def test_an_image_archive_is_reproducible(tmp_path: Path) -> None:
    first = images.build_image(_spec(tmp_path), tmp_path / "a")
    second = images.build_image(_spec(tmp_path), tmp_path / "b")
    assert first.digest == second.digest
    assert first.archive.read_bytes() == second.archive.read_bytes()
    assert first.pinned == f"ztml.local/example@{first.digest}"


def test_an_image_names_its_digest_user_and_entrypoint(tmp_path: Path) -> None:
    built = images.build_image(_spec(tmp_path), tmp_path)
    blobs = _members(built.archive)
    index = json.loads(blobs["index.json"])
    descriptor = index["manifests"][0]
    assert descriptor["digest"] == built.digest
    assert descriptor["annotations"]["io.containerd.image.name"] == "ztml.local/example:1"
    manifest = json.loads(blobs[f"blobs/sha256/{built.digest[7:]}"])
    config = json.loads(blobs[f"blobs/sha256/{manifest['config']['digest'][7:]}"])
    assert config["config"]["User"] == "10001:10001"
    assert config["config"]["Entrypoint"] == ["/bin/tool"]
    layer_digest = manifest["layers"][0]["digest"]
    assert config["rootfs"]["diff_ids"] == [layer_digest]


def test_an_image_layer_keeps_modes_and_links(tmp_path: Path) -> None:
    built = images.build_image(_spec(tmp_path), tmp_path)
    blobs = _members(built.archive)
    index = json.loads(blobs["index.json"])
    manifest = json.loads(blobs[f"blobs/sha256/{index['manifests'][0]['digest'][7:]}"])
    layer = tmp_path / "layer.tar"
    layer.write_bytes(blobs[f"blobs/sha256/{manifest['layers'][0]['digest'][7:]}"])
    with tarfile.open(layer) as tar:
        members = {m.name: m for m in tar.getmembers()}
    assert stat.S_IMODE(members["bin/tool"].mode) == 0o755
    assert members["bin/tool"].uid == 0
    assert members["bin/alias"].issym() and members["bin/alias"].linkname == "tool"
    assert members["tmp"].isdir() and stat.S_IMODE(members["tmp"].mode) == 0o1777


def test_an_issued_certificate_carries_its_identity_and_chains_to_its_ca(tmp_path: Path) -> None:
    ca = pki.Authority(tmp_path, "ca")
    ca.ensure()
    crt, key = ca.issue(
        pki.Identity("node", "system:node:n1", ("system:nodes",), server=True, hosts=("10.0.0.1",))
    )
    cert = x509.load_pem_x509_certificate(crt.read_bytes())
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "system:node:n1"
    assert cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == (
        "system:nodes"
    )
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["10.0.0.1"]
    usages = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usages) == [ExtendedKeyUsageOID.SERVER_AUTH]
    issuer = x509.load_pem_x509_certificate(ca.cert_path.read_bytes())
    cert.verify_directly_issued_by(issuer)
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert stat.S_IMODE(ca.key_path.stat().st_mode) == 0o600


def test_a_certificate_from_another_ca_does_not_chain(tmp_path: Path) -> None:
    ours, theirs = pki.Authority(tmp_path / "a", "ca"), pki.Authority(tmp_path / "b", "ca")
    ours.ensure()
    theirs.ensure()
    crt, _ = theirs.issue(pki.Identity("admin", "admin", ("system:masters",)))
    cert = x509.load_pem_x509_certificate(crt.read_bytes())
    with pytest.raises(InvalidSignature):
        cert.verify_directly_issued_by(x509.load_pem_x509_certificate(ours.cert_path.read_bytes()))
    assert isinstance(cert.public_key(), ec.EllipticCurvePublicKey)


def test_the_kubelet_refuses_anonymous_requests_and_asks_the_api_server(tmp_path: Path) -> None:
    layout = Layout(tmp_path)
    path = configs.kubelet_config(layout, tls_cert=tmp_path / "c", tls_key=tmp_path / "k")
    document = json.loads(path.read_text())
    assert document["authentication"]["anonymous"] == {"enabled": False}
    assert document["authentication"]["webhook"] == {"enabled": True}
    assert document["authorization"] == {"mode": "Webhook"}
    assert document["readOnlyPort"] == 0


def test_the_api_server_runs_with_the_zero_trust_flags(tmp_path: Path) -> None:
    layout = Layout(tmp_path)
    by_name = {c.name: c.argv for c in node.components(layout, "192.0.2.10")}
    apiserver = set(by_name["kube-apiserver"])
    for flag in (
        "--anonymous-auth=false",
        "--authorization-mode=Node,RBAC",
        "--enable-admission-plugins=NodeRestriction",
        "--allow-privileged=false",
        f"--encryption-provider-config={tmp_path / 'config' / 'encryption.json'}",
        f"--audit-log-path={layout.audit_log}",
        "--bind-address=192.0.2.10",
    ):
        assert flag in apiserver, flag
    assert "--client-cert-auth=true" in by_name["etcd"]
    assert "--peer-client-cert-auth=true" in by_name["etcd"]


def test_secrets_are_encrypted_with_a_fresh_key_kept_across_restarts(tmp_path: Path) -> None:
    layout = Layout(tmp_path)
    path = configs.encryption_config(layout)
    first = path.read_text()
    provider = json.loads(first)["resources"][0]["providers"][0]
    assert "secretbox" in provider
    assert configs.encryption_config(layout).read_text() == first
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_the_pod_network_does_not_masquerade(tmp_path: Path) -> None:
    document = json.loads(configs.cni_config(Layout(tmp_path)).read_text())
    bridge = document["plugins"][0]
    assert bridge["type"] == "bridge"
    assert bridge["ipMasq"] is False


def test_the_staged_model_is_readable_by_the_images_user_and_never_writable(
    tmp_path: Path,
) -> None:
    from service.cluster.imagebuild import _stage_context

    model = tmp_path / "model"
    model.mkdir()
    (model / "model.safetensors").write_bytes(b"weights")
    (model / "model.safetensors").chmod(0o600)  # as a training run leaves it
    context = tmp_path / "context"
    context.mkdir()
    _stage_context(context, model)
    staged = context / "model" / "model.safetensors"
    assert staged.read_bytes() == b"weights"
    assert stat.S_IMODE(staged.stat().st_mode) == 0o444


def _package(directory: Path, name: str) -> Path:
    from tests.service.model.packages import contract_doc, write_package

    path = write_package(directory, contract={**contract_doc(), "name": name})
    (path / "model.safetensors").chmod(0o600)  # as a training run leaves it
    return path


def test_each_package_is_staged_by_name_readable_and_never_writable(tmp_path: Path) -> None:
    from service.cluster.imagebuild import _stage_context

    first = _package(tmp_path / "first", "tabular-a")
    second = _package(tmp_path / "second", "tabular-b")
    context = tmp_path / "context"
    context.mkdir()
    _stage_context(context, None, (first, second))
    for name, source in (("tabular-a", first), ("tabular-b", second)):
        staged = context / "models" / name
        files = sorted(p.relative_to(staged) for p in staged.rglob("*") if p.is_file())
        assert files == sorted(p.relative_to(source) for p in source.rglob("*") if p.is_file())
        for path in (staged, *staged.rglob("*")):
            wanted = 0o555 if path.is_dir() else 0o444
            assert stat.S_IMODE(path.stat().st_mode) == wanted, path
        assert (staged / "model.safetensors").read_bytes() == (
            source / "model.safetensors"
        ).read_bytes()


def test_without_packages_the_models_directory_is_staged_empty(tmp_path: Path) -> None:
    from service.cluster.imagebuild import _stage_context

    context = tmp_path / "context"
    context.mkdir()
    _stage_context(context, None)
    assert list((context / "models").iterdir()) == []


@pytest.mark.parametrize(
    ("names", "said"),
    [
        (["Tabular_A"], "cannot name a Deployment"),
        (["ztml-model"], "cannot name a Deployment"),
        (["tabular-a", "tabular-a"], "are both 'tabular-a'"),
    ],
)
def test_a_package_that_cannot_be_served_by_name_is_refused(
    tmp_path: Path, names: list[str], said: str
) -> None:
    from service.cluster.errors import ClusterToolError
    from service.cluster.imagebuild import package_names

    packages = [_package(tmp_path / f"p{i}", name) for i, name in enumerate(names)]
    with pytest.raises(ClusterToolError, match=said):
        package_names(packages)


def test_a_directory_without_a_contract_is_not_a_package(tmp_path: Path) -> None:
    from service.cluster.errors import ClusterToolError
    from service.cluster.imagebuild import package_names

    (tmp_path / "model.safetensors").write_bytes(b"weights")
    with pytest.raises(ClusterToolError, match="is not a model package"):
        package_names([tmp_path])
