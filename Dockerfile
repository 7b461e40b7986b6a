# syntax=docker/dockerfile:1
# ztml model service image.
#
#   scripts/k3d-image            builds it, imports it into k3d and prints the pinned reference
#
# Builder: installs the locked environment (uv.lock) with uv into /opt/ztml/venv.
# Runtime: the same Python base without build tools, the venv, the model, numeric user 10001.
#
# PYTHON_IMAGE must be pinned by digest. The default below is a PLACEHOLDER (all zeros):
# scripts/k3d-image resolves the real digest of python:3.11-slim-bookworm and passes it,
# and refuses to build with the placeholder.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm@sha256:0000000000000000000000000000000000000000000000000000000000000000

# An empty default for the model; `docker build --build-context model=<dir>` replaces it
# (<dir> holds model.safetensors, served from /opt/ztml/model; ZTML_MODEL_PATH points there).
FROM scratch AS model

FROM ${PYTHON_IMAGE} AS builder
ARG UV_VERSION=0.13.8
# 1 swaps the locked torch wheel for the CPU-only build of the same version (much smaller;
# the service runs on CPU). 0 installs exactly what uv.lock pins.
ARG TORCH_CPU=0
ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PROJECT_ENVIRONMENT=/opt/ztml/venv \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m pip install --no-cache-dir "uv==${UV_VERSION}"
WORKDIR /src
COPY pyproject.toml uv.lock README.md ./
RUN uv sync --locked --no-dev --no-install-project
COPY service ./service
COPY infra ./infra
RUN uv sync --locked --no-dev --no-editable
RUN if [ "${TORCH_CPU}" = "1" ]; then \
      version="$(/opt/ztml/venv/bin/python -c 'import importlib.metadata as m; print(m.version("torch"))')" \
      && uv pip uninstall --python /opt/ztml/venv/bin/python triton $(uv pip list --python /opt/ztml/venv/bin/python --format freeze | sed -n 's/^\(nvidia-[^=]*\)==.*/\1/p') \
      && uv pip install --python /opt/ztml/venv/bin/python --reinstall --no-deps \
           --index-url https://download.pytorch.org/whl/cpu "torch==${version%%+*}+cpu"; \
    fi

FROM ${PYTHON_IMAGE} AS runtime
RUN groupadd --system --gid 10001 ztml \
    && useradd --system --uid 10001 --gid 10001 --home-dir /var/cache/ztml --no-create-home \
       --shell /usr/sbin/nologin ztml \
    && python -m pip uninstall --yes pip setuptools wheel >/dev/null 2>&1 || true
COPY --from=builder /opt/ztml/venv /opt/ztml/venv
COPY --from=model / /opt/ztml/model/
ENV PATH=/opt/ztml/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    ZTML_HOME=/var/lib/ztml \
    ZTML_MODEL_DIR=/opt/ztml/model \
    HOME=/var/cache/ztml
WORKDIR /opt/ztml
USER 10001:10001
EXPOSE 3000
CMD ["python", "-m", "service.app.serve", "service.app.service:ZtmlModelService", "--host", "0.0.0.0", "--port", "3000"]
