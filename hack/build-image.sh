#!/usr/bin/env bash
# Build the tfsched container image (the repository's Dockerfile) with podman,
# on a machine without Docker or a reachable container registry:
#
#   1. podman, runc, mmdebstrap, uidmap and fuse-overlayfs from Debian's
#      packages, when missing (needs root and apt-get);
#   2. a local base image, localhost/debian-python:bookworm, made once with
#      mmdebstrap from Debian's packages; the root filesystem tarball is kept in
#        ${TFSCHED_CACHE:-$HOME/.cache/tfsched}/images/
#      so the base survives a `podman system reset`;
#   3. podman build --build-arg BASE_IMAGE=<that base> -t localhost/tfsched:dev .
#      with the runtime and rlimit flags that work here (crun fails on rlimits and
#      on the hybrid cgroup layout; every rlimit must be at or below the host's).
#
# Progress goes to stderr; the image name is the last (only) line of stdout, so
#   IMAGE=$(hack/build-image.sh | tail -1)
# works. Idempotent: podman's layer cache makes a rebuild with nothing changed
# take seconds, and the base image is made only when missing.
#
# Options:
#   --print-image   print the image name and exit (builds nothing)
#   --base-only     install the tools and make the base image, then exit
#
# Environment: TFSCHED_CACHE, TFSCHED_IMAGE (default localhost/tfsched:dev),
# TFSCHED_BASE_IMAGE (default localhost/debian-python:bookworm; another value,
# e.g. python:3.11-slim, is pulled by podman instead of being made here).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
IMAGE="${TFSCHED_IMAGE:-localhost/tfsched:dev}"
LOCAL_BASE="localhost/debian-python:bookworm"
BASE_IMAGE="${TFSCHED_BASE_IMAGE:-${LOCAL_BASE}}"
CACHE_DIR="${TFSCHED_CACHE:-${HOME}/.cache/tfsched}/images"
# The shared flags of `podman run` and `podman build` here: see the header.
PODMAN=(podman --runtime /usr/sbin/runc --cgroup-manager=cgroupfs)
ULIMITS=(--ulimit nofile=4096:4096 --ulimit nproc=4096:4096)

base_only=0
for arg in "$@"; do
  case "${arg}" in
    --print-image) echo "${IMAGE}"; exit 0 ;;
    --base-only) base_only=1 ;;
    -h|--help) sed -n '2,26p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "unknown argument: ${arg}" >&2; exit 2 ;;
  esac
done

log() { echo "build-image: $*" >&2; }

# --- tools -------------------------------------------------------------------
# command -> Debian package providing it
declare -A TOOLS=(
  [podman]=podman [/usr/sbin/runc]=runc [mmdebstrap]=mmdebstrap
  [newuidmap]=uidmap [fuse-overlayfs]=fuse-overlayfs
)
missing=()
for cmd in "${!TOOLS[@]}"; do
  command -v "${cmd}" >/dev/null 2>&1 || missing+=("${TOOLS[${cmd}]}")
done
if [[ ${#missing[@]} -gt 0 ]]; then
  if [[ "$(id -u)" != 0 ]] || ! command -v apt-get >/dev/null 2>&1; then
    log "missing ${missing[*]}: install them as root (apt-get install ${missing[*]})"
    exit 1
  fi
  log "installing ${missing[*]} from Debian's packages"
  t0=${SECONDS}
  apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  log "installed in $((SECONDS - t0))s"
fi

# Serialise concurrent invocations (parallel test sessions): one mmdebstrap,
# and one podman build writing the same tag.
mkdir -p "${CACHE_DIR}"
exec 9>"${CACHE_DIR}/.build.lock"
if ! flock -n 9; then
  log "another build is running; waiting for its lock"
  flock 9
fi

# --- base image ----------------------------------------------------------------
if [[ "${BASE_IMAGE}" == "${LOCAL_BASE}" ]] && ! podman image exists "${LOCAL_BASE}"; then
  rootfs="${CACHE_DIR}/debian-python-bookworm.tar"
  if [[ ! -s "${rootfs}" ]]; then
    log "making the base root filesystem with mmdebstrap (about 30 s)"
    t0=${SECONDS}
    # To a temporary name first, so an interrupted run never leaves a half
    # tarball; it ends in .tar because mmdebstrap picks its output format by that.
    tmp_rootfs="${rootfs%.tar}.tmp$$.tar"
    trap 'rm -rf "${tmp_rootfs}"' EXIT
    mmdebstrap --quiet --variant=minbase --include=python3,python3-venv,ca-certificates \
      bookworm "${tmp_rootfs}" >&2
    mv -f "${tmp_rootfs}" "${rootfs}"
    trap - EXIT
    log "base root filesystem ready in $((SECONDS - t0))s ($(du -sh "${rootfs}" | cut -f1))"
  fi
  log "importing ${LOCAL_BASE}"
  # An imported tarball has no configuration: give it what a Debian image has.
  podman import --quiet \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' \
    --change 'CMD ["/bin/bash"]' \
    "${rootfs}" "${LOCAL_BASE}" >/dev/null
fi
[[ ${base_only} -eq 1 ]] && { echo "${BASE_IMAGE}"; exit 0; }

# --- image ---------------------------------------------------------------------
# pip in the RUN steps trusts this bundle (the Dockerfile points PIP_CERT at the
# OS's): the host's, so a TLS-intercepting proxy's CA is trusted during the build
# only. A build volume is not committed to the image and does not bust its cache.
ca_bundle="${TFSCHED_CA_BUNDLE:-${SSL_CERT_FILE:-/etc/ssl/certs/ca-certificates.crt}}"
volumes=()
[[ -s "${ca_bundle}" ]] && volumes=(--volume "${ca_bundle}:/etc/ssl/certs/ca-certificates.crt:ro")

log "building ${IMAGE} from ${BASE_IMAGE}"
t0=${SECONDS}
# --network=host: pip in the RUN steps reaches PyPI (there is no bridge network here).
"${PODMAN[@]}" build --network=host "${ULIMITS[@]}" "${volumes[@]}" \
  --build-arg BASE_IMAGE="${BASE_IMAGE}" \
  --tag "${IMAGE}" --file "${REPO}/Dockerfile" "${REPO}" >&2
log "built ${IMAGE} in $((SECONDS - t0))s ($(podman image inspect --format '{{.Size}}' "${IMAGE}" \
  | awk '{printf "%.0f MB", $1 / 1e6}'))"
echo "${IMAGE}"
