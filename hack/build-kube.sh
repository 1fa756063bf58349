#!/usr/bin/env bash
# Build real Kubernetes control-plane binaries (kube-apiserver, kube-scheduler,
# kube-controller-manager, kubectl), etcd and helm from the official Go modules, at
# the versions pinned in hack/kube-version.env, into a cache folder outside the
# repository:
#
#   ${TFSCHED_CACHE:-$HOME/.cache/tfsched}/kube-<KUBE_VERSION>-etcd-<ETCD_VERSION>/bin
#
# Progress goes to stderr; the bin dir is the last (only) line of stdout, so
#   BIN=$(hack/build-kube.sh | tail -1)
# works. Idempotent: a binary that already exists and reports the expected
# version is not rebuilt. Each binary is linked to a temporary name and renamed
# into place, so an interrupted build never leaves a half-written binary.
#
# Options:
#   --print-bin-dir   print the bin dir and exit (builds nothing)
#   --force           rebuild all binaries
#
# Environment: GO (go binary), TFSCHED_CACHE, TFSCHED_BUILD_JOBS (default 2).
# The Go module and build caches are Go's defaults (outside the repo).
set -euo pipefail

HACK_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=/dev/null
source "${HACK_DIR}/kube-version.env"
: "${KUBE_VERSION:?KUBE_VERSION missing in kube-version.env}"
: "${ETCD_VERSION:?ETCD_VERSION missing in kube-version.env}"
: "${HELM_VERSION:?HELM_VERSION missing in kube-version.env}"

# The one place that defines where binaries live.
kube_bin_dir() {
  echo "${TFSCHED_CACHE:-${HOME}/.cache/tfsched}/kube-${KUBE_VERSION}-etcd-${ETCD_VERSION}/bin"
}

force=0
for arg in "$@"; do
  case "${arg}" in
    --print-bin-dir) kube_bin_dir; exit 0 ;;
    --force) force=1 ;;
    -h|--help) sed -n '2,22p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "unknown argument: ${arg}" >&2; exit 2 ;;
  esac
done

BIN_DIR="$(kube_bin_dir)"
log() { echo "build-kube: $*" >&2; }

# name|module dir|package|expected version substring|version command args
TARGETS=(
  "kube-apiserver|kube|k8s.io/kubernetes/cmd/kube-apiserver|Kubernetes ${KUBE_VERSION}|--version"
  "kube-controller-manager|kube|k8s.io/kubernetes/cmd/kube-controller-manager|Kubernetes ${KUBE_VERSION}|--version"
  "kube-scheduler|kube|k8s.io/kubernetes/cmd/kube-scheduler|Kubernetes ${KUBE_VERSION}|--version"
  "kubectl|kube|k8s.io/kubernetes/cmd/kubectl|Client Version: ${KUBE_VERSION}|version --client"
  "etcd|etcd|go.etcd.io/etcd/server/v3|etcd Version: ${ETCD_VERSION#v}|--version"
  "helm|helm|helm.sh/helm/v3/cmd/helm|${HELM_VERSION}|version --short"
)

# binary_ok NAME EXPECTED ARGS: true when BIN_DIR/NAME runs and reports EXPECTED.
binary_ok() {
  local path="${BIN_DIR}/$1" expected="$2" out
  [[ -x "${path}" ]] || return 1
  # shellcheck disable=SC2086
  out="$("${path}" $3 2>&1)" || return 1
  [[ "${out}" == *"${expected}"* ]]
}

all_ok() {
  local t name mod pkg expected vargs
  for t in "${TARGETS[@]}"; do
    IFS='|' read -r name mod pkg expected vargs <<<"${t}"
    binary_ok "${name}" "${expected}" "${vargs}" || return 1
  done
}

if [[ ${force} -eq 0 ]] && all_ok; then
  log "all binaries present and up to date"
  echo "${BIN_DIR}"
  exit 0
fi

# --- toolchain -------------------------------------------------------------
GO="${GO:-$(command -v go || true)}"
[[ -n "${GO}" ]] || GO=/usr/local/go/bin/go
[[ -x "${GO}" ]] || { log "no go toolchain found (set GO=/path/to/go)"; exit 1; }
export GOTOOLCHAIN=local
export CGO_ENABLED=0            # upstream builds the control plane statically
JOBS="${TFSCHED_BUILD_JOBS:-2}"
export GOFLAGS="-p=${JOBS} -mod=readonly -buildvcs=false"

mkdir -p "${BIN_DIR}"
# Serialise concurrent invocations (e.g. parallel test sessions).
exec 9>"${BIN_DIR}/../.build.lock"
if ! flock -n 9; then
  log "another build is running; waiting for its lock"
  flock 9
fi
# After waiting, somebody else may have finished the job.
if [[ ${force} -eq 0 ]] && all_ok; then
  log "all binaries present and up to date"
  echo "${BIN_DIR}"
  exit 0
