# Shared by image.sh and cluster.sh (sourced, not run): where the real-node tier keeps its
# cache, and the podman/buildah settings it runs them with (its own config files, so nothing
# under /etc/containers changes and the image store lives in the ignored .cache).
# shellcheck shell=bash

E2E_HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$E2E_HERE/../.." && pwd)"
CACHE="${GAIA_CACHE:-$REPO/.cache}"
# The physical path: podman records its store's path, and checkouts may share the cache
# through a symlink (.cache -> elsewhere).
mkdir -p "$CACHE" && CACHE="$(cd "$CACHE" && pwd -P)"
E2E_CACHE="$CACHE/e2e"
IMAGES="$E2E_CACHE/images"            # docker-archive tarballs that cluster.sh imports
PODMAN_DIR="$E2E_CACHE/podman"
PODMAN_RUN="/run/gaia-e2e-podman"     # podman's run root: locks and transient state

# The image the chart's defaults become with `--set image.repository=gaia --set image.tag=dev`
# (a reference without a registry means docker.io/library/ to the kubelet and containerd).
GAIA_IMAGE="${GAIA_E2E_IMAGE:-gaia:dev}"
# The sandbox ("pause") image that containerd's config names; built here from a tiny C file.
PAUSE_IMAGE="registry.k8s.io/pause:3.10"

e2e_log() { printf '[e2e %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

# full_name REF: the fully qualified name containerd and the kubelet use for REF.
full_name() {
    local ref="$1" first="${1%%/*}"
    if [[ "$ref" != */* ]]; then ref="docker.io/library/$ref"
    elif [[ "$first" != *.* && "$first" != *:* && "$first" != localhost ]]; then ref="docker.io/$ref"
    fi
    [[ "${ref##*/}" == *:* || "$ref" == *@* ]] || ref="$ref:latest"
    printf '%s\n' "$ref"
}

# podman_setup: write podman's config files (idempotent) and export the variables that make
# podman and buildah use them. The machine's quirks: root may not raise resource limits, so
# containers get explicit ones; crun refuses the hybrid cgroup layout, so runc; no systemd.
podman_setup() {
    mkdir -p "$PODMAN_DIR/storage" "$PODMAN_RUN" "$IMAGES"
    cat >"$PODMAN_DIR/containers.conf.tmp" <<CONF
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "none"
tmp_dir = "$PODMAN_RUN/libpod"

[network]
# builds use the host's network; podman's own CNI files stay in the cache
network_config_dir = "$PODMAN_DIR/cni"
CONF
    cat >"$PODMAN_DIR/storage.conf.tmp" <<CONF
[storage]
driver = "overlay"
graphroot = "$PODMAN_DIR/storage"
runroot = "$PODMAN_RUN/storage"

[storage.options.overlay]
# no private bind mount of the store onto itself: nothing stays mounted after a build
skip_mount_home = "true"
mountopt = "nodev"
CONF
    cat >"$PODMAN_DIR/registries.conf.tmp" <<CONF
# "python:3.11-slim" means what it means to Docker: docker.io/library/python:3.11-slim
unqualified-search-registries = ["docker.io"]
short-name-mode = "permissive"
CONF
    local f
    for f in containers storage registries; do
        if cmp -s "$PODMAN_DIR/$f.conf.tmp" "$PODMAN_DIR/$f.conf"; then rm -f "$PODMAN_DIR/$f.conf.tmp"
        else mv -f "$PODMAN_DIR/$f.conf.tmp" "$PODMAN_DIR/$f.conf"; fi
    done
    export CONTAINERS_CONF="$PODMAN_DIR/containers.conf"
    export CONTAINERS_STORAGE_CONF="$PODMAN_DIR/storage.conf"
    export CONTAINERS_REGISTRIES_CONF="$PODMAN_DIR/registries.conf"
    export BUILDAH_ISOLATION=oci
}
