#!/usr/bin/env bash
# A real one-node Kubernetes cluster on this machine, for the real-node test tier and for a
# person trying Gaia: containerd + runc + kubelet + kube-scheduler beside the control plane
# that tests/components/build.sh builds (etcd, kube-apiserver, kube-controller-manager).
#
#   tests/e2e/cluster.sh up   [NAME]   # last line: KUBECONFIG=<path>
#   tests/e2e/cluster.sh down [NAME]   # stop everything and leave nothing behind
#   tests/e2e/cluster.sh status [NAME]
#
# NAME (default gaia-e2e, or $GAIA_E2E_NAME) lets several clusters run side by side.
# Runs as root. The whole cluster lives in a network namespace made here, `NAME`: the node's
# address is on its eth0, a veth whose other end (in this machine's namespace) carries the
# only route in, 10.X.0.0/16 (X = 200 + the cluster's index). Inside there is no default
# route, so nothing in the cluster can reach any address outside it; from the machine,
# kubectl reaches the API server at 10.X.0.2 and nothing else. Addresses of cluster n:
#   10.X.0.1/30  this machine's end of the veth     10.X.0.2/30  the node (API server :443)
#   10.X.1.0/24  Service ClusterIPs; 10.X.1.1, the `kubernetes` Service, is an address of
#                the node itself, so pods reach the API server with the in-cluster
#                defaults (there is no kube-proxy; other ClusterIPs do not answer)
#   10.X.2.0/24  pods, on the bridge cni0 (no masquerading)
#
# State (certificates, etcd, containerd's images, kubelet, volumes, logs) is on a tmpfs at
# ${GAIA_E2E_STATE:-/var/tmp/gaia-e2e}/NAME (at most $GAIA_E2E_STATE_SIZE, 8g; it holds
# about 1.5 GB); `down` removes it (GAIA_E2E_LOGS=<dir> keeps a copy of the logs). Images come from `tests/e2e/image.sh` (cached in .cache/e2e).
set -euo pipefail
# shellcheck source=tests/e2e/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

ACTION="${1:-}"
NAME="${2:-${GAIA_E2E_NAME:-gaia-e2e}}"
BASE="${GAIA_E2E_STATE:-/var/tmp/gaia-e2e}"
D="$BASE/$NAME"
KUBECTL="${KUBECTL:-kubectl}"
CNI_BIN="${GAIA_CNI_BIN:-/usr/lib/cni}"
PATH_CLEAN=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
# What the kubelet sets at start (unless protectKernelDefaults): restored by the last `down`.
KUBELET_SYSCTLS=(vm.overcommit_memory vm.panic_on_oom kernel.panic kernel.panic_on_oops
    kernel.keys.root_maxkeys kernel.keys.root_maxbytes)
# Paths that containerd 1.6 (shim sockets), libcni (its result cache) and the kubelet (its
# device-plugin socket, log links) use whatever their configuration says.
MACHINE_PATHS=(/run/containerd /var/lib/cni /var/lib/kubelet /var/log/containers /var/log/pods)

