# The cotd image: every worker and `cotd teacher serve`. Build context: the repository root.
# One recipe, two flavours; the build args choose the PyTorch wheels:
#   cotd/cpu:local   TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu (the default: no CUDA libraries)
#   cotd/cuda:local  TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128 (CUDA libraries come as wheels;
#                    the driver comes from the host through the NVIDIA container toolkit)
# The build stage fills a virtual environment; the runtime stage is the base image, a non-root user and
# that environment: no pip, no build tools, no source tree. Both flavours share the base layers.
ARG BASE_IMAGE=python:3.11.13-slim-bookworm
# The build stage's image: the base itself, or an image derived from it (build tools, a local wheel folder).
ARG BUILDER_IMAGE=${BASE_IMAGE}

FROM ${BUILDER_IMAGE} AS build
ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PATH=/opt/venv/bin:$PATH
RUN python3 -m venv /opt/venv
WORKDIR /src

# Dependencies first, pinned by the constraints file: this layer is rebuilt only when they change.
COPY Dockerfiles/constraints.txt Dockerfiles/constraints.txt
COPY pyproject.toml README.md ./
RUN pip install --no-cache-dir --index-url "${TORCH_INDEX_URL}" "torch==${TORCH_VERSION}" \
    && python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" > /tmp/requirements.txt \
    && pip install --no-cache-dir -c Dockerfiles/constraints.txt -r /tmp/requirements.txt

# Then the project itself (only the packages: never `COPY . .`). Then out go pip, the packages' test
# suites, PyTorch's C++ headers, test binaries and protoc (for building extensions, never run here).
COPY shared/ shared/
COPY services/ services/
RUN pip install --no-cache-dir -c Dockerfiles/constraints.txt . \
    && pip uninstall --no-cache-dir -q -y pip setuptools wheel \
    && cd /opt/venv/lib/python3.*/site-packages \
    && find . -depth -type d -name tests -exec rm -rf {} + \
    && rm -rf torch/include torch/share torch/test torch/bin/*Test torch/bin/test_* torch/bin/protoc* \
              torch/lib/libjitbackend_test.so torch/lib/libtorchbind_test.so \
    && python -c "import shared.metrics, services.trainer.loop, services.evaluator.evaluate, services.generator.server"

FROM ${BASE_IMAGE}
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH=/opt/venv/bin:$PATH \
    HF_HOME=/home/cotd/.cache/huggingface \
    COTD_METRICS_PORT=9100
RUN groupadd --system --gid 10001 cotd \
    && useradd --system --uid 10001 --gid cotd --create-home --home-dir /home/cotd --shell /usr/sbin/nologin cotd \
    && mkdir -p /home/cotd/.cache/huggingface /home/cotd/.cache/cotd \
    && chown -R cotd:cotd /home/cotd
COPY --from=build /opt/venv /opt/venv

USER 10001:10001
WORKDIR /home/cotd
EXPOSE 9100
# Probes this container's own network address (not 127.0.0.1): it fails when other containers cannot connect.
HEALTHCHECK --interval=30s --timeout=5s --start-period=120s --retries=3 \
    CMD ["python", "-m", "shared.metrics", "--check"]
CMD ["cotd", "--help"]
