# syntax=docker/dockerfile:1
# cotd trainer worker: one per GPU. Build context: the repository root (docker compose build trainer).
# PyTorch with CUDA comes from the base image; Dockerfiles/constraints.txt pins everything else.
FROM pytorch/pytorch:2.9.1-cuda12.8-cudnn9-runtime

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    HF_HOME=/home/cotd/.cache/huggingface \
    COTD_METRICS_PORT=9100

RUN python -c "import sys, torch; assert sys.version_info >= (3, 11), sys.version; print('torch', torch.__version__)" \
    && groupadd --system --gid 10001 cotd \
    && useradd --system --uid 10001 --gid cotd --create-home --home-dir /home/cotd --shell /usr/sbin/nologin cotd \
    && mkdir -p /home/cotd/.cache/huggingface /home/cotd/.cache/cotd \
    && chown -R cotd:cotd /home/cotd

WORKDIR /opt/cotd

# Dependencies first, pinned by the constraints file (torch stays the base image's).
COPY Dockerfiles/constraints.txt Dockerfiles/constraints.txt
COPY pyproject.toml README.md ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" > /tmp/requirements.txt \
    && pip install --no-cache-dir -c Dockerfiles/constraints.txt -r /tmp/requirements.txt \
    && rm /tmp/requirements.txt

COPY shared/ shared/
COPY services/ services/
RUN pip install --no-cache-dir -c Dockerfiles/constraints.txt . \
    && python -c "import shared.metrics"

USER 10001:10001
WORKDIR /home/cotd
EXPOSE 9100
HEALTHCHECK --interval=30s --timeout=5s --start-period=120s --retries=3 \
    CMD ["python", "-m", "shared.metrics", "--check"]
CMD ["cotd", "worker", "trainer", "--metrics-port", "9100", "--concurrency", "1"]
