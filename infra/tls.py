"""A private CA and certificates for mTLS between the model service and OPA (pulumi-tls).

Keys are ECDSA P-256. The CA signs one server certificate for OPA (valid for
``127.0.0.1`` and ``localhost``: OPA is a sidecar) and one client certificate for the
model service. Each certificate, its key and the CA certificate land in a Secret that
the pod mounts as files; private keys never appear anywhere else.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, cast

import pulumi
import pulumi_kubernetes as k8s
import pulumi_tls as tls

Role = Literal["opa", "service"]
VALIDITY_HOURS = 24 * 365
EARLY_RENEWAL_HOURS = 24 * 30


@dataclass(frozen=True)
class MtlsArgs:
    """Inputs of :class:`MtlsCertificates`.

    Attributes:
        namespace: Namespace of the Secrets.
        organization: Subject organization of every certificate.
    """

    namespace: pulumi.Input[str]
    organization: str = "ztml"


class MtlsCertificates(pulumi.ComponentResource):
    """The CA, OPA's server certificate and the service's client certificate.

    Attributes:
        ca_cert_pem: The CA certificate (PEM).
        opa_secret_name: Secret with ``tls.crt``, ``tls.key`` and ``ca.crt`` for OPA.
        service_secret_name: Secret with ``tls.crt``, ``tls.key`` and ``ca.crt`` for the
            model service.
    """

    ca_cert_pem: pulumi.Output[str]
    opa_secret_name: pulumi.Output[str]
    service_secret_name: pulumi.Output[str]

    def __init__(
        self, name: str, args: MtlsArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("ztml:tls:MtlsCertificates", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        ca_key = tls.PrivateKey(f"{name}-ca-key", algorithm="ECDSA", ecdsa_curve="P256", opts=child)
        ca = tls.SelfSignedCert(
            f"{name}-ca",
            private_key_pem=ca_key.private_key_pem,
            is_ca_certificate=True,
            subject=tls.SelfSignedCertSubjectArgs(
                common_name="ztml service-OPA CA", organization=args.organization
            ),
            validity_period_hours=VALIDITY_HOURS,
            early_renewal_hours=EARLY_RENEWAL_HOURS,
            allowed_uses=["cert_signing", "crl_signing", "digital_signature"],
            opts=child,
        )
        self.ca_cert_pem = ca.cert_pem
        self.opa_secret_name = self._leaf(name, "opa", args, ca_key, ca)
        self.service_secret_name = self._leaf(name, "service", args, ca_key, ca)
        self.register_outputs(
            {
                "ca_cert_pem": self.ca_cert_pem,
                "opa_secret_name": self.opa_secret_name,
                "service_secret_name": self.service_secret_name,
            }
        )

    def _leaf(
        self,
        name: str,
        role: Role,
        args: MtlsArgs,
        ca_key: tls.PrivateKey,
        ca: tls.SelfSignedCert,
    ) -> pulumi.Output[str]:
        child = pulumi.ResourceOptions(parent=self)
        key = tls.PrivateKey(
            f"{name}-{role}-key", algorithm="ECDSA", ecdsa_curve="P256", opts=child
        )
        request = tls.CertRequest(
            f"{name}-{role}-csr",
            private_key_pem=key.private_key_pem,
            subject=tls.CertRequestSubjectArgs(
                common_name=f"ztml-{role}", organization=args.organization
            ),
            dns_names=["localhost", f"ztml-{role}"],
            ip_addresses=["127.0.0.1"] if role == "opa" else [],
            opts=child,
        )
        cert = tls.LocallySignedCert(
            f"{name}-{role}-cert",
            cert_request_pem=request.cert_request_pem,
            ca_private_key_pem=ca_key.private_key_pem,
            ca_cert_pem=ca.cert_pem,
            validity_period_hours=VALIDITY_HOURS,
            early_renewal_hours=EARLY_RENEWAL_HOURS,
            allowed_uses=[
                "digital_signature",
                "key_encipherment",
                "server_auth" if role == "opa" else "client_auth",
            ],
            opts=child,
        )
        secret = k8s.core.v1.Secret(
            f"{name}-{role}-tls",
            metadata=k8s.meta.v1.ObjectMetaArgs(
                namespace=args.namespace, labels={"app.kubernetes.io/part-of": "ztml"}
            ),
            type="Opaque",
            string_data={
                "tls.crt": cert.cert_pem,
                "tls.key": pulumi.Output.secret(cast(Any, key.private_key_pem)),
                "ca.crt": ca.cert_pem,
            },
            opts=child,
        )
        return secret.metadata.name
