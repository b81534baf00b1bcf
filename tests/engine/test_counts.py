"""The counts kept in step with each event agree with counting the graph from scratch."""

from __future__ import annotations

import random

import pytest
from engine_host import ECHO, MAKE, Host, step

from gaia.engine.states import TaskState
from gaia.errors import GaiaError

KEYS = [f"k{i}" for i in range(8)]
NOOP = {"key": "noop", "image": "alpine", "command": ["true"]}  # no outputs: done at once


def counted_from_scratch(host: Host) -> dict[str, int]:
    """What the counts mean: processes whose outputs are all complete; active processes
    whose task is running, and the others."""
    ns, complete = host.ns, set(host.ns.complete)
    done = sum(
        all(key in complete for key in process.outputs.values())
        for process in ns.graph.processes.values()
    )
    running = sum(ns.tasks[key].state is TaskState.RUNNING for key in ns.active)
    return {"complete": done, "running": running, "queued": len(ns.active) - running}


def random_process(rng: random.Random, key: str) -> dict[str, object]:
    if rng.random() < 0.1:
        return {"key": key, "command": "noop"}
    if rng.random() < 0.3:
        return {"key": key, "command": "make", "outputs": {"OUT": rng.choice(KEYS)}}
    source, target = rng.sample(KEYS, 2)
    return step(key, source, target)


@pytest.mark.parametrize("seed", range(40))
def test_done_processes_are_counted_right_after_any_sequence_of_events(seed: int) -> None:
    rng = random.Random(seed)
    host = Host([ECHO, MAKE, NOOP], store={"k0"})
    started: set[str] = set()
    for _ in range(60):
        choice = rng.random()
        try:
            if choice < 0.3:
                host.merge([random_process(rng, f"p{rng.randrange(6)}")])
            elif choice < 0.45 and host.queued:
                process = rng.choice(sorted(host.queued))
                if process in started:  # already reported running: report its end
                    run = host.queued.pop(process)
                    host.store.update(host.ns.graph.processes[process].outputs.values())
                    host.carry_out(host.ns.task_succeeded(process, run))
                else:
                    host.finish(process, ok=rng.random() < 0.85)
            elif choice < 0.55 and host.queued:
                process = rng.choice(sorted(host.queued))
                if process not in started:
                    host.carry_out(host.ns.task_started(process, host.queued[process], {}))
            elif choice < 0.7 and host.ns.graph.data_keys:
                expired = rng.choice(
                    sorted(host.ns.graph.data_keys | host.ns.graph.processes.keys())
                )
                _, _, instructions = host.ns.expire([expired])
                host.carry_out(instructions)
            elif choice < 0.8:
                kept = [spec.key for spec in host.ns.specs.values() if rng.random() < 0.7]
                plan = host.ns.prepare_merge(
                    [host.ns.specs[key] for key in kept], host.registry.commands, replace_all=True
                )
                host.carry_out(host.ns.apply(plan, host.lookup()))
            elif choice < 0.9:
                host.store.discard(rng.choice(KEYS))  # a key removed by hand, seen at trigger
                host.trigger()
            else:
                host.carry_out(host.ns.halt())
        except GaiaError:
            pass  # a duplicate producer or a cycle: rejected, nothing changed
        started = {key for key in host.ns.active if host.ns.tasks[key].state is TaskState.RUNNING}
        counts = host.ns.counts()
        assert {key: counts[key] for key in ("complete", "running", "queued")} == (
            counted_from_scratch(host)
        )
