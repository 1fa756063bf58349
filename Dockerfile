# syntax=docker/dockerfile:1
# tfsched: `tfsched serve` as a non-root user (uid 65532, as deploy/kind/tfsched.yaml
# runs it), with the numba kernels compiled into the image so a new pod is ready
# in seconds instead of compiling them first.
#
#   docker build -t tfsched:dev .
#
# Without Docker or a registry, hack/build-image.sh builds it with podman from a
# local Debian base (BASE_IMAGE=localhost/debian-python:bookworm). The stages
# only use `python3 -m venv`, so any base with Python >= 3.11 and venv works.
ARG BASE_IMAGE=python:3.11-slim

# --- the venv with the dependencies: a layer of its own, rebuilt only when
#     pyproject.toml changes, so a source edit does not re-download numba & co.
FROM ${BASE_IMAGE} AS deps
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PIP_ROOT_USER_ACTION=ignore
# pip trusts the OS's CA bundle rather than its own copy, so a build behind a
# TLS-intercepting proxy works once that bundle has the proxy's CA (hack/build-image.sh
# mounts the host's). An ARG: it does not stay in the image's environment.
ARG PIP_CERT=/etc/ssl/certs/ca-certificates.crt
COPY pyproject.toml /tmp/pyproject.toml
RUN python3 -m venv /opt/tfsched \
 && python3 -c 'import tomllib; print(*tomllib.load(open("/tmp/pyproject.toml", "rb"))["project"]["dependencies"], sep="\n")' \
      > /tmp/requirements.txt \
 && /opt/tfsched/bin/pip install --quiet -r /tmp/requirements.txt \
 && rm /tmp/pyproject.toml /tmp/requirements.txt

# --- the wheel, built without network once the build requirements are in
FROM ${BASE_IMAGE} AS wheel
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PIP_ROOT_USER_ACTION=ignore
ARG PIP_CERT=/etc/ssl/certs/ca-certificates.crt
COPY pyproject.toml /src/pyproject.toml
RUN python3 -m venv /opt/build \
 && python3 -c 'import tomllib; print(*tomllib.load(open("/src/pyproject.toml", "rb"))["build-system"]["requires"], sep="\n")' \
      > /tmp/build-requirements.txt \
 && /opt/build/bin/pip install --quiet -r /tmp/build-requirements.txt
COPY . /src
RUN /opt/build/bin/pip wheel --quiet --no-deps --no-build-isolation --wheel-dir /dist /src

# --- the image
FROM deps
COPY --from=wheel /dist/ /tmp/dist/
# --no-index: every dependency is already in the venv (the deps stage); pip
# checks that and fails rather than fetching something the layer above lacks.
RUN /opt/tfsched/bin/pip install --quiet --no-index /tmp/dist/*.whl \
 && rm -rf /tmp/dist \
 && echo 'tfsched:x:65532:65532:tfsched:/nonexistent:/usr/sbin/nologin' >> /etc/passwd \
 && echo 'tfsched:x:65532:' >> /etc/group \
 && install -d -o 65532 -g 65532 /opt/tfsched/numba-cache
# NUMBA_CACHE_DIR: numba only uses a cache folder it can write to (it checks),
# so the baked cache belongs to the runtime user. NUMBA_CPU_NAME=generic: numba
# keys the cache by CPU model and features, so host-tuned code would be reused
# only on the build machine's CPU model and recompiled on other nodes; generic
# x86-64 code is valid everywhere (fit+score of 5,000 nodes × 8 GPUs: 250 µs
# instead of 170 µs). `--build-arg NUMBA_CPU_NAME=` keeps the build host's tuning.
ARG NUMBA_CPU_NAME=generic
ENV PATH=/opt/tfsched/bin:${PATH} \
    NUMBA_CACHE_DIR=/opt/tfsched/numba-cache \
    NUMBA_CPU_NAME=${NUMBA_CPU_NAME} \
    PYTHONUNBUFFERED=1
USER 65532:65532
# Compile every kernel into the cache, as the runtime user, at the installed
# path the server imports them from (numba keys the cache on it). The check
# fails the build if numba silently could not write the cache.
RUN python3 -c 'from tfsched.scoring.kernels import warm_up; warm_up()' \
 && python3 -c 'from tfsched.autoscale.loop import warm_up; warm_up()' \
 && test -n "$(find /opt/tfsched/numba-cache -name '*.nbi')"
EXPOSE 8888
ENTRYPOINT ["tfsched"]
CMD ["serve"]
