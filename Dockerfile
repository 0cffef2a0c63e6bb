# sim2real_fast, CPU image: Debian 12 (Python 3.11), the CPU-only torch, the extension built with OpenMP.
#   podman build -t sim2real-fast:cpu .            (docker build works the same)
#   podman run --rm --user "$(id -u):$(id -g)" -v "$PWD/out:/out" -w /out sim2real-fast:cpu run --quick
#   (rootless podman: --userns=keep-id instead of --user; without a mounted folder: the user s2r)
#   podman run --rm --entrypoint pytest sim2real-fast:cpu /opt/sim2real_fast/python_tests -m "not slow"
# Build arguments:
#   BASE         the Debian 12 image to start from (docker/verify.sh can make one from Debian's packages)
#   TORCH        the torch requirement; TORCH_INDEX the index it comes from (empty: PyPI or pip's own
#                configuration). The default is PyTorch's small CPU-only wheel.
# No vit extra: PyPI's torchvision is a CUDA build that fails to import beside the CPU-only torch
# (Dockerfile.cuda has the ViT).
ARG BASE=docker.io/library/debian:bookworm-slim
FROM ${BASE}

ARG TORCH=torch==2.13.0
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu

ENV VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# Debian's cmake is 3.25; the build needs >= 3.26, so cmake and ninja come from PyPI below.
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      python3 python3-venv python3-dev g++ ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --create-home --shell /bin/bash s2r \
 && python3 -m venv "$VIRTUAL_ENV" \
 && pip install -q --upgrade pip

RUN pip install -q ${TORCH_INDEX:+--index-url "$TORCH_INDEX"} "$TORCH" \
 && pip install -q numpy "scikit-build-core>=0.10" "pybind11>=2.12" "cmake>=3.26" ninja

COPY . /opt/sim2real_fast

# Built against the installed torch without isolation, as the Makefile does; the constraint keeps the
# extras from replacing that torch.
RUN cd /opt/sim2real_fast \
 && python -c "import torch; print('torch==' + torch.__version__)" > "$VIRTUAL_ENV/torch-constraint.txt" \
 && S2R_CUDA=OFF pip install -q --no-build-isolation -Cbuild-dir=/tmp/s2r-build \
      -c "$VIRTUAL_ENV/torch-constraint.txt" ".[test,root]" \
 && rm -rf /tmp/s2r-build \
 && cd / && python -I -c "import sim2real_fast, torch; print('sim2real_fast', sim2real_fast.__version__, 'torch', torch.__version__, sim2real_fast.build_info())"

USER s2r
WORKDIR /home/s2r
ENTRYPOINT ["sim2real"]
CMD ["--help"]
