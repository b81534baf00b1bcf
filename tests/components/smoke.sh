#!/usr/bin/env bash
# Smoke test of the components built by build.sh: etcd + kube-apiserver + the real Job
# controller (kube-controller-manager), no kubelet. Everything runs in a temp dir on
# 127.0.0.1 and is stopped on exit. The flags here are the reference for the Python fixture.
#
#   tests/components/smoke.sh             # builds missing binaries first
#   KEEP=1 tests/components/smoke.sh      # keep the temp dir (logs, certs, kubeconfig)
# Ports: GAIA_ETCD_PORT (23790), GAIA_ETCD_PEER_PORT (23800), GAIA_APISERVER_PORT (26443),
# GAIA_KCM_PORT (26257). Not ETCD_*: etcd reads every ETCD_* variable as a flag.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
"$HERE/build.sh"
CACHE="${GAIA_CACHE:-$(cd "$HERE/../.." && pwd)/.cache}"
# shellcheck disable=SC1091
source "$CACHE/components/components.env"   # ETCD, KUBE_APISERVER, KUBE_CONTROLLER_MANAGER, HELM

ETCD_PORT="${GAIA_ETCD_PORT:-23790}"
ETCD_PEER_PORT="${GAIA_ETCD_PEER_PORT:-23800}"
APISERVER_PORT="${GAIA_APISERVER_PORT:-26443}"
KCM_PORT="${GAIA_KCM_PORT:-26257}"
KUBECTL="${KUBECTL:-kubectl}"

