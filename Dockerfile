# syntax=docker/dockerfile:1
# One image for both Hookgate components: `hookgate operator` and `hookgate deliverer` (and the
# standalone `hookgate run`). Build it with any OCI builder, e.g.:
#
#   docker build -t ghcr.io/hookgate/hookgate:0.1.0 .
#   buildah bud -t ghcr.io/hookgate/hookgate:0.1.0 .
#
# The base image is pinned by tag here. For reproducible release builds, pin it by digest
# too (docs/install.md, "Building the image"):
#
#   docker build --build-arg PYTHON_IMAGE=python:3.11-slim-bookworm@sha256:<digest> .
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# --- build: the wheel, and a virtualenv with it and its dependencies ---------------------
FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY crds ./crds
COPY hookgate ./hookgate
# pip builds the wheel with the project's own build backend (hatchling), in isolation.
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /dist .
# A virtualenv without pip: the final image gets the application and its dependencies only.
# Dependencies come as binary wheels; a source-only one fails here (there is no compiler).
RUN python -m venv --without-pip /opt/hookgate \
 && pip --python /opt/hookgate/bin/python install --no-cache-dir --only-binary=:all: \
      "$(find /dist -name 'hookgate-*.whl')[operator,speedups,kafka,amqp,nats,pubsub]"

# --- runtime -------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="hookgate" \
      org.opencontainers.image.description="Kubernetes-native webhook gateway: operator and deliverer" \
      org.opencontainers.image.source="https://github.com/hookgate/hookgate" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV PATH=/opt/hookgate/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOOKGATE_LOG_FORMAT=json
RUN groupadd --system --gid 10001 hookgate \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin hookgate
COPY --from=build /opt/hookgate /opt/hookgate
# Numeric, so Kubernetes can verify runAsNonRoot without reading /etc/passwd.
USER 10001:10001
WORKDIR /tmp
# 8080: deliverer ingest API and /metrics; 8081: operator liveness (/healthz).
EXPOSE 8080 8081
ENTRYPOINT ["hookgate"]
CMD ["--help"]
