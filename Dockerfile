# omega on the CPU. From the repository root:
#   docker build -t omega .
#   docker run --rm -v "$PWD/experiments:/omega/experiments" omega \
#       make --config configs/ppo/room_5x5.yaml --output-dir experiments/room5
#   docker run --rm -v "$PWD/experiments:/omega/experiments" omega run --dir experiments/room5
# NLE ships manylinux wheels (x86_64 and aarch64), so no compiler is needed.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /omega
COPY pyproject.toml README.md ./
COPY omega ./omega
COPY configs ./configs
# The README's CPU install, non-editable: the image keeps no source checkout to edit.
RUN pip install ".[cpu]"

# Experiments (checkpoints, metrics, recordings) go to a mounted volume.
VOLUME ["/omega/experiments"]
ENTRYPOINT ["omega"]
CMD ["--help"]