usage() { sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
die() { e2e_log "$*"; exit 1; }
[[ "$NAME" =~ ^[a-z0-9]([-a-z0-9]{0,30}[a-z0-9])?$ ]] || die "NAME must be a DNS label of at most 32 characters: $NAME"

# ---------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------
in_ns() { nsenter --net="/run/netns/$NAME" -- "$@"; }

# start NAME ARGV...: a component in the node's network namespace, in a session of its own
# (it outlives this script), with a clean environment; its pid goes to $D/pids/NAME.
start() {
    local name="$1"; shift
    setsid env -i PATH="$PATH_CLEAN" HOME="$D" TMPDIR="$D/tmp" \
        nsenter --net="/run/netns/$NAME" -- "$@" </dev/null >>"$D/logs/$name.log" 2>&1 &
    echo $! >"$D/pids/$name"
}

alive() { [[ -f "$D/pids/$1" ]] && kill -0 "$(cat "$D/pids/$1")" 2>/dev/null; }

# wait_for WHAT SECONDS COMPONENT COMMAND...: until COMMAND succeeds; fails with the log tail.
wait_for() {
    local what="$1" limit="$2" component="$3" t0=$SECONDS; shift 3
    until "$@" >/dev/null 2>&1; do
        if [[ -n "$component" ]] && ! alive "$component"; then
            e2e_log "$component exited before $what; its log:"; tail -n 40 "$D/logs/$component.log" >&2 || true
            return 1
        fi
        if ((SECONDS - t0 > limit)); then
            e2e_log "no $what after ${limit}s"
            [[ -n "$component" ]] && { tail -n 40 "$D/logs/$component.log" >&2 || true; }
            return 1
        fi
        sleep 0.2
    done
    e2e_log "$what after $((SECONDS - t0))s"
}

stop_pid() {  # PID [SECONDS]: TERM, then KILL
    local pid="$1" limit="${2:-15}" n=0
    kill -0 "$pid" 2>/dev/null || return 0
    kill "$pid" 2>/dev/null || true
    while kill -0 "$pid" 2>/dev/null && ((n++ < limit * 10)); do sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
}

stop_component() {
    [[ -f "$D/pids/$1" ]] || return 0
    stop_pid "$(cat "$D/pids/$1")" "${2:-15}"
    rm -f "$D/pids/$1"
}

kc() { "$KUBECTL" --kubeconfig "$D/kubeconfig" "$@"; }

load_env() {  # the index and addresses that `up` chose
    # shellcheck disable=SC1091
    [[ -f "$D/env" ]] && source "$D/env"
}

# ---------------------------------------------------------------------------------------
# up
# ---------------------------------------------------------------------------------------
choose_index() {
    # Under $BASE/.lock: the lowest index whose names and addresses nothing uses yet.
    local n used
    used=" $(cat "$BASE"/*/index 2>/dev/null | tr '\n' ' ') "
    for ((n = 1; n <= 54; n++)); do
        [[ "$used" == *" $n "* ]] && continue
        ip link show "gaiae2e$n" >/dev/null 2>&1 && continue
        ip route show | grep -q "^10\.$((200 + n))\." && continue
        echo "$n"; return 0
    done
    return 1
}

write_pki() {
    local p="$D/pki"
    mkdir -p "$p"
    ossl() { openssl "$@" >/dev/null 2>>"$D/logs/openssl.log"; }
    for k in ca apiserver admin kubelet apiserver-kubelet-client; do
        ossl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$p/$k.key"
    done
    ossl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$p/sa.key"
    ossl pkey -in "$p/sa.key" -pubout -out "$p/sa.pub"
    ossl req -x509 -new -key "$p/ca.key" -days 30 -subj "/CN=gaia-e2e-ca-$NAME" -out "$p/ca.crt"
    sign() {  # NAME SUBJECT EXTENSIONS
        printf '%s\n' "$3" >"$p/$1.ext"
        ossl req -new -key "$p/$1.key" -subj "$2" -out "$p/$1.csr"
        ossl x509 -req -in "$p/$1.csr" -CA "$p/ca.crt" -CAkey "$p/ca.key" -CAcreateserial \
            -days 30 -extfile "$p/$1.ext" -out "$p/$1.crt"
    }
    sign apiserver /CN=kube-apiserver "subjectAltName=IP:$NODE_IP,IP:$API_SERVICE_IP,IP:127.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local
extendedKeyUsage=serverAuth"
    sign admin "/O=system:masters/CN=admin" "extendedKeyUsage=clientAuth"
    sign kubelet "/O=system:nodes/CN=system:node:$NAME" "extendedKeyUsage=clientAuth"
    sign apiserver-kubelet-client "/O=system:masters/CN=kube-apiserver-kubelet-client" "extendedKeyUsage=clientAuth"
}

write_kubeconfig() {  # FILE USER
    local b64ca b64crt b64key
    b64ca="$(base64 -w0 "$D/pki/ca.crt")"; b64crt="$(base64 -w0 "$D/pki/$2.crt")"; b64key="$(base64 -w0 "$D/pki/$2.key")"
    cat >"$1" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: $NAME
  cluster:
    server: https://$NODE_IP:443
    certificate-authority-data: $b64ca
users:
- name: $2
  user:
    client-certificate-data: $b64crt
    client-key-data: $b64key
contexts:
- name: $NAME
  context: {cluster: $NAME, user: $2}
current-context: $NAME
EOF
}

make_network() {
    ip netns add "$NAME"
    ip link add "$VETH" type veth peer name eth0 netns "$NAME"
    ip addr add "$HOST_IP/30" dev "$VETH"
    ip link set "$VETH" up
    ip route add "$SUBNET.0.0/16" via "$NODE_IP" dev "$VETH"
    in_ns ip link set lo up
    in_ns ip addr add "$NODE_IP/30" dev eth0
    in_ns ip link set eth0 up
    # the `kubernetes` Service's ClusterIP is the node's own address: no kube-proxy needed
    in_ns ip addr add "$API_SERVICE_IP/32" dev lo
    in_ns sysctl -qw net.ipv4.ip_forward=1   # pods <-> this machine's end of the veth
}

make_cgroups() {
    # The kubelet's cgroup root, in every hierarchy (cgroup v1 here: one per controller).
    local h
    for h in /sys/fs/cgroup/*/; do
        mkdir -p "$h$CGROUP_ROOT"
        if [[ -f "${h}cpuset.cpus" ]]; then
            cat "${h}cpuset.cpus" >"$h$CGROUP_ROOT/cpuset.cpus"
            cat "${h}cpuset.mems" >"$h$CGROUP_ROOT/cpuset.mems"
        fi
    done
}

save_machine() {
    # The first cluster up records the machine's kernel settings and which of the paths
    # the components insist on (whatever their configuration) exist; the last one down
    # restores the settings and removes those paths again if they are empty.
    [[ -f "$BASE/sysctl.orig" ]] && return 0
    local k
    for k in "${MACHINE_PATHS[@]}"; do [[ -e "$k" ]] || echo "$k"; done >"$BASE/paths.new"
    for k in "${KUBELET_SYSCTLS[@]}"; do echo "$k=$(sysctl -n "$k")"; done >"$BASE/sysctl.orig.tmp"
    mv "$BASE/sysctl.orig.tmp" "$BASE/sysctl.orig"
}

restore_machine() {  # under the lock, once no cluster is left
    local line
    if [[ -f "$BASE/sysctl.orig" ]]; then
        while read -r line; do sysctl -qw "$line" || true; done <"$BASE/sysctl.orig"
    fi
    rm -f /var/lib/kubelet/device-plugins/kubelet.sock
    if [[ -f "$BASE/paths.new" ]]; then
        # deepest first; rmdir never removes what something else put there since
        sort -r "$BASE/paths.new" | while read -r line; do
            find "$line" -depth -type d -empty -delete 2>/dev/null || true
        done
    fi
    rm -f "$BASE/sysctl.orig" "$BASE/paths.new"
}

write_configs() {
    mkdir -p "$D/cni/net.d" "$D/containerd" "$D/kubelet" "$D/volumes"
    : >"$D/resolv.conf"   # pods get no name server: there is no cluster DNS
    cat >"$D/cni/net.d/10-gaia.conflist" <<EOF
{
  "cniVersion": "1.0.0",
  "name": "$NAME",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "cni0",
      "isGateway": true,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "ranges": [[{"subnet": "$POD_CIDR"}]],
        "routes": [{"dst": "0.0.0.0/0"}],
        "dataDir": "$D/cni/ipam"
      }
    }
  ]
}
EOF
    cat >"$D/containerd/config.toml" <<EOF
version = 2
root = "$D/containerd/root"
state = "$D/containerd/state"
temp = "$D/tmp"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.zfs",
  "io.containerd.internal.v1.tracing"]

[grpc]
  address = "$D/containerd/containerd.sock"

[plugins."io.containerd.internal.v1.opt"]
  path = "$D/containerd/opt"

# the tasks service needs the legacy runtime loaded (1.6); nothing uses it
[plugins."io.containerd.runtime.v1.linux"]
  runtime_root = "$D/runc-v1"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$PAUSE_IMAGE"
  # root may not lower the oom_score_adj that containers ask for on this machine
  restrict_oom_score_adj = true
  disable_hugetlb_controller = true
  tolerate_missing_hugetlb_controller = true
  netns_mounts_under_state_dir = true
  enable_unprivileged_ports = true
  stream_server_address = "127.0.0.1"

  [plugins."io.containerd.grpc.v1.cri".containerd]
    default_runtime_name = "runc"
    snapshotter = "overlayfs"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        Root = "$D/runc"
        SystemdCgroup = false

  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "$CNI_BIN"
    conf_dir = "$D/cni/net.d"
EOF
    cat >"$D/kubelet/config.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: $NODE_IP
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $D/pki/ca.crt}
authorization: {mode: Webhook}
containerRuntimeEndpoint: unix://$D/containerd/containerd.sock
cgroupDriver: cgroupfs
cgroupRoot: /$CGROUP_ROOT
failSwapOn: false
# the images were imported by hand: never collect them
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
# a busy shared disk must not evict the test's pods
evictionHard: {memory.available: 100Mi, nodefs.available: 1%, imagefs.available: 1%, nodefs.inodesFree: 1%}
resolvConf: $D/resolv.conf
clusterDomain: cluster.local
podLogsDir: $D/pod-logs
makeIPTablesUtilChains: false
serializeImagePulls: false
registerNode: true
nodeStatusUpdateFrequency: 4s
syncFrequency: 10s
fileCheckFrequency: 10s
EOF
}

cluster_up() {
    [[ "$(id -u)" == 0 ]] || die "cluster.sh runs as root (containerd, the kubelet, network namespaces)"
    local tool
    for tool in containerd containerd-shim-runc-v2 runc ctr podman nsenter ip openssl curl "$KUBECTL"; do
        command -v "$tool" >/dev/null || die "$tool is missing: run \`make node-tools\` (as root)"
    done
    [[ -x "$CNI_BIN/bridge" && -x "$CNI_BIN/host-local" && -x "$CNI_BIN/loopback" ]] ||
        die "no CNI plugins in $CNI_BIN: run \`make node-tools\` (containernetworking-plugins)"

    mkdir -p "$BASE"
    reap_stale
    if [[ -d "$D" ]]; then
        load_env
        if alive kube-apiserver && alive kubelet && kc get --raw /readyz >/dev/null 2>&1; then
            e2e_log "$NAME is up already"
            echo "KUBECONFIG=$D/kubeconfig"
            return 0
        fi
        e2e_log "$NAME is half up: taking it down first"
        cluster_down
    fi

    "$REPO/tests/components/build.sh"
    # shellcheck disable=SC1091
    source "$CACHE/components/components.env"
    [[ -x "${KUBELET:-}" && -x "${KUBE_SCHEDULER:-}" ]] || die "build.sh built no kubelet/kube-scheduler"
    "$E2E_HERE/image.sh"

    local t0=$SECONDS n
    mkdir -p "$BASE"   # (again: the last cluster down, a stale one reaped above, removes it)
    exec 7>"$BASE/.lock"
    flock 7
    n="$(choose_index)" || die "no free cluster index (54 clusters at most)"
    # (the lock is released first: down takes it again through a new descriptor)
    trap 'rc=$?; flock -u 7 2>/dev/null; if ((rc != 0)); then e2e_log "up failed (exit $rc): taking $NAME down"; cluster_down || true; fi' EXIT
    # All state in memory: importing the images and removing them again is disk-bound
    # work that takes a minute on a busy disk, and the cluster is thrown away anyway.
    mkdir -p "$D"
    mount -t tmpfs -o "size=${GAIA_E2E_STATE_SIZE:-8g},mode=0755" "gaia-e2e-$NAME" "$D"
    mkdir -p "$D"/{logs,pids,tmp}
    SUBNET="10.$((200 + n))"
    cat >"$D/env" <<EOF
INDEX=$n
SUBNET=$SUBNET
HOST_IP=$SUBNET.0.1
NODE_IP=$SUBNET.0.2
API_SERVICE_IP=$SUBNET.1.1
SERVICE_CIDR=$SUBNET.1.0/24
POD_CIDR=$SUBNET.2.0/24
VETH=gaiae2e$n
CGROUP_ROOT=$NAME
EOF
    echo "$n" >"$D/index"
    [[ -n "${GAIA_E2E_OWNER:-}" ]] && echo "$GAIA_E2E_OWNER" >"$D/owner"
    load_env
    save_machine
    flock -u 7

    make_network
    write_pki
    write_kubeconfig "$D/kubeconfig" admin
    write_kubeconfig "$D/kubelet.kubeconfig" kubelet
    write_configs
    local pki="$D/pki"

    start etcd "$ETCD" --name="$NAME" --data-dir="$D/etcd" \
        --listen-client-urls=http://127.0.0.1:2379 --advertise-client-urls=http://127.0.0.1:2379 \
        --listen-peer-urls=http://127.0.0.1:2380 --initial-advertise-peer-urls=http://127.0.0.1:2380 \
        --initial-cluster="$NAME=http://127.0.0.1:2380" --listen-metrics-urls=http://127.0.0.1:2381 \
        --heartbeat-interval=10 --election-timeout=100 --unsafe-no-fsync --log-level=warn
    wait_for "etcd healthy" 60 etcd in_ns curl -fsS http://127.0.0.1:2379/health

    start kube-apiserver "$KUBE_APISERVER" --etcd-servers=http://127.0.0.1:2379 \
        --bind-address=0.0.0.0 --advertise-address="$NODE_IP" --secure-port=443 \
        --tls-cert-file="$pki/apiserver.crt" --tls-private-key-file="$pki/apiserver.key" \
        --client-ca-file="$pki/ca.crt" --authorization-mode=Node,RBAC \
        --service-cluster-ip-range="$SERVICE_CIDR" \
        --service-account-issuer=https://kubernetes.default.svc.cluster.local \
        --service-account-signing-key-file="$pki/sa.key" --service-account-key-file="$pki/sa.pub" \
        --kubelet-client-certificate="$pki/apiserver-kubelet-client.crt" \
        --kubelet-client-key="$pki/apiserver-kubelet-client.key" \
        --kubelet-preferred-address-types=InternalIP \
        --allow-privileged=true --profiling=false --v=1
    wait_for "kube-apiserver ready" 120 kube-apiserver \
        curl -fsS --cacert "$pki/ca.crt" --cert "$pki/admin.crt" --key "$pki/admin.key" "https://$NODE_IP:443/readyz"

    start kube-controller-manager "$KUBE_CONTROLLER_MANAGER" --kubeconfig="$D/kubeconfig" \
        --authentication-kubeconfig="$D/kubeconfig" --authorization-kubeconfig="$D/kubeconfig" \
        --authentication-skip-lookup=true --leader-elect=false --use-service-account-credentials=false \
        --controllers=job,deployment,replicaset,serviceaccount,garbagecollector,ttl-after-finished,namespace,nodelifecycle,podgc,persistentvolume-binder,pvc-protection,pv-protection,root-ca-cert-publisher \
        --root-ca-file="$pki/ca.crt" --service-cluster-ip-range="$SERVICE_CIDR" \
        --bind-address=127.0.0.1 --secure-port=10257 --cert-dir="$D/kcm-certs" --profiling=false --v=1
    start kube-scheduler "$KUBE_SCHEDULER" --kubeconfig="$D/kubeconfig" \
        --authentication-kubeconfig="$D/kubeconfig" --authorization-kubeconfig="$D/kubeconfig" \
        --authentication-skip-lookup=true --leader-elect=false \
        --bind-address=127.0.0.1 --secure-port=10259 --cert-dir="$D/scheduler-certs" --profiling=false --v=1

    start containerd containerd --config "$D/containerd/config.toml"
    local ctr=(ctr --address "$D/containerd/containerd.sock" -n k8s.io)
    wait_for "containerd serving" 60 containerd "${ctr[@]}" version
    local image
    for image in pause gaia; do
        TMPDIR="$D/tmp" "${ctr[@]}" images import "$IMAGES/$image.tar" >>"$D/logs/import.log" 2>&1 ||
            die "importing $IMAGES/$image.tar into containerd failed: $(tail -n 3 "$D/logs/import.log")"
    done
    e2e_log "images imported: $("${ctr[@]}" images ls -q | grep -v '^sha256:' | tr '\n' ' ')"

    wait_for "kube-controller-manager healthy" 60 kube-controller-manager in_ns curl -fsSk https://127.0.0.1:10257/healthz
    wait_for "kube-scheduler healthy" 60 kube-scheduler in_ns curl -fsSk https://127.0.0.1:10259/healthz

    make_cgroups
    start kubelet "$KUBELET" --config="$D/kubelet/config.yaml" --kubeconfig="$D/kubelet.kubeconfig" \
        --root-dir="$D/kubelet" --cert-dir="$D/kubelet/pki" --hostname-override="$NAME" \
        --node-ip="$NODE_IP" --v=1
    wait_for "node $NAME registered" 120 kubelet kc get node "$NAME"
    wait_for "node $NAME Ready" 120 kubelet kc wait --for=condition=Ready "node/$NAME" --timeout=2s

    storage
    trap - EXIT
    e2e_log "$NAME up in $((SECONDS - t0))s: node $NODE_IP, state in $D"
    echo "KUBECONFIG=$D/kubeconfig"
}

storage() {
    # A default StorageClass without a provisioner, and local volumes on the node for it:
    # the chart's claim (ReadWriteMany, the cluster's default class) binds to one of them.
    local i manifest
    manifest="apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata:
  name: local
  annotations: {storageclass.kubernetes.io/is-default-class: \"true\"}
provisioner: kubernetes.io/no-provisioner
volumeBindingMode: WaitForFirstConsumer
reclaimPolicy: Retain
"
    for i in 1 2 3 4 5 6; do
        mkdir -p "$D/volumes/pv$i"
        chmod 0777 "$D/volumes/pv$i"   # as most shared (NFS-like) volumes: any uid may write
        manifest+="---
apiVersion: v1
kind: PersistentVolume
metadata: {name: local-pv$i}
spec:
  capacity: {storage: 100Gi}
  accessModes: [ReadWriteMany, ReadWriteOnce]
  persistentVolumeReclaimPolicy: Retain
  storageClassName: local
  local: {path: $D/volumes/pv$i}
  nodeAffinity:
    required:
      nodeSelectorTerms:
      - matchExpressions:
        - {key: kubernetes.io/hostname, operator: In, values: [$NAME]}
"
    done
    kc apply -f - <<<"$manifest" >/dev/null
}

# ---------------------------------------------------------------------------------------
# down
# ---------------------------------------------------------------------------------------
cluster_pids() {
    # Every process of the cluster: the components, the shims and host-network containers
    # (all in its network namespace), and the pods' processes (in its cgroups).
    local f
    [[ -e "/run/netns/$NAME" ]] && ip netns pids "$NAME" 2>/dev/null
    for f in "$D"/pids/*; do [[ -f "$f" ]] && cat "$f"; done
    if [[ -n "${CGROUP_ROOT:-}" ]] && compgen -G "/sys/fs/cgroup/*/$CGROUP_ROOT" >/dev/null; then
        find /sys/fs/cgroup/*/"$CGROUP_ROOT" -name cgroup.procs -exec cat {} + 2>/dev/null
    fi
    return 0
}

cluster_down() (
    # A subshell: best effort, to the end (set +e: a step that fails must not keep the
    # next ones from running; what survives is reported by `leftovers`, which sets the
    # exit status), without turning errexit off for an `up` that called it.
    set +e
    local t0=$SECONDS
    [[ -d "$D" ]] || { e2e_log "$NAME is not up"; return 0; }
    load_env

    # the pod sandboxes containerd knows, for their CNI cache entries below
    local SANDBOXES=()
    [[ -d "$D/containerd/state/io.containerd.grpc.v1.cri/sandboxes" ]] &&
        mapfile -t SANDBOXES < <(ls "$D/containerd/state/io.containerd.grpc.v1.cri/sandboxes")

    # 1. Let the kubelet take every pod down (CNI teardown, volume unmounts), with nothing
    #    recreating them: controllers and scheduler stop first.
    stop_component kube-controller-manager 10
    stop_component kube-scheduler 10
    if alive kubelet && alive kube-apiserver; then
        kc delete pods --all --all-namespaces --grace-period=1 --wait=false >/dev/null 2>&1 || true
        local n=0
        while ((n++ < 300)); do
            local running
            running="$(ctr --address "$D/containerd/containerd.sock" -n k8s.io tasks ls -q 2>/dev/null | wc -l)"
            [[ "$running" == 0 ]] && ! findmnt -rn -o TARGET | grep -q "^$D/kubelet/pods/" && break
            sleep 0.2
        done
        e2e_log "pods stopped after $((SECONDS - t0))s"
    fi
    stop_component kubelet 15
    stop_component containerd 15
    stop_component kube-apiserver 20
    stop_component etcd 15
    e2e_log "components stopped after $((SECONDS - t0))s"

    # 2. Whatever is left (a failed `up`, a kubelet that did not finish): kill it.
    local pids pid round
    for round in TERM KILL; do
        pids="$(cluster_pids | sort -u | tr '\n' ' ')"
        [[ -z "${pids// /}" ]] && break
        e2e_log "stopping leftover processes ($round): $pids"
        for pid in $pids; do kill "-$round" "$pid" 2>/dev/null || true; done
        sleep 2
    done

    # 3. Mounts under the state directory (rootfs overlays, pod volumes, network namespaces
    #    of pods), deepest first.
    local m
    for round in 1 2 3; do
        mapfile -t mounts < <(findmnt -rn -o TARGET | grep "^$D/" | sort -r)
        ((${#mounts[@]} == 0)) && break
        for m in "${mounts[@]}"; do umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true; done
    done

    # 4. cgroups (the kubelet's and the pods', deepest first)
    if [[ -n "${CGROUP_ROOT:-}" ]]; then
        for m in /sys/fs/cgroup/*/"$CGROUP_ROOT"; do
            [[ -d "$m" ]] && find "$m" -depth -type d -exec rmdir {} + 2>/dev/null
        done
    fi

    # 5. network: the namespace (its end of the veth goes with it, and so does ours)
    [[ -e "/run/netns/$NAME" ]] && { ip netns del "$NAME" || true; }
    if [[ -n "${VETH:-}" ]]; then
        # the kernel removes the pair with the namespace, asynchronously
        local n=0
        while ip link show "$VETH" >/dev/null 2>&1 && ((n++ < 50)); do sleep 0.1; done
        ip link del "$VETH" 2>/dev/null || true
    fi

    # 6. logs, state, and the machine's kernel settings once no other cluster runs
    if [[ -n "${GAIA_E2E_LOGS:-}" ]]; then
        mkdir -p "$GAIA_E2E_LOGS" && cp -r "$D/logs/." "$GAIA_E2E_LOGS/" 2>/dev/null
        [[ -d "$D/pod-logs" ]] && cp -rL "$D/pod-logs" "$GAIA_E2E_LOGS/pods" 2>/dev/null
    fi
    # links and cache entries of this cluster's containers outside the state directory
    find /var/log/containers -maxdepth 1 -type l -lname "$D/*" -delete 2>/dev/null || true
    rm -f /var/lib/cni/results/"$NAME"-* 2>/dev/null || true
    local sandbox
    for sandbox in "${SANDBOXES[@]}"; do rm -f /var/lib/cni/results/cni-loopback-"$sandbox"-lo; done

    exec 7>"$BASE/.lock"
    flock 7
    if mountpoint -q "$D"; then umount "$D" || umount -l "$D"; fi
    rm -rf "$D"
    if ! compgen -G "$BASE/*/index" >/dev/null; then
        restore_machine
        rm -f "$BASE/.lock"
        rmdir "$BASE" 2>/dev/null || true
    fi
    flock -u 7
    e2e_log "$NAME down in $((SECONDS - t0))s"
    leftovers
)

leftovers() {
    # Say so if anything of this cluster survived (a bug to fix, not to hide).
    local left=()
    [[ -e "/run/netns/$NAME" ]] && left+=("netns $NAME")
    [[ -n "${VETH:-}" ]] && ip link show "$VETH" >/dev/null 2>&1 && left+=("link $VETH")
    [[ -d "$D" ]] && left+=("dir $D")
    findmnt -rn -o TARGET | grep -q "^$D/" && left+=("mounts under $D")
    [[ -n "${CGROUP_ROOT:-}" ]] && compgen -G "/sys/fs/cgroup/*/$CGROUP_ROOT" >/dev/null && left+=("cgroups $CGROUP_ROOT")
    if ((${#left[@]})); then e2e_log "LEFT BEHIND: ${left[*]}"; return 1; fi
}

reap_stale() {
    # Clusters that a test session started (GAIA_E2E_OWNER=its pid) and that outlived it.
    local dir owner state
    for dir in "$BASE"/*/; do
        [[ -f "$dir/owner" ]] || continue
        owner="$(cat "$dir/owner")"
        # alive, and not a zombie its parent has yet to reap
        state="$(ps -o stat= -p "$owner" 2>/dev/null || true)"
        [[ -n "$state" && "$state" != Z* ]] && continue
        e2e_log "taking down $(basename "$dir"), left by a test session that is gone (pid $owner)"
        "$0" down "$(basename "$dir")" || true
    done
}

cluster_status() {
    if [[ -d "$D" ]] && load_env && alive kube-apiserver; then
        kc get nodes -o wide
        echo "KUBECONFIG=$D/kubeconfig"
    else
        echo "$NAME is not up"
        return 1
    fi
}

case "$ACTION" in
    up) cluster_up ;;
    down) cluster_down ;;
    status) cluster_status ;;
    *) usage ;;
esac
