#!/usr/bin/env bash
# Build the real Kubernetes test components (kube-apiserver, kube-controller-manager,
# kube-scheduler, kubelet, etcd, helm) from published Go modules into an ignored cache folder.
#
#   tests/components/build.sh            # build whatever is missing
#   GAIA_CACHE=/some/dir tests/components/build.sh
#
# Output: ${GAIA_CACHE:-<repo>/.cache}/components/<name>-<version>/<name>
# plus components/components.env (NAME=absolute-path lines) for test fixtures.
# A binary that is already present is not rebuilt, so a repeat run takes seconds.
# Versions can be overridden with GAIA_KUBE_VERSION, GAIA_ETCD_VERSION, GAIA_HELM_VERSION and
# GAIA_KUBE_STAGING_OVERRIDES (see README.md). GAIA_-prefixed on purpose: etcd reads every
# ETCD_* environment variable as a flag.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
CACHE="${GAIA_CACHE:-$REPO/.cache}"
OUT_ROOT="$CACHE/components"

# Kubernetes minor matches the Debian kubectl (v1.32.x); staging modules are v0.<minor>.<patch>.
KUBE_VERSION="${GAIA_KUBE_VERSION:-v1.32.13}"
# Latest etcd 3.5 patch (Kubernetes 1.32 is validated against etcd 3.5.x).
ETCD_VERSION="${GAIA_ETCD_VERSION:-v3.5.35}"
# Helm 3.17 is the release compiled against k8s.io/client-go v0.32 (Helm's version skew policy).
HELM_VERSION="${GAIA_HELM_VERSION:-v3.17.4}"
# Staging modules to pin to a different version than v0.<minor>.<patch>, as "module=version"
# words. The module proxy reachable here does not serve k8s.io/endpointslice@v0.32.13 (403
# "This module version is not available"); its Go code is byte-identical from v0.32.3 to
# v0.32.12 (only go.mod differs), so v0.32.12 is a safe stand-in.
if [[ -n "${GAIA_KUBE_STAGING_OVERRIDES+x}" ]]; then
    KUBE_STAGING_OVERRIDES="$GAIA_KUBE_STAGING_OVERRIDES"
elif [[ "$KUBE_VERSION" == v1.32.13 ]]; then
    KUBE_STAGING_OVERRIDES="k8s.io/endpointslice=v0.32.12"
else
    KUBE_STAGING_OVERRIDES=""
fi

if [[ -n "${GO:-}" ]]; then :
elif command -v go >/dev/null 2>&1; then GO="$(command -v go)"
elif [[ -x /usr/local/go/bin/go ]]; then GO=/usr/local/go/bin/go
else echo "build.sh: no Go toolchain found (set GO=/path/to/go)" >&2; exit 1
fi

export CGO_ENABLED=0
export GOFLAGS="${GOFLAGS:+$GOFLAGS }-trimpath"
export GOTOOLCHAIN="${GOTOOLCHAIN:-local}"   # never download another toolchain
NICE=(nice -n 19)

