#!/usr/bin/env bash
# `make image`: build the repository's Dockerfile as gaia:dev with podman (no Docker engine),
# plus the pause image the real-node tier's containerd needs, and export both as
# docker-archive tarballs for `ctr images import` (tests/e2e/cluster.sh does that).
#
#   tests/e2e/image.sh
#
# The Dockerfile is built as it is, as a Docker user would. Its base image (FROM) is pulled
# when a registry answers; when none does (this kind of machine reaches no image registry),
# a stand-in is made from Debian's own packages: an mmdebstrap minbase rootfs of bookworm
# (whose python3 is 3.11) with python3, pip, venv and ca-certificates, tagged with the FROM
# name. The image store is .cache/e2e/podman (git-ignored): a repeat build reuses the base
# and every unchanged layer.
set -euo pipefail
# shellcheck source=tests/e2e/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

for tool in podman buildah mmdebstrap gcc; do
    command -v "$tool" >/dev/null || { e2e_log "$tool is missing: run \`make node-tools\` (as root)"; exit 1; }
done
[[ "$(id -u)" == 0 ]] || { e2e_log "image.sh runs podman as root (the real-node tier needs root anyway)"; exit 1; }

podman_setup
exec 8>"$E2E_CACHE/.image.lock"
flock 8
T0=$SECONDS

# --- the base image ---------------------------------------------------------------------
BASE="$(sed -n 's/^[Ff][Rr][Oo][Mm][[:space:]]\{1,\}\([^[:space:]]*\).*/\1/p' "$REPO/Dockerfile" | head -n1)"
BASE_FULL="$(full_name "$BASE")"
CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt

standin_base() {
    # Debian bookworm's python3 is 3.11, the FROM line's minor version.
    local tar="$E2E_CACHE/base-rootfs.tar" mirror="${GAIA_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
    e2e_log "making a stand-in for $BASE_FULL with mmdebstrap (Debian bookworm minbase + python3)"
    rm -f "$tar"
    nice -n 10 mmdebstrap --quiet --variant=minbase --mode=root \
        --include=python3,python3-pip,python3-venv,python-is-python3,ca-certificates \
        --aptopt='Acquire::Check-Valid-Until "false"' \
        --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/doc/*' \
        --dpkgopt='path-exclude=/usr/share/locale/*' --dpkgopt='path-include=/usr/share/doc/*/copyright' \
        --customize-hook='rm -f "$1"/usr/lib/python3*/EXTERNALLY-MANAGED' \
        bookworm "$tar" \
        "deb $mirror bookworm main" "deb $mirror bookworm-updates main" \
        "deb ${mirror%/debian}/debian-security bookworm-security main"
    podman import --quiet \
        --change 'CMD ["python3"]' --change 'ENV LANG=C.UTF-8' \
        --change 'LABEL dev.gaia.stand-in="Debian bookworm minbase + python3, made by tests/e2e/image.sh"' \
        "$tar" "$BASE_FULL" >/dev/null
    rm -f "$tar"
}

if podman image exists "$BASE_FULL"; then
    e2e_log "base $BASE_FULL: present"
elif timeout 120 podman pull --quiet "$BASE_FULL" >/dev/null 2>"$E2E_CACHE/pull.log"; then
    e2e_log "base $BASE_FULL: pulled"
else
    e2e_log "base $BASE_FULL: cannot be pulled ($(tail -n1 "$E2E_CACHE/pull.log"))"
    standin_base
fi

# --- gaia:dev ---------------------------------------------------------------------------
IMAGE_FULL="$(full_name "$GAIA_IMAGE")"
build_args=(--pull=never --network=host --layers -f "$REPO/Dockerfile" -t "$IMAGE_FULL")
# pip and apt inside the build trust what this machine trusts (its own CA bundle).
[[ -f "$CA_BUNDLE" ]] && build_args+=(-v "$CA_BUNDLE:$CA_BUNDLE:ro")
e2e_log "building $IMAGE_FULL from $REPO/Dockerfile"
nice -n 10 podman build --quiet "${build_args[@]}" "$REPO" >/dev/null

# --- the pause image --------------------------------------------------------------------
if ! podman image exists "$PAUSE_IMAGE"; then
    e2e_log "building $PAUSE_IMAGE from tests/e2e/pause.c"
    work="$(mktemp -d)"
    gcc -static -Os -s -o "$work/pause" "$E2E_HERE/pause.c"
    ctr="$(buildah from scratch)"
    buildah copy --quiet "$ctr" "$work/pause" /pause >/dev/null
    buildah config --entrypoint '["/pause"]' --user 65535:65535 "$ctr"
    buildah commit --quiet --rm "$ctr" "$PAUSE_IMAGE" >/dev/null
    rm -rf "$work"
fi

# --- export for containerd (only what changed) -------------------------------------------
export_image() {  # NAME FILE
    local id
    id="$(podman image inspect --format '{{.Id}}' "$1")"
    if [[ -f "$IMAGES/$2.tar" && "$(cat "$IMAGES/$2.id" 2>/dev/null)" == "$id" ]]; then return 0; fi
    e2e_log "exporting $1 to $IMAGES/$2.tar"
    rm -f "$IMAGES/$2.tar.partial"
    podman save --quiet --format docker-archive -o "$IMAGES/$2.tar.partial" "$1"
    mv -f "$IMAGES/$2.tar.partial" "$IMAGES/$2.tar"
    printf '%s\n' "$id" >"$IMAGES/$2.id"
}
export_image "$IMAGE_FULL" gaia
export_image "$PAUSE_IMAGE" pause
# Layers no tag refers to any more (earlier builds of gaia:dev) would only grow the cache.
podman image prune --force >/dev/null
# podman's run root holds only locks and transient state, no container is left: keep
# nothing outside the cache (the next run makes it again)
findmnt -rn -o TARGET | grep -q "^$PODMAN_RUN/" || rm -rf "$PODMAN_RUN"
e2e_log "image $IMAGE_FULL ready in $((SECONDS - T0))s ($IMAGES)"