fi

# Regenerate the wrapper modules if kube-version.env was bumped.
if ! grep -q "^require k8s.io/kubernetes ${KUBE_VERSION}\$" "${HACK_DIR}/kube/go.mod" 2>/dev/null \
   || ! grep -q "^require go.etcd.io/etcd/server/v3 ${ETCD_VERSION}\$" "${HACK_DIR}/etcd/go.mod" 2>/dev/null \
   || ! grep -q "^require helm.sh/helm/v3 ${HELM_VERSION}\$" "${HACK_DIR}/helm/go.mod" 2>/dev/null; then
  log "hack/kube, hack/etcd or hack/helm go.mod does not match kube-version.env; regenerating"
  GO="${GO}" "${HACK_DIR}/gen-kube-gomod.sh"
fi

start_all=${SECONDS}
log "downloading modules (kubernetes ${KUBE_VERSION}, etcd ${ETCD_VERSION}, helm ${HELM_VERSION})"
for mod_dir in kube etcd helm; do
  (cd "${HACK_DIR}/${mod_dir}" && "${GO}" mod download)
done
log "modules ready ($((SECONDS - start_all))s)"

# Version stamping, as kubernetes' hack/lib/version.sh does. The build date is
# the release's commit time from the module proxy, so builds are reproducible.
kube_time="$(cd "${HACK_DIR}/kube" && "${GO}" list -m -f '{{if .Time}}{{.Time.UTC.Format "2006-01-02T15:04:05Z"}}{{end}}' k8s.io/kubernetes)"
minor="${KUBE_VERSION#v1.}"; minor="${minor%%.*}"
kube_ldflags="-s -w"
for pkg in k8s.io/client-go/pkg/version k8s.io/component-base/version; do
  kube_ldflags+=" -X ${pkg}.gitVersion=${KUBE_VERSION}"
  kube_ldflags+=" -X ${pkg}.gitMajor=1 -X ${pkg}.gitMinor=${minor}"
  kube_ldflags+=" -X ${pkg}.gitTreeState=clean"
  [[ -n "${kube_time}" ]] && kube_ldflags+=" -X ${pkg}.buildDate=${kube_time}"
done
etcd_ldflags="-s -w -X go.etcd.io/etcd/api/v3/version.GitSHA=${ETCD_VERSION}"
helm_ldflags="-s -w -X helm.sh/helm/v3/internal/version.version=${HELM_VERSION} -X helm.sh/helm/v3/internal/version.gitTreeState=clean"

tmp=""
ticker=""
# Must return 0 when there is nothing to remove: an EXIT trap's status becomes
# the script's, and after a successful build tmp is empty.
cleanup() {
  if [[ -n "${ticker}" ]]; then kill "${ticker}" 2>/dev/null || true; fi
  if [[ -n "${tmp}" ]]; then rm -f "${tmp}"; fi
  return 0
}
trap cleanup EXIT
trap 'exit 130' INT TERM

n=0; total=${#TARGETS[@]}
for t in "${TARGETS[@]}"; do
  IFS='|' read -r name mod pkg expected vargs <<<"${t}"
  n=$((n + 1))
  if [[ ${force} -eq 0 ]] && binary_ok "${name}" "${expected}" "${vargs}"; then
    log "${name} (${n}/${total}) already built"
    continue
  fi
  case "${mod}" in
    kube) ldflags="${kube_ldflags}"; tags="selinux,notest,grpcnotrace" ;;
    etcd) ldflags="${etcd_ldflags}"; tags="" ;;
    helm) ldflags="${helm_ldflags}"; tags="" ;;
  esac
  log "building ${name} (${n}/${total})..."
  t0=${SECONDS}
  tmp="${BIN_DIR}/.${name}.tmp.$$"
  # A cold kube-apiserver takes minutes: say it is still going every 30 s.
  ( while sleep 30; do log "  still building ${name}: $((SECONDS - t0))s"; done ) &
  ticker=$!
  status=0
  (cd "${HACK_DIR}/${mod}" && "${GO}" build -trimpath -tags="${tags}" -ldflags="${ldflags}" -o "${tmp}" "${pkg}") || status=$?
  kill "${ticker}" 2>/dev/null || true
  wait "${ticker}" 2>/dev/null || true
  ticker=""
  [[ ${status} -eq 0 ]] || { log "go build of ${name} failed (exit ${status})"; exit "${status}"; }
  mv -f "${tmp}" "${BIN_DIR}/${name}"
  tmp=""
  if ! binary_ok "${name}" "${expected}" "${vargs}"; then
    log "${name} was built but '${name} ${vargs}' does not report '${expected}'"
    exit 1
  fi
  log "built ${name} (${n}/${total}) in $((SECONDS - t0))s"
done

log "all ${total} binaries ready in $((SECONDS - start_all))s"
echo "${BIN_DIR}"
