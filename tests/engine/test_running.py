"""The runnable front, completion, failure, halt, trigger and the namespace states."""

from __future__ import annotations

import orjson
from engine_host import ECHO, MAKE, Host, step

from gaia.engine.instructions import StartTask
from gaia.engine.states import Mode
from gaia.shell import encoded_flow


def test_only_processes_with_all_inputs_complete_start(triangle: Host) -> None:
    assert sorted(triangle.queued) == ["hello-rabbit", "hello-snake", "md5-rabbit", "md5-snake"]
    assert triangle.ns.state().value == "running"


def test_completions_start_what_they_unblock_until_complete(triangle: Host) -> None:
    triangle.finish("md5-rabbit")
    assert "cat-rabbit" not in triangle.queued  # still waits for hello/rabbit
    triangle.finish("hello-rabbit")
    assert "cat-rabbit" in triangle.queued
    triangle.run_all()
    assert triangle.ns.state().value == "complete"
    assert triangle.names()[-1] == "flow-complete"
    assert triangle.ns.counts()["complete"] == 10
    assert triangle.ns.status()["data"]["wc/both"] == "complete"


def test_status_has_the_bipartite_graph(triangle: Host) -> None:
    flow = triangle.ns.status()["flow"]
    assert flow["process"]["cat-rabbit"]["from"] == ["md5/rabbit", "hello/rabbit"]
    assert flow["process"]["cat-rabbit"]["to"] == ["cat/rabbit"]
    assert flow["data"]["cat/rabbit"] == {
        "from": ["cat-rabbit"],
        "to": ["both:cat-ab", "wc-rabbit"],
    }
    assert flow["data"]["animals/rabbit"]["from"] == []


def test_the_flow_in_status_follows_every_change_of_the_graph(chain: Host) -> None:
    before = chain.ns.status()["flow"]
    chain.run_all()
    assert chain.ns.status()["flow"] == before  # runs do not change the graph
    assert "flow" not in chain.ns.status(flow=False)
    chain.merge([step("de", "c", "d")])  # an addition only
    assert chain.ns.status()["flow"]["data"]["d"]["from"] == ["de"]
    chain.merge([step("bc", "src", "b")])  # a replacement
    after = chain.ns.status()["flow"]
    assert after["process"]["bc"]["from"] == ["src"] and after["data"]["src"]["to"] == ["ab", "bc"]
    plan = chain.ns.prepare_merge([], chain.registry.commands, replace_all=True)
    chain.carry_out(chain.ns.apply(plan, chain.lookup()))
    assert chain.ns.status()["flow"] == {"process": {}, "data": {}}


def test_the_graph_encoded_a_slice_at_a_time_is_the_whole_graph(triangle: Host) -> None:
    whole = triangle.ns.flow()
    assert len(whole["process"]) == 10 and len(whole["data"]) == 12
    for size in (1, 3, 10, 10_000):
        slices = list(triangle.ns.flow_slices(size))
        assert all(0 < len(piece) <= size for _, piece in slices)
        assert orjson.loads(orjson.dumps(encoded_flow(triangle.ns, size))) == whole
    plan = triangle.ns.prepare_merge([], triangle.registry.commands, replace_all=True)
    triangle.carry_out(triangle.ns.apply(plan, triangle.lookup()))
    assert orjson.loads(orjson.dumps(encoded_flow(triangle.ns))) == {"process": {}, "data": {}}


def test_a_failure_blocks_its_downstream_and_ends_in_error(chain: Host) -> None:
    chain.finish("ab", ok=False)
    assert chain.queued == {}
    status = chain.ns.status()
    assert status["state"] == "error"
    assert status["tasks"]["ab"]["state"] == "error"
    assert status["tasks"]["ab"]["log_tail"] == ["boom"]
    assert status["waiting"] == ["a"]
    assert chain.names()[-2:] == ["step-error", "flow-error"]


def test_trigger_retries_failed_processes(chain: Host) -> None:
    chain.finish("ab", ok=False)
    chain.trigger()
    assert chain.queued == {"ab": 2}
    chain.run_all()
    assert chain.ns.state().value == "complete"


def test_a_missing_source_leaves_the_namespace_incomplete() -> None:
    host = Host([ECHO])
    host.merge([step("ab", "nowhere", "a")])
    assert host.queued == {}
    assert host.ns.state().value == "incomplete"
    assert host.ns.status()["waiting"] == ["nowhere"]


