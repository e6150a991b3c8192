# GPU image: wyoming-sovits on any Linux machine with an NVIDIA card.
#   docker build -t wyoming-sovits .
#   docker run -d --gpus all -p 10200:10200 -v /srv/wyoming-sovits:/data wyoming-sovits
# The host needs an NVIDIA driver and the NVIDIA Container Toolkit. PyPI's Linux torch
# wheels bundle CUDA, so a slim Python base is enough.
FROM python:3.11-slim-bookworm

SHELL ["/bin/bash", "-o", "pipefail", "-c"]

# gcc and libc6-dev stay after the build tools go: Triton and TorchInductor compile their
# kernels' launchers with a C compiler when the server starts on a GPU.
RUN apt-get update \
    && apt-get install -y --no-install-recommends libsndfile1 build-essential cmake gcc libc6-dev \
        open-jtalk-mecab-naist-jdic \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /app
COPY pyproject.toml README.md ./
COPY script ./script
COPY wyoming_sovits ./wyoming_sovits
# The same install script CI runs in a fresh virtualenv; here torch comes from PyPI (CUDA build).
RUN TORCH_SPEC="torch>=2.6,<3" VENV=/app/.venv script/setup \
    && apt-get purge -y build-essential cmake && apt-get autoremove -y \
    && useradd --create-home --uid 1000 sovits \
    && mkdir -p /data && chown sovits:sovits /data

# Triton's compiled kernels (the default GPT step on CUDA) and TorchInductor's
# (--sovits-compile) persist in the volume: later starts skip the compiles.
ENV PATH=/app/.venv/bin:$PATH \
    HF_HOME=/data/cache/huggingface \
    TRITON_CACHE_DIR=/data/cache/triton \
    TORCHINDUCTOR_CACHE_DIR=/data/cache/torchinductor
USER sovits
VOLUME /data
EXPOSE 10200

HEALTHCHECK --start-period=15m --interval=60s --timeout=10s \
    CMD wyoming-sovits health --uri tcp://127.0.0.1:10200 || exit 1

# Extra flags: docker run -e WYOMING_SOVITS_ARGS="--default-voice mom --debug" ...
# The first start downloads the default weights into /data unless they are there already,
# and while /data/voices holds no voice it copies the example voice (package data) there.
ENTRYPOINT ["wyoming-sovits", "serve", "--uri", "tcp://0.0.0.0:10200", \
            "--data-dir", "/data", "--voices-dir", "/data/voices", "--zeroconf", "--download", \
            "--example-voice"]
