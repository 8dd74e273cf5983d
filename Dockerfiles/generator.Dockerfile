# syntax=docker/dockerfile:1
# cotd generator worker (also the CPU image: teacher-cpu, trainer-cpu, evaluator-cpu in the `cpu` profile).
# Build context: the repository root (docker compose build generator).
FROM python:3.11.13-slim-bookworm

# PyTorch comes from the CPU wheel index (no CUDA libraries); keep in step with the dev environment.
ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    HF_HOME=/home/cotd/.cache/huggingface \
    COTD_METRICS_PORT=9100

RUN groupadd --system --gid 10001 cotd \
    && useradd --system --uid 10001 --gid cotd --create-home --home-dir /home/cotd --shell /usr/sbin/nologin cotd \
    && mkdir -p /home/cotd/.cache/huggingface /home/cotd/.cache/cotd \
    && chown -R cotd:cotd /home/cotd

WORKDIR /opt/cotd

# Dependencies first, pinned by the constraints file: this layer is rebuilt only when they change.
COPY Dockerfiles/constraints.txt Dockerfiles/constraints.txt
COPY pyproject.toml README.md ./
RUN pip install --no-cache-dir --index-url "${TORCH_INDEX_URL}" "torch==${TORCH_VERSION}" \
    && python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" > /tmp/requirements.txt \
    && pip install --no-cache-dir -c Dockerfiles/constraints.txt -r /tmp/requirements.txt \
    && rm /tmp/requirements.txt

# Then the project itself (only the packages: never `COPY . .`).
COPY shared/ shared/
COPY services/ services/
RUN pip install --no-cache-dir -c Dockerfiles/constraints.txt . \
    && python -c "import shared.metrics"

USER 10001:10001
WORKDIR /home/cotd
EXPOSE 9100
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-m", "shared.metrics", "--check"]
CMD ["cotd", "worker", "generator", "--metrics-port", "9100"]