def test_keys_found_in_the_store_are_never_recomputed() -> None:
    host = Host([ECHO], {"src", "a"})
    host.merge([step("ab", "src", "a"), step("bc", "a", "b")])
    assert host.queued == {"bc": 1}


def test_trigger_finds_new_sources_and_vanished_results() -> None:
    host = Host([ECHO])
    host.merge([step("ab", "src", "a")])
    assert host.ns.state().value == "incomplete"
    host.store.add("src")
    host.trigger()
    assert host.queued == {"ab": 1}
    host.run_all()
    host.store.discard("a")  # a user deleted a result by hand
    host.trigger()
    assert host.queued == {"ab": 2}


def test_halt_cancels_running_tasks_and_starts_nothing_until_trigger(chain: Host) -> None:
    assert chain.queued == {"ab": 1}
    chain.carry_out(chain.ns.halt())
    assert chain.cancelled == ["ab"]
    assert chain.ns.state().value == "halted"
    assert chain.ns.status()["tasks"]["ab"]["state"] == "cancelled"
    chain.merge([step("de", "c", "d")])
    assert chain.queued == {}
    chain.trigger()
    assert chain.queued == {"ab": 2}
    chain.run_all()
    assert chain.ns.state().value == "complete"


def test_a_cancelled_run_reporting_late_changes_nothing(chain: Host) -> None:
    chain.carry_out(chain.ns.halt())
    chain.trigger()
    assert chain.ns.task_succeeded("ab", 1) == []  # run 1 was cancelled; run 2 is live
    assert "a" not in chain.ns.complete


def test_a_new_namespace_is_initialized_until_its_first_merge() -> None:
    host = Host([MAKE])
    assert host.ns.state().value == "initialized"
    host.merge([{"key": "m", "command": "make", "outputs": {"OUT": "m"}}])
    assert host.ns.state().value == "running"


def test_merging_the_same_spec_again_changes_nothing(chain: Host) -> None:
    chain.run_all()
    assert chain.merge([step("bc", "a", "b")]) == []
    assert chain.queued == {} and chain.deleted == []


def test_merging_a_changed_spec_recomputes_it_and_its_downstream(chain: Host) -> None:
    chain.run_all()
    assert chain.merge([step("bc", "src", "b")]) == ["bc"]
    assert sorted(chain.deleted) == ["b", "c"]
    assert chain.queued == {"bc": 2}
    assert chain.run_all() == ["bc", "cd"]


def test_a_merge_while_running_cancels_the_changed_process(chain: Host) -> None:
    chain.merge([step("ab", "src", "a2"), step("bc", "a2", "b")])
    assert chain.cancelled == ["ab"]
    assert chain.queued == {"ab": 2}


def test_start_instructions_carry_the_command() -> None:
    host = Host([ECHO], {"src"})
    plan = host.ns.prepare_merge([step("ab", "src", "a")], host.registry.commands)
    (start,) = [i for i in host.ns.apply(plan, host.lookup()) if isinstance(i, StartTask)]
    assert start.command.key == "echo" and start.run == 1 and start.task == "ab#1"


def test_run_numbers_never_repeat_for_a_process_key(chain: Host) -> None:
    chain.run_all()
    chain.carry_out(chain.ns.expire(["ab"])[2])
    assert chain.queued == {"ab": 2}


def test_a_declarative_merge_drops_processes_missing_from_the_list(chain: Host) -> None:
    chain.run_all()
    plan = chain.ns.prepare_merge(
        [step("ab", "src", "a"), step("bc", "a", "b")], chain.registry.commands, replace_all=True
    )
    assert plan.dropped == ["cd"] and plan.changed == []
    chain.carry_out(chain.ns.apply(plan, chain.lookup()))
    assert "cd" not in chain.ns.graph.processes and "c" not in chain.ns.graph
    assert chain.deleted == ["c"]
    assert chain.ns.state().value == "complete"
    assert "cd" not in chain.ns.users["echo"]


def test_a_task_adopted_after_a_restart_is_followed_not_started_again(chain: Host) -> None:
    chain.carry_out(chain.ns.halt())
    assert chain.ns.adopt("ab", 7, {"job": "gaia-test-ab-7"})
    assert chain.ns.resume(Mode.ACTIVE) == []  # ab is running as run 7: nothing to start
    chain.carry_out(chain.ns.task_succeeded("ab", 7))
    assert chain.queued == {"bc": 1}
    assert not chain.ns.adopt("ab", 3, {})  # an older run is never adopted
