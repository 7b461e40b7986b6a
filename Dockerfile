# ztml model service image: the one definition, for the local cluster and for k3d.
#
#   ztml cluster images          builds it (and the OPA and PostgreSQL images) without a
#                                registry and imports it into the local cluster
#   scripts/k3d-image            the same build, imported into a k3d cluster
#
# BASE_IMAGE is a Debian bookworm root file system with Python 3.11, made locally from
# Debian's packages by `ztml cluster images` (debootstrap) and given here by image ID, so
# nothing is pulled from a registry. The build context is staged by the same command:
# pyproject.toml, uv.lock, README.md, service/, infra/, policies/ and opa (the pinned OPA,
# static: the deploy gate runs in the pod), build-ca.crt (the building host's CA bundle,
# used by the builder stage only), model/ (the approved model artifact, served from
# /opt/ztml/model; empty when the model is mounted instead) and models/ (further approved
# model packages, one directory each by name, served from /opt/ztml/models/<name>; empty
# unless `ztml cluster images --package` names some).
#
# Builder: installs the locked environment (uv.lock) with uv into /opt/ztml/venv.
# Runtime: the same base without uv, the venv, the model, numeric user 10001.
# PLACEHOLDER: the image ID `ztml cluster images` passes; a build without it fails here.
ARG BASE_IMAGE=sha256:0000000000000000000000000000000000000000000000000000000000000000

FROM ${BASE_IMAGE} AS builder
ARG UV_VERSION=0.13.8
# 1 swaps the locked torch wheel for the CPU-only build of the same version (much smaller;
# the service runs on CPU; needs download.pytorch.org). 0 installs exactly what uv.lock pins.
ARG TORCH_CPU=0
ENV UV_COMPILE_BYTECODE=1 \
    UV_NO_CACHE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PROJECT_ENVIRONMENT=/opt/ztml/venv \
    PIP_DISABLE_PIP_VERSION_CHECK=1
# The building host's CA bundle (staged as build-ca.crt), so the builder reaches PyPI through
# whatever TLS the host trusts; only this stage sees it, the runtime image keeps Debian's.
COPY build-ca.crt /etc/ztml-build/ca.pem
ENV SSL_CERT_FILE=/etc/ztml-build/ca.pem \
    PIP_CERT=/etc/ztml-build/ca.pem
RUN python3 -m venv /opt/uv && /opt/uv/bin/pip install --no-cache-dir "uv==${UV_VERSION}"
WORKDIR /src
COPY pyproject.toml uv.lock README.md ./
RUN /opt/uv/bin/uv sync --locked --no-dev --no-install-project --python /usr/bin/python3.11
COPY service ./service
COPY infra ./infra
RUN /opt/uv/bin/uv sync --locked --no-dev --no-editable --python /usr/bin/python3.11
RUN if [ "${TORCH_CPU}" = "1" ]; then \
      version="$(/opt/ztml/venv/bin/python -c 'import importlib.metadata as m; print(m.version("torch"))')" \
      && /opt/uv/bin/uv pip uninstall --python /opt/ztml/venv/bin/python triton $(/opt/uv/bin/uv pip list --python /opt/ztml/venv/bin/python --format freeze | sed -n 's/^\(nvidia-[^=]*\)==.*/\1/p') \
      && /opt/uv/bin/uv pip install --python /opt/ztml/venv/bin/python --reinstall --no-deps \
           --index-url https://download.pytorch.org/whl/cpu "torch==${version%%+*}+cpu"; \
    fi

FROM ${BASE_IMAGE} AS runtime
RUN groupadd --system --gid 10001 ztml \
    && useradd --system --uid 10001 --gid 10001 --home-dir /var/cache/ztml --no-create-home \
       --shell /usr/sbin/nologin ztml
COPY --from=builder /opt/ztml/venv /opt/ztml/venv
# The deploy gate runs in the pod too (the ledger-seed init step and the service's start):
# the pinned OPA (static) and the policies it evaluates, without their tests.
COPY opa /usr/local/bin/opa
COPY policies/ /opt/ztml/policies/
COPY model/ /opt/ztml/model/
COPY models/ /opt/ztml/models/
ENV PATH=/opt/ztml/venv/bin:$PATH \
    ZTML_POLICIES_DIR=/opt/ztml/policies \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    ZTML_HOME=/var/lib/ztml \
    ZTML_MODEL_DIR=/opt/ztml/model \
    HOME=/var/cache/ztml
WORKDIR /opt/ztml
USER 10001:10001
EXPOSE 3000
CMD ["python", "-m", "service.app.serve", "service.app.service:ZtmlModelService", "--host", "0.0.0.0", "--port", "3000"]
