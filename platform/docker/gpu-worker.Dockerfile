# GPU worker: one Celery process per GPU (platform/bin/start-gpu-worker.sh).
# Not built in CI here: no Docker engine (and no GPU) on CI machines.
FROM nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 DEBIAN_FRONTEND=noninteractive
RUN apt-get update && apt-get install -y --no-install-recommends \
      python3.11 python3.11-venv libgl1 libglib2.0-0 \
    && rm -rf /var/lib/apt/lists/*
RUN python3.11 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /app
COPY pyproject.toml constraints.txt ./
COPY config config
COPY governance governance
COPY reenactment reenactment
COPY templates templates
COPY manage.py ./
COPY platform/bin platform/bin
# The CUDA build of the pinned torch version first (see platform/README.md), then the rest
# with the CPU pin of the constraints file removed so pip keeps the CUDA build.
ARG TORCH_INDEX_URL
RUN pip install "torch==2.13.0" --index-url "${TORCH_INDEX_URL}" \
    && grep -v '^torch==' constraints.txt > /tmp/constraints-gpu.txt \
    && pip install -c /tmp/constraints-gpu.txt . \
    && useradd --system --uid 1000 app
USER app
# Weights and face models are mounted read-only; nothing is downloaded at run time.
VOLUME ["/models", "/weights"]
ENV MODELS_DIR=/models WEIGHTS_DIR=/weights
CMD ["platform/bin/start-gpu-worker.sh"]
