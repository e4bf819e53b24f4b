# omega on the CPU. From the repository root:
#   docker build -t omega .
#   docker run --rm -v "$PWD/experiments:/omega/experiments" omega \
#       make --config configs/ppo/room_5x5.yaml --output-dir experiments/room5
#   docker run --rm -v "$PWD/experiments:/omega/experiments" omega run --dir experiments/room5
# NLE ships manylinux wheels (x86_64 and aarch64), so no compiler is needed. minihack 1.0.2 is
# published only as a source archive whose setup.py runs `git`, so omega is installed into a
# venv in a build stage that has git, and only the venv is copied into the final image.
# scripts/test-image.sh builds this file with buildah and runs omega inside the image.
FROM python:3.11-slim AS base

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/venv/bin:$PATH

FROM base AS build
RUN apt-get update \
    && apt-get install -y --no-install-recommends git \
    && rm -rf /var/lib/apt/lists/* \
    && python -m venv /opt/venv
WORKDIR /src
COPY pyproject.toml README.md ./
COPY omega ./omega
COPY configs ./configs
# The README's CPU install, non-editable: the image keeps no source checkout to edit.
# minihack 1.0.2 imports pkg_resources: setuptools 82 removed it and 80.9-81 warn on every
# import; Python 3.11's venv comes with an older setuptools, which this keeps.
RUN pip install ".[cpu]" "setuptools<80.9"

FROM base
COPY --from=build /opt/venv /opt/venv
WORKDIR /omega
COPY configs ./configs
# Experiments (checkpoints, metrics, recordings) go to a mounted volume.
VOLUME ["/omega/experiments"]
ENTRYPOINT ["omega"]
CMD ["--help"]
