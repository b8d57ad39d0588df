# lrtune with CUDA-enabled torch. The torch wheels pinned in constraints.txt are CUDA 13
# builds that bring their own CUDA libraries, so a slim Python base is enough; the host
# needs an NVIDIA driver and the NVIDIA container toolkit (docker run --gpus all ...).
#
#   docker build -t lrtune .
#   docker run --gpus all -v "$PWD:/work" lrtune find --task cifar10 --data-dir /work/data
FROM python:3.11-slim

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONUNBUFFERED=1 \
    MPLBACKEND=Agg

WORKDIR /opt/lrtune

# The heavy, pinned layer first, so code changes do not reinstall torch.
COPY constraints.txt ./
RUN pip install -c constraints.txt torch torchvision

COPY pyproject.toml README.md ./
COPY lrtune ./lrtune
COPY studies ./studies
RUN pip install -c constraints.txt . \
    && useradd --create-home --uid 1000 lrtune

USER lrtune
WORKDIR /work
ENTRYPOINT ["lrtune"]
CMD ["--help"]
