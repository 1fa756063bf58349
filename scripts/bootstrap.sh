#!/usr/bin/env bash
# Install everything tfsched's demo and tests need, from a fresh clone:
#   - a virtualenv in .venv with the package (editable) and its test extras,
#     reinstalled only when pyproject.toml changes;
#   - the Kubernetes control-plane binaries and etcd, built from the official
#     Go modules into ~/.cache/tfsched (hack/build-kube.sh; a no-op when built);
#   - Prometheus, from Debian's packages, for the autoscaler's end-to-end tests.
# Idempotent and quiet when there is nothing to do.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

log() { echo "bootstrap: $*" >&2; }

PYTHON="${PYTHON:-python3}"
if [[ ! -x .venv/bin/python ]]; then
  log "creating .venv with $(${PYTHON} --version)"
  "${PYTHON}" -m venv .venv
fi
stamp=".venv/.tfsched-installed"
want="$(sha256sum pyproject.toml | cut -d' ' -f1)"
if [[ ! -f "${stamp}" || "$(cat "${stamp}")" != "${want}" ]]; then
  log "installing Python dependencies"
  .venv/bin/python -m pip install --quiet --upgrade pip
  .venv/bin/python -m pip install --quiet -e '.[test,bench]'
  echo "${want}" > "${stamp}"
fi

bash hack/build-kube.sh >/dev/null

if ! command -v prometheus >/dev/null 2>&1; then
  if [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null 2>&1; then
    log "installing prometheus from Debian's packages"
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null
  else
    log "prometheus is missing: install Debian's 'prometheus' package (apt-get install prometheus)"
    exit 1
  fi
fi
