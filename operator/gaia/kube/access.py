"""Who may call the operator's HTTP API: Kubernetes decides.

    bearer token --TokenReview--> a Kubernetes user (name, uid, groups, extra)
    each Access of the call --SubjectAccessReview--> allowed, or 403 naming what was refused

A caller is whoever the API server says the token names: a ServiceAccount (``kubectl
create token NAME``), or a person whose kubeconfig holds a token the API server accepts.
What they may do is RBAC on resources of the group ``gaia.dev``, in the Kubernetes
namespace that holds the Gaia namespace the call touches (:meth:`KubeGuard.questions`):

    call                                        verb            resource        namespace
    status, logs, graph, members, process,      get             gaianamespaces  the one holding root
      events of one root
    merge, trigger, halt, expire, upload        patch           gaianamespaces  the one holding root
      ... of a root that does not exist yet     create          gaianamespaces  GAIA_K8S_NAMESPACE
    command (merging)                           create, update  gaiacommands    (cluster-scoped)
    command([]) (listing)                       list            gaiacommands    (cluster-scoped)
    launch                                      create          gaiaworkers     GAIA_K8S_NAMESPACE
    /work/workers (who is alive, what waits)    list            gaiaworkers     GAIA_K8S_NAMESPACE
    workflows, overview, events of all          list            gaianamespaces  all (or the watched one)

``gaiaworkers`` is virtual: no CRD defines it, and RBAC grants it like any resource.

The workers' protocol (``/work/*``, :class:`WorkAccess`) is for the worker pods this
operator launched and nobody else (403), but for the read-only ``/work/workers``, which
people who may list ``gaiaworkers`` read as well: their projected ServiceAccount token, bound to the
audience :data:`WORKER_AUDIENCE` and to the pod, of the workers' ServiceAccount in the
operator's namespace, from a pod labelled as the worker the request speaks for.

Answers are kept for a short while, keyed by a digest of the token: a token's review for
:data:`TOKEN_SECONDS`, an allowed decision for :data:`ALLOWED_SECONDS` (a refusal is asked
again each time, so a new RoleBinding works at once). While the API server cannot be
reached, answers up to :data:`STALE_SECONDS` old are used still, so that what the operator
answers from memory (status, events) goes on for callers it knows; anyone else gets 503.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from gaia.api.auth import Access
from gaia.errors import Forbidden, GaiaError, InvalidRequest, Unauthorized, Unavailable
from gaia.kube.cluster import Cluster
from gaia.kube.resources import GROUP, MANAGED_BY
from gaia.kube.workers import WORKER_AUDIENCE, WORKER_LABEL

__all__ = [
    "ALLOWED_SECONDS",
    "STALE_SECONDS",
    "TOKEN_SECONDS",
    "WORKER_AUDIENCE",
    "Caller",
    "KubeGuard",
    "User",
    "WorkAccess",
    "Worker",
]

logger = logging.getLogger(__name__)

TOKEN_SECONDS = 60.0  # a token's review is kept this long
REFUSED_SECONDS = 10.0  # a token's refusal, this long
ALLOWED_SECONDS = 10.0  # an allowed decision, this long; a refusal is never kept
STALE_SECONDS = 300.0  # while the API server is away, answers this old still count
KEPT = 10_000  # answers kept at most, per kind
POD_NAME = "authentication.kubernetes.io/pod-name"
POD_UID = "authentication.kubernetes.io/pod-uid"
WRITES = frozenset({"create", "patch", "update"})

T = TypeVar("T")


@dataclass(frozen=True)
class WorkAccess(Access):
    """A call of the workers' protocol, on behalf of ``worker`` (the body's, if any);
    with ``readers``, people who may list ``gaiaworkers`` may make it too."""

    worker: str | None = None
    readers: bool = False


@dataclass(frozen=True)
class User:
    """A caller as Kubernetes knows them (a TokenReview's ``status.user``)."""

    name: str
    uid: str = ""
    groups: tuple[str, ...] = ()
    extra: tuple[tuple[str, tuple[str, ...]], ...] = ()

    @classmethod
    def of(cls, user: dict[str, Any]) -> User:
        extra = user.get("extra") or {}
        return cls(
            name=str(user.get("username") or ""),
            uid=str(user.get("uid") or ""),
            groups=tuple(str(g) for g in user.get("groups") or ()),
            extra=tuple(sorted((k, tuple(str(x) for x in v or ())) for k, v in extra.items())),
        )


@dataclass(frozen=True)
class Worker:
    """A worker pod this operator launched: the worker ``key`` it runs as, and the pod."""

    key: str
    pod: str


@dataclass(frozen=True)
class Caller:
    """Who called: ``user`` when the token is a user's, else why not (``refused``). The
    token itself is kept for the workers' check, which asks another question of it."""

    token: str = field(repr=False)
    digest: str
    user: User | None
    refused: str = ""


class Answers(Generic[T]):
    """Answers by key, fresh for ``fresh`` seconds and usable up to ``stale`` seconds old
    when the API server cannot be asked; the oldest go beyond ``size``."""

    def __init__(self, stale: float = STALE_SECONDS, size: int = KEPT) -> None:
        self.stale, self.size = stale, size
        self._kept: OrderedDict[Hashable, tuple[float, float, T]] = OrderedDict()

    def fresh(self, key: Hashable) -> T | None:
        found = self._kept.get(key)
        if found is None or time.monotonic() - found[0] > found[1]:
            return None
        return found[2]

    def old(self, key: Hashable) -> T | None:
        found = self._kept.get(key)
        if found is None or time.monotonic() - found[0] > self.stale:
            return None
        return found[2]

    def put(self, key: Hashable, value: T, seconds: float) -> None:
        self._kept[key] = (time.monotonic(), seconds, value)
        self._kept.move_to_end(key)
        while len(self._kept) > self.size:
            self._kept.popitem(last=False)

    def clear(self) -> None:
        self._kept.clear()


class KubeGuard:
    """The operator's :class:`~gaia.api.auth.Guard` (see the module docstring).

    ``where(root)`` is the Kubernetes namespace that holds a Gaia namespace (None: it
    does not exist yet); ``namespace`` is the operator's own (GAIA_K8S_NAMESPACE: new Gaia
    namespaces and workers go there), ``watched`` the one it watches ("" for all), and
    ``worker_account`` the workers' ServiceAccount in ``namespace``.
    """

    def __init__(
        self,
        cluster: Cluster,
        where: Callable[[str], str | None],
        *,
        namespace: str,
        worker_account: str,
        watched: str = "",
    ) -> None:
        self.cluster = cluster
        self.where = where
        self.namespace = namespace
        self.worker_account = worker_account
        self.watched = watched
        self.tokens: Answers[User | str] = Answers()
        self.workers: Answers[Worker | str] = Answers()
        self.allowed: Answers[bool] = Answers()

    def hint(self) -> str:
        return (
            "send a Kubernetes token as 'Authorization: Bearer <token>': "
            "`kubectl create token <serviceaccount> -n <namespace>` prints one, or use your "
            "kubeconfig's; the Python client and the gaia command send $GAIA_TOKEN, the "
            "config's 'token', or the current kubeconfig context's token"
        )

    # -- who ------------------------------------------------------------------------------

    async def authenticate(self, token: str) -> Caller:
        """The user the token names, asked of the API server (TokenReview). A token it
        refuses is refused only once the call needs a user (401): a worker's token, bound
        to another audience, is checked by :meth:`authorize` on ``/work/*``."""
        digest = hashlib.sha256(token.encode()).hexdigest()
        review = await self._kept(self.tokens, digest, lambda: self._review_user(token))
        if isinstance(review, str):
            return Caller(token, digest, None, review)
        return Caller(token, digest, review)

    async def _review_user(self, token: str) -> tuple[User | str, float]:
        status = await self._ask(self.cluster.review_token(token))
        if not status.get("authenticated"):
            error = status.get("error") or "the API server does not accept it"
            return f"the token is refused by Kubernetes ({error})", REFUSED_SECONDS
        user = User.of(status.get("user") or {})
        return user, TOKEN_SECONDS

    # -- may they -------------------------------------------------------------------------

    async def authorize(self, caller: Caller, access: Access) -> None:
        if isinstance(access, WorkAccess):
            if access.readers and caller.user is not None:
                await self._allow(caller.user, "list", "gaiaworkers", self.namespace, None)
            else:
                await self._authorize_worker(caller, access)
            return
        if caller.user is None:
            raise Unauthorized(f"{caller.refused}; {self.hint()}")
        for verb, namespace, name in self.questions(access):
            await self._allow(caller.user, verb, access.resource, namespace, name)

    def questions(self, access: Access) -> list[tuple[str, str | None, str | None]]:
        """What to ask RBAC for ``access``: (verb, Kubernetes namespace or None for all or
        for a cluster-scoped resource, resource name or None)."""
        resource, verbs = access.resource, access.verbs
        if resource == "gaiacommands":
            return [(verb, None, None) for verb in verbs]
        if resource == "gaiaworkers":
            return [(verb, self.namespace, None) for verb in verbs]
        if access.root is None:
            return [(verb, self.watched or None, None) for verb in verbs]
        found = self.where(access.root)
        if found is not None:
            return [(verb, found, access.root) for verb in verbs]
        if WRITES.intersection(verbs):  # it would be created, where the API creates them
            return [("create", self.namespace, None)]
        return [(verb, self.namespace, access.root) for verb in verbs]

    async def _allow(
        self, user: User, verb: str, resource: str, namespace: str | None, name: str | None
    ) -> None:
        key = (user, verb, resource, namespace, name)
        if self.allowed.fresh(key):
            return
        attributes = {"group": GROUP, "resource": resource, "verb": verb}
        if namespace is not None:
            attributes["namespace"] = namespace
        if name is not None:
            attributes["name"] = name
        spec: dict[str, Any] = {
            "user": user.name,
            "groups": list(user.groups),
            "resourceAttributes": attributes,
        }
        if user.uid:
            spec["uid"] = user.uid
        if user.extra:
            spec["extra"] = {k: list(v) for k, v in user.extra}
        try:
            status = await self._ask(self.cluster.review_access(spec))
        except Unavailable:
            if self.allowed.old(key):
                logger.warning("the API server is away; %s may %s as before", user.name, verb)
                return
            raise
        if status.get("allowed"):
            self.allowed.put(key, True, ALLOWED_SECONDS)
            return
        raise Forbidden(_refusal(user.name, verb, resource, namespace, name, status))

    # -- the workers ----------------------------------------------------------------------

    async def _authorize_worker(self, caller: Caller, access: WorkAccess) -> None:
        worker = await self._kept(self.workers, caller.digest, lambda: self._review_worker(caller))
        if isinstance(worker, str):
            raise Forbidden(
                "the workers' protocol (/work/*) is only for the worker pods this operator "
                f"launched: {worker}"
            )
        if access.worker is not None and access.worker != worker.key:
            raise Forbidden(
                f"pod {worker.pod} is worker {worker.key!r}; it may not speak for worker "
                f"{access.worker!r}"
            )

    async def _review_worker(self, caller: Caller) -> tuple[Worker | str, float]:
        account = f"system:serviceaccount:{self.namespace}:{self.worker_account}"
        wanted = (
            f"a token of ServiceAccount {self.namespace}/{self.worker_account} for the "
            f"audience {WORKER_AUDIENCE!r}, bound to a worker pod"
        )
        if caller.user is not None:
            whose = caller.user.name
            return f"the token is {whose}'s, for the API server; it needs {wanted}", TOKEN_SECONDS
        status = await self._ask(self.cluster.review_token(caller.token, [WORKER_AUDIENCE]))
        user = status.get("user") or {}
        name = user.get("username")
        audiences = status.get("audiences") or []
        if not status.get("authenticated") or WORKER_AUDIENCE not in audiences:
            error = status.get("error") or "not accepted"
            return f"the token is refused ({error}); it needs {wanted}", REFUSED_SECONDS
        if name != account:
            return f"the token is {name}'s; it needs {wanted}", TOKEN_SECONDS
        extra = user.get("extra") or {}
        pod_name, pod_uid = _first(extra.get(POD_NAME)), _first(extra.get(POD_UID))
        if not pod_name:
            return f"the token is bound to no pod; it needs {wanted}", TOKEN_SECONDS
        pod = await self._ask(self.cluster.read_pod(self.namespace, pod_name))
        meta = (pod or {}).get("metadata") or {}
        if pod is None or meta.get("uid") != pod_uid or meta.get("deletionTimestamp"):
            return f"its pod {pod_name} is gone", REFUSED_SECONDS
        labels = meta.get("labels") or {}
        key = labels.get(WORKER_LABEL)
        if not key or any(labels.get(k) != v for k, v in MANAGED_BY.items()):
            return f"its pod {pod_name} is not a Gaia worker's", TOKEN_SECONDS
        return Worker(str(key), pod_name), TOKEN_SECONDS

    # -- asking ---------------------------------------------------------------------------

    async def _kept(
        self,
        answers: Answers[T],
        key: Hashable,
        ask: Callable[[], Awaitable[tuple[T, float]]],
    ) -> T:
        """A kept fresh answer, else a new one (kept), else (the API server is away) one
        that is not too old."""
        found = answers.fresh(key)
        if found is not None:
            return found
        try:
            value, seconds = await ask()
        except Unavailable:
            old = answers.old(key)
            if old is None:
                raise
            logger.warning("the API server is away; using a token's review from before")
            return old
        answers.put(key, value, seconds)
        return value

    async def _ask(self, call: Awaitable[T]) -> T:
        """An API call; a refusal of the operator itself becomes a clear server error."""
        try:
            return await call
        except InvalidRequest as exc:
            raise GaiaError(
                f"the operator cannot check who calls: {exc}. Its ServiceAccount needs create "
                "on tokenreviews.authentication.k8s.io and subjectaccessreviews."
                "authorization.k8s.io, and get on pods in its namespace (the chart's "
                "ClusterRole grants them)"
            ) from None


def _first(values: Any) -> str:
    return str(values[0]) if isinstance(values, list) and values else ""


def _refusal(
    user: str,
    verb: str,
    resource: str,
    namespace: str | None,
    name: str | None,
    status: dict[str, Any],
) -> str:
    what = f"{resource}.{GROUP}" + (f" {name!r}" if name else "")
    if resource == "gaiacommands":
        where = "(cluster-scoped: it takes a ClusterRoleBinding)"
    elif namespace is None:
        where = "in all Kubernetes namespaces"
    else:
        where = f"in the Kubernetes namespace {namespace!r}"
    reason = status.get("reason") or status.get("evaluationError") or ""
    told = f" ({reason})" if reason else ""
    return (
        f"{user} may not {verb} {what} {where}{told}; Kubernetes RBAC decides: an "
        "administrator grants it by binding the gaia-user (or, to read, gaia-viewer) "
        "ClusterRole there, see docs/security.md"
    )
