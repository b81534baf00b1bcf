"""The operator's guard in process, against a stand-in for the API server's reviews: what
it asks Kubernetes for each call, what it keeps, and what it refuses. (The real API server
answers the same questions in test_operator_auth.py.)"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from gaia.api.auth import Access
from gaia.errors import Forbidden, GaiaError, InvalidRequest, Unauthorized, Unavailable
from gaia.kube import access as access_module
from gaia.kube.access import WORKER_AUDIENCE, KubeGuard, WorkAccess

ALICE = {
    "username": "system:serviceaccount:team-a:alice",
    "uid": "u-1",
    "groups": ["system:serviceaccounts", "system:authenticated"],
    "extra": {"authentication.kubernetes.io/credential-id": ["JTI=1"]},
}
WORKER = "system:serviceaccount:gaia:gaia-worker"


class Reviews:
    """Answers TokenReviews, SubjectAccessReviews and pod reads as told; counts them."""

    def __init__(self) -> None:
        self.users: dict[str, dict[str, Any]] = {"alice-token": ALICE}
        self.workers: dict[str, dict[str, Any]] = {}
        self.pods: dict[str, dict[str, Any]] = {}
        self.grants: set[tuple[str, str, str, str | None]] = set()
        self.asked: list[dict[str, Any]] = []
        self.token_reviews = 0
        self.away = False
        self.refuses_operator = False

    def _check(self) -> None:
        if self.away:
            raise Unavailable("the Kubernetes API server cannot be reached (gone)")
        if self.refuses_operator:
            raise InvalidRequest("the Kubernetes API refused the request: forbidden")

    async def review_token(self, token: str, audiences: list[str] | None = None) -> dict[str, Any]:
        self._check()
        self.token_reviews += 1
        if audiences is None and token in self.users:
            return {"authenticated": True, "user": self.users[token], "audiences": ["api"]}
        if audiences == [WORKER_AUDIENCE] and token in self.workers:
            return {"authenticated": True, "user": self.workers[token], "audiences": audiences}
        return {"error": "invalid bearer token", "user": {}}

    async def review_access(self, spec: dict[str, Any]) -> dict[str, Any]:
        self._check()
        self.asked.append(spec)
        a = spec["resourceAttributes"]
        allowed = (spec["user"], a["verb"], a["resource"], a.get("namespace")) in self.grants
        return {"allowed": True} if allowed else {"allowed": False}

    async def read_pod(self, namespace: str, name: str) -> dict[str, Any] | None:
        self._check()
        return self.pods.get(f"{namespace}/{name}")


def guard(reviews: Reviews, tracked: dict[str, str] | None = None, watched: str = "") -> KubeGuard:
    places = tracked if tracked is not None else {"triangle": "team-a"}
    return KubeGuard(
        reviews,  # type: ignore[arg-type]  # the three calls the guard makes
        places.get,
        namespace="gaia",
        worker_account="gaia-worker",
        watched=watched,
    )


def run(coroutine: Any) -> Any:
    return asyncio.run(coroutine)


async def check(g: KubeGuard, token: str, access: Access) -> None:
    await g.authorize(await g.authenticate(token), access)


@pytest.mark.parametrize(
    ("access", "expected"),
    [
        (Access(("get",), "gaianamespaces", "triangle"), [("get", "team-a", "triangle")]),
        (Access(("patch",), "gaianamespaces", "triangle"), [("patch", "team-a", "triangle")]),
        # a Gaia namespace that does not exist yet is created where the API creates them
        (Access(("patch",), "gaianamespaces", "new"), [("create", "gaia", None)]),
        (Access(("get",), "gaianamespaces", "new"), [("get", "gaia", "new")]),
        (Access(("list",), "gaianamespaces"), [("list", None, None)]),
        (
            Access(("create", "update"), "gaiacommands"),
            [("create", None, None), ("update", None, None)],
        ),
        (Access(("create",), "gaiaworkers"), [("create", "gaia", None)]),
    ],
)
def test_each_call_asks_rbac_about_the_namespace_it_touches(
    access: Access, expected: list[tuple[str, str | None, str | None]]
) -> None:
    assert guard(Reviews()).questions(access) == expected


def test_a_namespaced_operator_asks_about_its_own_namespace_for_all() -> None:
    g = guard(Reviews(), watched="team-a")
    assert g.questions(Access(("list",), "gaianamespaces")) == [("list", "team-a", None)]


def test_a_user_with_the_verb_passes_and_the_review_carries_who_they_are() -> None:
    reviews = Reviews()
    reviews.grants.add((ALICE["username"], "patch", "gaianamespaces", "team-a"))
    run(check(guard(reviews), "alice-token", Access(("patch",), "gaianamespaces", "triangle")))
    (spec,) = reviews.asked
    assert spec == {
        "user": ALICE["username"],
        "uid": "u-1",
        "groups": ALICE["groups"],
        "extra": ALICE["extra"],
        "resourceAttributes": {
            "group": "gaia.dev",
            "resource": "gaianamespaces",
            "verb": "patch",
            "namespace": "team-a",
            "name": "triangle",
        },
    }


def test_a_refusal_names_the_user_the_verb_the_resource_and_the_namespace() -> None:
    with pytest.raises(Forbidden) as refused:
        run(check(guard(Reviews()), "alice-token", Access(("get",), "gaianamespaces", "triangle")))
    message = str(refused.value)
    assert message.startswith(
        "system:serviceaccount:team-a:alice may not get gaianamespaces.gaia.dev 'triangle' "
        "in the Kubernetes namespace 'team-a'"
    )
    assert "gaia-user" in message


def test_a_token_kubernetes_refuses_is_401_saying_how_to_get_one() -> None:
    with pytest.raises(Unauthorized) as refused:
        run(check(guard(Reviews()), "forged", Access(("get",), "gaianamespaces", "triangle")))
    message = str(refused.value)
    assert "refused by Kubernetes (invalid bearer token)" in message
    assert "kubectl create token" in message and "GAIA_TOKEN" in message


def test_answers_are_kept_briefly_and_refusals_not_at_all(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [1000.0]
    monkeypatch.setattr(access_module.time, "monotonic", lambda: clock[0])
    reviews = Reviews()
    g = guard(reviews)
    status = Access(("get",), "gaianamespaces", "triangle")
    with pytest.raises(Forbidden):
        run(check(g, "alice-token", status))
    reviews.grants.add((ALICE["username"], "get", "gaianamespaces", "team-a"))
    run(check(g, "alice-token", status))  # a refusal is not kept: the grant works at once
    run(check(g, "alice-token", status))
    assert (reviews.token_reviews, len(reviews.asked)) == (1, 2)
    reviews.grants.clear()
    clock[0] += access_module.ALLOWED_SECONDS + 1  # the grant went: refused once not fresh
    with pytest.raises(Forbidden):
        run(check(g, "alice-token", status))
    assert reviews.token_reviews == 1
    clock[0] += access_module.TOKEN_SECONDS
    with pytest.raises(Forbidden):
        run(check(g, "alice-token", status))
    assert reviews.token_reviews == 2


def test_while_the_api_server_is_away_known_answers_still_count(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = [1000.0]
    monkeypatch.setattr(access_module.time, "monotonic", lambda: clock[0])
    reviews = Reviews()
    reviews.grants.add((ALICE["username"], "get", "gaianamespaces", "team-a"))
    g = guard(reviews)
    status = Access(("get",), "gaianamespaces", "triangle")
    run(check(g, "alice-token", status))
    reviews.away = True
    clock[0] += access_module.TOKEN_SECONDS + 1
    run(check(g, "alice-token", status))  # from before the outage
    with pytest.raises(Unavailable):  # a question never asked before
        run(check(g, "alice-token", Access(("patch",), "gaianamespaces", "triangle")))
    with pytest.raises(Unavailable):  # a token never seen before
        run(check(g, "other-token", status))
    clock[0] += access_module.STALE_SECONDS
    with pytest.raises(Unavailable):  # too old
        run(check(g, "alice-token", status))


def test_an_operator_that_may_not_review_says_what_it_needs() -> None:
    reviews = Reviews()
    reviews.refuses_operator = True
    with pytest.raises(GaiaError) as failed:
        run(guard(reviews).authenticate("alice-token"))
    assert failed.value.http_status == 500
    assert "tokenreviews.authentication.k8s.io" in str(failed.value)


# --- the workers ------------------------------------------------------------------------


def worker_world(**pod: Any) -> Reviews:
    reviews = Reviews()
    reviews.workers["w1-token"] = {
        "username": WORKER,
        "extra": {
            "authentication.kubernetes.io/pod-name": ["gaia-worker-w1-abc"],
            "authentication.kubernetes.io/pod-uid": ["pod-uid-1"],
        },
    }
    meta = {
        "name": "gaia-worker-w1-abc",
        "uid": "pod-uid-1",
        "labels": {"app.kubernetes.io/managed-by": "gaia", "gaia.dev/worker": "w1"},
        **pod,
    }
    reviews.pods["gaia/gaia-worker-w1-abc"] = {"metadata": meta}
    return reviews


def work(worker: str | None = "w1") -> WorkAccess:
    return WorkAccess(("work",), "gaiaworkers", worker=worker)


def test_a_launched_worker_may_work_for_itself_only() -> None:
    g = guard(worker_world())
    run(check(g, "w1-token", work()))
    run(check(g, "w1-token", work(None)))
    with pytest.raises(Forbidden, match="is worker 'w1'; it may not speak for worker 'w2'"):
        run(check(g, "w1-token", work("w2")))


def test_a_worker_token_is_no_users() -> None:
    with pytest.raises(Unauthorized):
        run(check(guard(worker_world()), "w1-token", Access(("list",), "gaianamespaces")))


@pytest.mark.parametrize(
    ("token", "pod", "reason"),
    [
        ("alice-token", {}, "the token is system:serviceaccount:team-a:alice's, for the API"),
        ("forged", {}, "the token is refused (invalid bearer token)"),
        ("w1-token", {"uid": "another-pod"}, "its pod gaia-worker-w1-abc is gone"),
        ("w1-token", {"deletionTimestamp": "2025-01-01T00:00:00Z"}, "is gone"),
        ("w1-token", {"labels": {"gaia.dev/worker": "w1"}}, "is not a Gaia worker's"),
    ],
)
def test_anyone_else_on_the_workers_protocol_is_403(
    token: str, pod: dict[str, Any], reason: str
) -> None:
    with pytest.raises(Forbidden) as refused:
        run(check(guard(worker_world(**pod)), token, work()))
    assert "only for the worker pods this operator launched" in str(refused.value)
    assert reason in str(refused.value)


def test_a_worker_token_of_another_account_or_unbound_is_403() -> None:
    reviews = worker_world()
    reviews.workers["other"] = {"username": "system:serviceaccount:gaia:default", "extra": {}}
    reviews.workers["unbound"] = {"username": WORKER, "extra": {}}
    g = guard(reviews)
    with pytest.raises(Forbidden, match="the token is system:serviceaccount:gaia:default's"):
        run(check(g, "other", work()))
    with pytest.raises(Forbidden, match="bound to no pod"):
        run(check(g, "unbound", work()))
