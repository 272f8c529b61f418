# hstred container image.
#
#   docker build -t hstred .
#   docker run --rm --user "$(id -u):$(id -g)" -v "$PWD":/data hstred OUTNAME   # hstred run
#   docker run --rm --user "$(id -u):$(id -g)" -v "$PWD":/data hstred simulate /data/x
#
# Any hstred subcommand or option passes through; a first word that is not one is the OUTNAME
# of `hstred run` (entrypoint/hstred-entrypoint.sh). Started as root (--user 0), the command
# runs as the owner of /data. The CRDS cache is /data/crds.
#
# The environment is the one `make install` builds: the exact versions in uv.lock, arcticpy
# compiled from source with OpenMP. The compiler stays in the build stage; the final image
# holds Debian's python3 (3.11), the virtual environment and the entrypoint.
#
# --build-arg WITH_CALACS=1 adds STScI's hstcal (calacs.e, acsccd.e, acs2d.e) from conda-forge
# for `hstred calibrate --engine calacs`. That variant needs conda-forge at build time and is
# not built by the project's CI.

ARG WITH_CALACS=0

# ---------------------------------------------------------------------------------------------
FROM debian:bookworm-slim AS build

# Keep in step with UV_VERSION in the Makefile (tests/test_container_files.py checks).
ARG UV_VERSION=0.13.8

SHELL ["/bin/bash", "-o", "pipefail", "-c"]

RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv python3-dev g++ make \
    && rm -rf /var/lib/apt/lists/*

RUN python3 -m venv /opt/uv \
    && /opt/uv/bin/pip install --no-cache-dir "uv==${UV_VERSION}"

# The same path in this stage and the final one: the venv's scripts name their interpreter.
ENV UV_PROJECT_ENVIRONMENT=/opt/hstred/venv \
    UV_PYTHON=/usr/bin/python3.11 \
    UV_PYTHON_DOWNLOADS=never \
    UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_NO_CACHE=1

WORKDIR /opt/hstred/src

# Dependencies first (this layer survives source edits), in the Makefile's two steps:
# everything but arcticpy, then arcticpy from source with OpenMP against the locked numpy
# and Cython (no build isolation, no cached wheel). The dev group (pytest, ruff) is left out.
COPY pyproject.toml uv.lock ./
RUN /opt/uv/bin/uv sync --frozen --no-dev --no-install-project \
        --no-install-package arcticpy-no-gsl \
    && CFLAGS=-fopenmp CXXFLAGS=-fopenmp LDFLAGS=-fopenmp \
       /opt/uv/bin/uv sync --frozen --no-dev --no-install-project \
        --reinstall-package arcticpy-no-gsl

# hstred itself, as a regular (non-editable) install: the source tree is not needed later.
# This last sync also removes the build group (Cython, setuptools, wheel): the image keeps
# only what hstred needs at run time. arcticpy stays as built above.
COPY README.md ./
COPY hstred ./hstred
RUN /opt/uv/bin/uv sync --frozen --no-default-groups --no-editable \
    && /opt/hstred/venv/bin/python -m hstred.cte.openmp

# ---------------------------------------------------------------------------------------------
# hstcal from conda-forge, only with WITH_CALACS=1; otherwise an empty /opt/hstcal.
FROM debian:bookworm-slim AS calacs

ARG WITH_CALACS
ARG MICROMAMBA_VERSION=2.3.3
ARG HSTCAL_VERSION=3.1.0

SHELL ["/bin/bash", "-o", "pipefail", "-c"]

RUN mkdir -p /opt/hstcal \
    && if [ "${WITH_CALACS}" = 1 ]; then \
        apt-get update \
        && apt-get install -y --no-install-recommends bzip2 ca-certificates curl \
        && curl -fsSL -o /tmp/micromamba.tar.bz2 \
           "https://micro.mamba.pm/api/micromamba/linux-64/${MICROMAMBA_VERSION}" \
        && tar -xjf /tmp/micromamba.tar.bz2 -C /usr/local bin/micromamba \
        && MAMBA_ROOT_PREFIX=/tmp/mamba micromamba create -y -p /opt/hstcal \
           --override-channels -c conda-forge "hstcal=${HSTCAL_VERSION}" \
        && rm -rf /tmp/mamba /tmp/micromamba.tar.bz2 /opt/hstcal/pkgs \
        && /opt/hstcal/bin/calacs.e --version \
        && test -x /opt/hstcal/bin/acsccd.e && test -x /opt/hstcal/bin/acs2d.e; \
    fi

# ---------------------------------------------------------------------------------------------
FROM debian:bookworm-slim

# Keep in step with hstred/_version.py (tests/test_container_files.py checks).
ARG HSTRED_VERSION=0.1.0
ARG SOURCE_URL=""

LABEL org.opencontainers.image.title="hstred" \
      org.opencontainers.image.description="Reproducible reduction of HST ACS/WFC imaging to weak-lensing-quality drizzled images" \
      org.opencontainers.image.version="${HSTRED_VERSION}" \
      org.opencontainers.image.source="${SOURCE_URL}" \
      org.opencontainers.image.licenses="BSD-3-Clause"

# python3 for the venv, libgomp1 for arcticpy's OpenMP, tini to forward signals and reap
# worker processes.
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 libgomp1 ca-certificates tini \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --uid 1000 --user-group --create-home --shell /bin/bash hstred \
    && mkdir -p /data \
    && chown hstred:hstred /data

COPY --from=build /opt/hstred/venv /opt/hstred/venv
COPY --from=calacs /opt/hstcal /opt/hstcal
COPY --chmod=0755 entrypoint/hstred-entrypoint.sh /usr/local/bin/hstred-entrypoint

# The CRDS cache lives in the data volume, so one mount serves raw files, references and
# products. hstcal's programs come after the venv on PATH (absent unless WITH_CALACS=1).
ENV PATH=/opt/hstred/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:/opt/hstcal/bin \
    CRDS_PATH=/data/crds \
    PYTHONUNBUFFERED=1

WORKDIR /data
VOLUME /data
USER 1000:1000

ENTRYPOINT ["/usr/bin/tini", "--", "/usr/local/bin/hstred-entrypoint"]
CMD ["--help"]