log() { printf '[components %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

mkdir -p "$OUT_ROOT"
# The physical path: components.env may be read from other checkouts sharing the cache
# through a symlink, and must not depend on this one.
OUT_ROOT="$(cd "$OUT_ROOT" && pwd -P)"
# Serialise concurrent runs (e.g. several test workers calling this at once).
if command -v flock >/dev/null 2>&1; then
    exec 9>"$OUT_ROOT/.lock"
    flock 9
fi

WORK="$(mktemp -d "${TMPDIR:-/tmp}/gaia-components.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT

T_ALL=$SECONDS

# new_module DIR: an empty throwaway main module to resolve and build in.
new_module() {
    mkdir -p "$1"
    (cd "$1" && "$GO" mod init gaia.local/components-build >/dev/null 2>&1)
}

# go_build DEST LDFLAGS PKG: build next to DEST, then rename, so an interrupted build never
# leaves a half-written binary that a later run would mistake for a finished one.
go_build() {
    local dest="$1" ldf="$2" pkg="$3"
    mkdir -p "$(dirname "$dest")"
    "${NICE[@]}" "$GO" build -ldflags "$ldf" -o "$dest.partial" "$pkg"
    mv -f "$dest.partial" "$dest"
    log "  -> $dest ($(du -h "$dest" | cut -f1))"
}

# ---------------------------------------------------------------------------------------
# kube-apiserver, kube-controller-manager, and for the real-node tier (tests/e2e)
# kube-scheduler and kubelet, all from k8s.io/kubernetes with identical dependencies
# ---------------------------------------------------------------------------------------
KUBE_BINARIES=(kube-apiserver kube-controller-manager kube-scheduler kubelet)
build_kube() {
    local want=() bin
    for bin in "${KUBE_BINARIES[@]}"; do
        if [[ -x "$OUT_ROOT/$bin-$KUBE_VERSION/$bin" ]]; then
            log "$bin $KUBE_VERSION: present, skipping"
        else
            want+=("$bin")
        fi
    done
    [[ ${#want[@]} -eq 0 ]] && return 0

    local t0=$SECONDS mod="$WORK/kubernetes"
    local staging="v0.${KUBE_VERSION#v1.}"          # v1.32.13 -> v0.32.13
    local minor="${KUBE_VERSION#v1.}"; minor="${minor%%.*}"
    log "kubernetes $KUBE_VERSION (staging $staging): resolving modules"
    new_module "$mod"
    cd "$mod"

    # k8s.io/kubernetes's go.mod points every staging module at ./staging/src/...; those
    # replace lines do not apply to us, so pin each one to the published v0.x.y release.
    local upstream_mod
    upstream_mod="$("${NICE[@]}" "$GO" mod download -json "k8s.io/kubernetes@$KUBE_VERSION" |
        sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",$/\1/p')"
    [[ -f "$upstream_mod" ]] || { log "could not download k8s.io/kubernetes@$KUBE_VERSION"; return 1; }
    local edits=() m v o
    for m in $(sed -n 's#^[[:space:]]*\(k8s\.io/[A-Za-z0-9._-]*\) => \./staging/.*#\1#p' "$upstream_mod"); do
        v="$staging"
        for o in $KUBE_STAGING_OVERRIDES; do
            if [[ "${o%%=*}" == "$m" ]]; then v="${o#*=}"; log "  override: $m@$v"; fi
        done
        edits+=("-replace=$m=$m@$v")
    done
    # Keep upstream's GODEBUG defaults (e.g. "godebug default=go1.23"): they change runtime
    # behaviour (TLS, x509) and a dependency's godebug lines are otherwise ignored.
    local g
    while read -r g; do
        [[ -n "$g" ]] && edits+=("-godebug=$g")
    done < <(sed -n 's/^godebug[[:space:]]\{1,\}\([^ (]*\)[[:space:]]*$/\1/p' "$upstream_mod")
    "$GO" mod edit "${edits[@]}"
    log "  ${#edits[@]} go.mod edits (staging replaces + godebug)"

    local pkgs=()
    for bin in "${want[@]}"; do pkgs+=("k8s.io/kubernetes/cmd/$bin@$KUBE_VERSION"); done
    "${NICE[@]}" "$GO" get "${pkgs[@]}"
    log "  modules resolved in $((SECONDS - t0))s"

    # Same variables hack/lib/version.sh sets; the build date is the tag's date (reproducible).
    local info date ldf="-s -w" p
    info="$(cat "$("$GO" env GOMODCACHE)/cache/download/k8s.io/kubernetes/@v/$KUBE_VERSION.info" 2>/dev/null || true)"
    date="$(sed -n 's/.*"Time": *"\([^"]*\)".*/\1/p' <<<"$info")"
    for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
        ldf+=" -X $p.gitVersion=$KUBE_VERSION -X $p.gitMajor=1 -X $p.gitMinor=$minor"
        ldf+=" -X $p.gitTreeState=archive -X $p.buildDate=${date:-1970-01-01T00:00:00Z}"
    done

    for bin in "${want[@]}"; do
        local tb=$SECONDS
        log "$bin $KUBE_VERSION: building"
        go_build "$OUT_ROOT/$bin-$KUBE_VERSION/$bin" "$ldf" "k8s.io/kubernetes/cmd/$bin"
        log "$bin built in $((SECONDS - tb))s"
    done
    cd "$REPO"
}

# ---------------------------------------------------------------------------------------
# etcd from go.etcd.io/etcd/server/v3 (its module root is the etcd server's main package,
# "server/main.go" in the etcd repo, for both 3.5 and 3.6)
# ---------------------------------------------------------------------------------------
build_etcd() {
    local dest="$OUT_ROOT/etcd-$ETCD_VERSION/etcd"
    if [[ -x "$dest" ]]; then log "etcd $ETCD_VERSION: present, skipping"; return 0; fi
    local t0=$SECONDS mod="$WORK/etcd"
    log "etcd $ETCD_VERSION: resolving modules"
    new_module "$mod"
    cd "$mod"
    "${NICE[@]}" "$GO" get "go.etcd.io/etcd/server/v3@$ETCD_VERSION"
    log "etcd $ETCD_VERSION: building"
    go_build "$dest" "-s -w" go.etcd.io/etcd/server/v3
    log "etcd built in $((SECONDS - t0))s"
    cd "$REPO"
}

# ---------------------------------------------------------------------------------------
# helm from helm.sh/helm/v3/cmd/helm (ldflags as in helm's Makefile)
# ---------------------------------------------------------------------------------------
build_helm() {
    local dest="$OUT_ROOT/helm-$HELM_VERSION/helm"
    if [[ -x "$dest" ]]; then log "helm $HELM_VERSION: present, skipping"; return 0; fi
    local t0=$SECONDS mod="$WORK/helm"
    log "helm $HELM_VERSION: resolving modules"
    new_module "$mod"
    cd "$mod"
    "${NICE[@]}" "$GO" get "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
    local cg maj min ldf
    cg="$("$GO" list -m -f '{{.Version}}' k8s.io/client-go)"        # e.g. v0.32.2
    cg="${cg#v}"; maj=$(( ${cg%%.*} + 1 )); min="${cg#*.}"; min="${min%%.*}"
    ldf="-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION"
    ldf+=" -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
    ldf+=" -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMajor=$maj -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMinor=$min"
    ldf+=" -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=$maj -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor=$min"
    log "helm $HELM_VERSION: building (client-go v$cg)"
    go_build "$dest" "$ldf" helm.sh/helm/v3/cmd/helm
    log "helm built in $((SECONDS - t0))s"
    cd "$REPO"
}

log "Go: $("$GO" version)   cache: $OUT_ROOT"
build_etcd
build_kube
build_helm

# Paths for test fixtures (plain KEY=VALUE lines; valid as shell and as a dotenv file).
cat >"$OUT_ROOT/components.env.tmp" <<EOF
KUBE_VERSION=$KUBE_VERSION
ETCD_VERSION=$ETCD_VERSION
HELM_VERSION=$HELM_VERSION
ETCD=$OUT_ROOT/etcd-$ETCD_VERSION/etcd
KUBE_APISERVER=$OUT_ROOT/kube-apiserver-$KUBE_VERSION/kube-apiserver
KUBE_CONTROLLER_MANAGER=$OUT_ROOT/kube-controller-manager-$KUBE_VERSION/kube-controller-manager
KUBE_SCHEDULER=$OUT_ROOT/kube-scheduler-$KUBE_VERSION/kube-scheduler
KUBELET=$OUT_ROOT/kubelet-$KUBE_VERSION/kubelet
HELM=$OUT_ROOT/helm-$HELM_VERSION/helm
EOF
mv -f "$OUT_ROOT/components.env.tmp" "$OUT_ROOT/components.env"
log "done in $((SECONDS - T_ALL))s; paths in $OUT_ROOT/components.env"
