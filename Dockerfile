# speechkern with CUDA: the same install script as the README (./install.sh), on a CUDA 13 base image.
#   docker build -t speechkern .
#   docker run --gpus all --rm -v "$PWD/runs:/opt/speechkern/runs" speechkern train recipes/demo --device cuda
FROM nvidia/cuda:13.0.0-devel-ubuntu24.04

ENV DEBIAN_FRONTEND=noninteractive PIP_NO_CACHE_DIR=1
# Python with venv and headers; g++ for pesq (built from source) and for KeOps' GPU kernels at run time.
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv python3-dev build-essential ca-certificates \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /opt/speechkern
COPY . .
RUN rm -rf .venv && ./install.sh

# Caches in one mountable place; KeOps compiles each kernel formula once and keeps it here.
ENV PATH=/opt/speechkern/.venv/bin:$PATH \
    SPEECHKERN_CACHE=/cache/speechkern \
    KEOPS_CACHE_FOLDER=/cache/keops
VOLUME ["/cache"]
ENTRYPOINT ["speechkern"]
CMD ["--help"]