log() { printf '[smoke %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
now_ms() { date +%s%3N; }

D="$(mktemp -d "${TMPDIR:-/tmp}/gaia-smoke.XXXXXX")"
PIDS=()
cleanup() {
    local rc=$? i
    # Stop in reverse start order, each one fully before the next: an apiserver whose etcd is
    # already gone spends ~20 s in shutdown retrying its etcd writes.
    for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do
        local t n=0
        t=$(now_ms)
        kill "${PIDS[i]}" 2>/dev/null || true
        # SIGTERM, then SIGKILL after 15 s.
        while kill -0 "${PIDS[i]}" 2>/dev/null && ((n++ < 150)); do sleep 0.1; done
        kill -9 "${PIDS[i]}" 2>/dev/null || true
        wait "${PIDS[i]}" 2>/dev/null || true
        log "stopped pid ${PIDS[i]} in $(($(now_ms) - t)) ms"
    done
    if [[ $rc -ne 0 ]]; then
        log "FAILED (rc=$rc); last log lines:"
        for f in "$D"/*.log; do [[ -f "$f" ]] && { echo "--- $f"; tail -n 15 "$f"; }; done >&2
    fi
    if [[ -n "${KEEP:-}" ]]; then log "kept $D"; else rm -rf "$D"; fi
    exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# wait_for SECONDS DESCRIPTION COMMAND...: poll COMMAND every 0.1s until it succeeds;
# fail at once if one of the started processes has exited.
wait_for() {
    local deadline=$((SECONDS + $1)) what="$2" p; shift 2
    until "$@" >/dev/null 2>&1; do
        for p in "${PIDS[@]}"; do
            kill -0 "$p" 2>/dev/null || { log "process $p exited while waiting for $what"; return 1; }
        done
        if ((SECONDS >= deadline)); then log "timed out waiting for $what"; return 1; fi
        sleep 0.1
    done
}

# --- PKI: a CA, the apiserver serving cert, an admin client cert, a service-account key pair
log "generating certificates in $D"
cd "$D"
ossl() { openssl "$@" 2>/dev/null; }
ossl req -x509 -newkey rsa:2048 -nodes -days 1 -subj "/CN=gaia-test-ca" -keyout ca.key -out ca.crt
ossl req -newkey rsa:2048 -nodes -subj "/CN=kube-apiserver" -keyout apiserver.key -out apiserver.csr
printf 'subjectAltName=IP:127.0.0.1,IP:10.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc\nextendedKeyUsage=serverAuth\n' >apiserver.ext
ossl x509 -req -in apiserver.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 1 -extfile apiserver.ext -out apiserver.crt
ossl req -newkey rsa:2048 -nodes -subj "/O=system:masters/CN=admin" -keyout admin.key -out admin.csr
printf 'extendedKeyUsage=clientAuth\n' >admin.ext
ossl x509 -req -in admin.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 1 -extfile admin.ext -out admin.crt
ossl genrsa -out sa.key 2048
ossl rsa -in sa.key -pubout -out sa.pub

b64() { base64 -w0 <"$1"; }
cat >kubeconfig <<EOF
apiVersion: v1
kind: Config
clusters:
- name: gaia-test
  cluster:
    server: https://127.0.0.1:$APISERVER_PORT
    certificate-authority-data: $(b64 ca.crt)
users:
- name: admin
  user:
    client-certificate-data: $(b64 admin.crt)
    client-key-data: $(b64 admin.key)
contexts:
- name: gaia-test
  context: {cluster: gaia-test, user: admin}
current-context: gaia-test
EOF
K=("$KUBECTL" --kubeconfig "$D/kubeconfig")

# --- etcd
log "starting etcd $ETCD_VERSION on 127.0.0.1:$ETCD_PORT"
T0=$(now_ms)
"$ETCD" \
    --name=gaia-test \
    --data-dir="$D/etcd-data" \
    --listen-client-urls="http://127.0.0.1:$ETCD_PORT" \
    --advertise-client-urls="http://127.0.0.1:$ETCD_PORT" \
    --listen-peer-urls="http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-advertise-peer-urls="http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-cluster="gaia-test=http://127.0.0.1:$ETCD_PEER_PORT" \
    --unsafe-no-fsync \
    --log-level=warn \
    >etcd.log 2>&1 &
PIDS+=($!)
wait_for 30 "etcd /health" curl -sf "http://127.0.0.1:$ETCD_PORT/health"
log "etcd ready in $(($(now_ms) - T0)) ms"

# --- kube-apiserver
log "starting kube-apiserver $KUBE_VERSION on 127.0.0.1:$APISERVER_PORT"
T0=$(now_ms)
"$KUBE_APISERVER" \
    --etcd-servers="http://127.0.0.1:$ETCD_PORT" \
    --bind-address=127.0.0.1 \
    --advertise-address=127.0.0.1 \
    --secure-port="$APISERVER_PORT" \
    --tls-cert-file="$D/apiserver.crt" \
    --tls-private-key-file="$D/apiserver.key" \
    --client-ca-file="$D/ca.crt" \
    --authorization-mode=RBAC \
    --service-cluster-ip-range=10.0.0.0/24 \
    --service-account-issuer=https://kubernetes.default.svc.cluster.local \
    --service-account-signing-key-file="$D/sa.key" \
    --service-account-key-file="$D/sa.pub" \
    --allow-privileged=true \
    --endpoint-reconciler-type=none \
    --v=1 \
    >apiserver.log 2>&1 &
PIDS+=($!)
wait_for 60 "kube-apiserver /readyz" curl -sf --cacert ca.crt --cert admin.crt --key admin.key \
    "https://127.0.0.1:$APISERVER_PORT/readyz"
APISERVER_MS=$(($(now_ms) - T0))
log "kube-apiserver ready in $APISERVER_MS ms"

"${K[@]}" version
"${K[@]}" get ns
wait_for 30 "namespace default" "${K[@]}" get ns default

# --- a Job, before any controller runs: nothing must happen to it yet
cat >job.yaml <<'EOF'
apiVersion: batch/v1
kind: Job
metadata:
  name: smoke
  namespace: default
spec:
  backoffLimit: 0
  template:
    spec:
      restartPolicy: Never
      containers:
      - name: main
        image: busybox:1.36
        command: ["sh", "-c", "echo hello"]
EOF
"${K[@]}" apply -f job.yaml
sleep 1
[[ -z "$("${K[@]}" get pods -n default -l job-name=smoke -o name)" ]] || { log "pod appeared without a controller?"; exit 1; }

# --- kube-controller-manager with the Job controller (+ service accounts, garbage collection)
log "starting kube-controller-manager $KUBE_VERSION"
T0=$(now_ms)
"$KUBE_CONTROLLER_MANAGER" \
    --kubeconfig="$D/kubeconfig" \
    --authentication-kubeconfig="$D/kubeconfig" \
    --authorization-kubeconfig="$D/kubeconfig" \
    --authentication-skip-lookup=true \
    --controllers=job,serviceaccount,garbagecollector \
    --use-service-account-credentials=false \
    --leader-elect=false \
    --bind-address=127.0.0.1 \
    --secure-port="$KCM_PORT" \
    --cert-dir="$D/kcm-certs" \
    --v=1 \
    >controller-manager.log 2>&1 &
PIDS+=($!)
wait_for 60 "kube-controller-manager /healthz" curl -skf "https://127.0.0.1:$KCM_PORT/healthz"
log "kube-controller-manager healthy in $(($(now_ms) - T0)) ms"

has_pod() { [[ -n "$("${K[@]}" get pods -n default -l job-name=smoke -o name)" ]]; }
wait_for 60 "the Job controller to create a Pod" has_pod
log "Job controller created a Pod $(($(now_ms) - T0)) ms after controller-manager start"
"${K[@]}" get pods -n default -l job-name=smoke \
    -o custom-columns=NAME:.metadata.name,PHASE:.status.phase,SA:.spec.serviceAccountName,OWNER:.metadata.ownerReferences[0].kind,FINALIZERS:.metadata.finalizers
POD="$("${K[@]}" get pods -n default -l job-name=smoke -o jsonpath='{.items[0].metadata.name}')"

# --- play the kubelet: report the pod as finished, the Job controller must complete the Job
log "marking $POD Succeeded (as a kubelet would)"
NOW="$(date -u +%Y-%m-%dT%H:%M:%SZ)"
"${K[@]}" patch pod -n default "$POD" --subresource=status --type=merge -p "{\"status\":{
  \"phase\":\"Succeeded\",
  \"conditions\":[{\"type\":\"Ready\",\"status\":\"False\",\"reason\":\"PodCompleted\",\"lastTransitionTime\":\"$NOW\"}],
  \"containerStatuses\":[{\"name\":\"main\",\"image\":\"busybox:1.36\",\"imageID\":\"\",\"ready\":false,\"restartCount\":0,
    \"state\":{\"terminated\":{\"exitCode\":0,\"reason\":\"Completed\",\"startedAt\":\"$NOW\",\"finishedAt\":\"$NOW\"}}}]}}"
job_complete() { [[ "$("${K[@]}" get job -n default smoke -o jsonpath='{.status.conditions[?(@.type=="Complete")].status}')" == True ]]; }
wait_for 30 "Job condition Complete" job_complete
"${K[@]}" get job -n default smoke -o jsonpath='{.status.succeeded} succeeded; conditions: {range .status.conditions[*]}{.type}={.status} {end}{"\n"}'

# --- garbage collector: deleting the Job removes its Pod
"${K[@]}" delete job -n default smoke --cascade=background --wait=true
no_pod() { ! has_pod; }
wait_for 30 "garbage collection of the Job's Pod" no_pod
log "Job deleted, its Pod was garbage-collected"

# --- helm against the same API server: render a generated chart and dry-run it server-side
export HELM_CACHE_HOME="$D/helm/cache" HELM_CONFIG_HOME="$D/helm/config" HELM_DATA_HOME="$D/helm/data"
"$HELM" create "$D/demo" >/dev/null
"$HELM" lint "$D/demo" >/dev/null
"$HELM" --kubeconfig "$D/kubeconfig" install demo "$D/demo" --namespace default --dry-run=server >helm-dry-run.yaml
log "helm $HELM_VERSION: lint + install --dry-run=server OK ($(grep -c '^kind:' helm-dry-run.yaml) manifests)"

log "OK: etcd $ETCD_VERSION, kube-apiserver $KUBE_VERSION (ready in $APISERVER_MS ms), kube-controller-manager $KUBE_VERSION"
