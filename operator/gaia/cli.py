"""The ``gaia`` command: run a workflow folder, serve the API, inspect and steer namespaces.

    gaia run examples/triangle            # embedded server, live progress, results listed
    gaia serve --port 24442               # a standalone server for the client and the CLI
    gaia status triangle                  # state, counts, failures, waiting keys

Every subcommand has ``--help`` with an example. Errors print ``gaia: error: <message>``
and exit 2. This is the only module that configures logging (``--verbose``).
"""

from __future__ import annotations

import argparse
import contextlib
import filecmp
import json
import logging
import os
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from gaia.client import DEFAULT_HOST, DEFAULT_PORT, Gaia, load_yaml
from gaia.errors import GaiaError, InvalidRequest
from gaia.progress import Progress, listing, render_status, render_summary

__all__ = ["main"]

DEFAULT_DATA = Path("gaia-data")
EXIT_CODES = {"complete": 0, "error": 1, "incomplete": 1, "halted": 1}


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``gaia`` command line; return its exit code."""
    args = _parser().parse_args(argv)
    level = (
        logging.DEBUG
        if args.verbose
        else logging.INFO
        if args.func in (_serve, _worker)
        else logging.WARNING
    )
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not args.verbose:  # kafka-python narrates every connection at INFO
        logging.getLogger("kafka").setLevel(logging.WARNING)
    try:
        code: int = args.func(args)
        return code
    except GaiaError as exc:
        print(f"gaia: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `gaia status ns | head`
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


def _operator(args: argparse.Namespace) -> int:
    from gaia.kube.operator import main as run_operator

    run_operator()
    return 0


def _worker(args: argparse.Namespace) -> int:
    from gaia.worker.remote import main as run_worker

    return run_worker(args.key, args.api, args.idle, args.sandbox)


def _task_fetch(args: argparse.Namespace) -> int:
    from gaia.worker.transfer import main_fetch  # boto3: only task pods on S3 need it

    return main_fetch(args.root, Path(args.work), [tuple(pair) for pair in args.input or []])


def _task_upload(args: argparse.Namespace) -> int:
    from gaia.worker.transfer import main_upload

    exit_file = Path(args.exit_file) if args.exit_file else None
    return main_upload(
        args.root, args.job, Path(args.work), args.output or [], exit_file, args.timeout
    )


def _serve(args: argparse.Namespace) -> int:
    from gaia.api.server import serve  # it says where it serves

    with contextlib.suppress(KeyboardInterrupt):
        serve(
            host=args.host,
            port=args.port,
            data_dir=Path(args.data),
            workers=args.workers,
            kafka=args.kafka,
            kafka_topics={"log": args.kafka_log_topic, "status": args.kafka_status_topic},
            sandbox=args.sandbox,
        )
    return 0


def _run(args: argparse.Namespace) -> int:
    folder = Path(args.dir)
    if not folder.is_dir():
        raise InvalidRequest(f"{folder} is not a folder holding commands.yaml and processes.yaml")
    commands = _yaml_list(folder / "commands.yaml", "commands")
    processes = _yaml_list(folder / "processes.yaml", "processes")
    root = args.namespace or namespace_for(folder)
    say: Callable[[str], None] = (lambda text: None) if args.quiet else print
    data_dir = Path(args.data) if args.data else None if args.host else DEFAULT_DATA
    if data_dir is not None:
        seed(folder / "data", data_dir / root, say)
    elif (folder / "data").is_dir():
        say(
            f"note: {folder / 'data'} is not copied to the remote server at {args.host}; put "
            "those keys into its data store, or pass --data DIR if it shares this filesystem"
        )
    started = time.monotonic()
    with contextlib.ExitStack() as stack:
        host = args.host
        if host is None:
            from gaia.api.embedded import EmbeddedServer

            embedded = EmbeddedServer(
                data_dir=data_dir or DEFAULT_DATA, workers=args.workers, sandbox=args.sandbox
            )
            box = embedded.controller.sandbox
            if box.problem is not None or box.mode == "none":
                print(f"gaia: warning: {box.summary()}", file=sys.stderr)
            server = stack.enter_context(embedded)
            host = server.address
            say(f"embedded Gaia server at {host}: data in {data_dir}/, {args.workers} workers")
        client = Gaia({"gaia_host": host})
        try:
            reply = client.command(commands)
            say(f"{len(reply.get('commands') or [])} commands registered")
            changed = (client.merge(root, processes).get("processes") or {}).get(root) or []
            say(
                f"{root}: {len(changed)} processes added or changed"
                if changed
                else f"{root}: processes unchanged"
            )
            progress = Progress(client, root, out=None if args.quiet else sys.stdout)
            progress.start()
            client.trigger(root)
            status = progress.wait()
        except KeyboardInterrupt:
            print(f"\ninterrupted. {_resume_hint(args, root, host)}", file=sys.stderr)
            return 130
        results = data_dir / root if data_dir else None
        print(render_summary(root, status, time.monotonic() - started, results, host))
    return EXIT_CODES.get(str(status.get("state")), 1)


def seed(source: Path, target: Path, say: Callable[[str], None] = print) -> int:
    """Copy the files under ``source`` missing from ``target``; keep differing ones, saying so.

    Each file lands whole (written aside, then renamed) with the mode of its source.
    Returns how many were copied.
    """
    if not source.is_dir():
        return 0
    copied = same = 0
    for path in sorted(p for p in source.rglob("*") if p.is_file()):
        key = path.relative_to(source).as_posix()
        destination = target / key
        if destination.exists():
            if destination.is_file() and filecmp.cmp(path, destination, shallow=False):
                same += 1
            else:  # said even with --quiet: the run will not use the file the user gave
                print(
                    f"kept existing {key}: {destination} differs from {path}; delete it "
                    "and expire the key to use the new file",
                    file=sys.stderr,
                )
            continue
        destination.parent.mkdir(parents=True, exist_ok=True)
        # Aside in the data folder itself (same filesystem), outside every namespace.
        with (
            path.open("rb") as src,
            tempfile.NamedTemporaryFile(dir=target.parent, prefix=".seed-", delete=False) as tmp,
        ):
            shutil.copyfileobj(src, tmp)
        shutil.copymode(path, tmp.name)  # not the temporary file's 600: tasks read it
        os.replace(tmp.name, destination)
        copied += 1
    say(
        f"seeded {copied} {'key' if copied == 1 else 'keys'} from {source} into {target}/"
        + (f" ({same} already there)" if same else "")
    )
    return copied


def namespace_for(folder: Path) -> str:
    """The default namespace of a workflow folder: its name, lowercased, in [a-z0-9-]."""
    name = re.sub(r"[^a-z0-9-]+", "-", folder.resolve().name.lower()).strip("-")
    if not name:
        raise InvalidRequest(f"cannot make a namespace name of {folder}; pass --namespace NS")
    return name


def _resume_hint(args: argparse.Namespace, root: str, host: str) -> str:
    if args.host is None:
        return (
            "The embedded server stopped its tasks; what completed is kept in "
            f"{args.data or DEFAULT_DATA}/{root}/. Run the same `gaia run` again to resume."
        )
    return (
        f"The server at {host} keeps state and keeps running {root}: follow it with "
        f"`gaia status {root} --host {host}`, stop it with `gaia halt {root} --host {host}`."
    )


def _yaml_list(path: Path, what: str) -> list[Any]:
    document = load_yaml(path)
    if not isinstance(document, list):
        raise InvalidRequest(f"{path}: expected a YAML list of {what}, found a mapping")
    return document


def _client(args: argparse.Namespace) -> Gaia:
    return Gaia({"gaia_host": args.host, "kafka_host": getattr(args, "kafka", None)})


def _status(args: argparse.Namespace) -> int:
    if args.namespace is None:
        reply = _client(args).workflows()
        if args.json:
            print(json.dumps(reply, indent=2))
            return 0
        for name, state in sorted((reply.get("workflows") or {}).items()):
            print(f"{name}  {state}")
        if not reply.get("workflows"):
            print("no namespaces yet; start one with `gaia run DIR`")
        return 0
    reply = _client(args).status(args.namespace)
    print(json.dumps(reply, indent=2) if args.json else render_status(reply))
    return 0


def _expire(args: argparse.Namespace) -> int:
    expired = _client(args).expire(args.namespace, args.keys).get("expire") or {}
    for kind in ("process", "data"):
        keys = list(expired.get(kind) or [])
        print(f"expired {len(keys)} {kind} keys" + (f": {listing(keys)}" if keys else ""))
    return 0


def _halt(args: argparse.Namespace) -> int:
    _client(args).halt(args.namespace)
    print(f"halted {args.namespace}; resume with `gaia trigger {args.namespace}`")
    return 0


def _trigger(args: argparse.Namespace) -> int:
    _client(args).trigger(args.namespace)
    print(f"triggered {args.namespace}; follow with `gaia listen {args.namespace}`")
    return 0


def _logs(args: argparse.Namespace) -> int:
    reply = _client(args).logs(args.namespace, args.process)
    text = str(reply.get("log") or "")
    sys.stdout.write(text if not text or text.endswith("\n") else text + "\n")
    if not text:
        print(f"(no output from {args.process}, run {reply.get('run')})", file=sys.stderr)
    return 0


def _launch(args: argparse.Namespace) -> int:
    launched = _client(args).launch(args.keys).get("launch") or []
    print(
        f"launched {len(launched)} worker{'' if len(launched) == 1 else 's'}"
        + (": " + ", ".join(map(str, launched)) if launched else "")
    )
    return 0


def _commands(args: argparse.Namespace) -> int:
    commands = _client(args).command([]).get("commands") or []
    if args.json:
        print(json.dumps(commands, indent=2))
        return 0
    width = max((len(str(c.get("key"))) for c in commands), default=0)
    for command in commands:
        if command.get("steps"):
            steps = ", ".join(str(s.get("key")) for s in command["steps"])
            detail = f"composite of {len(command['steps'])} steps: {steps}"
        else:
            detail = f"{command.get('image')}  {' '.join(map(str, command.get('command') or []))}"
        print(f"{command.get('key')!s:<{width}}  {detail}")
    if not commands:
        print("no commands yet; register some with `gaia run DIR` or the client's command()")
    return 0


def _listen(args: argparse.Namespace) -> int:
    print(
        f"listening to {args.namespace or 'every namespace'} at {args.host}; Ctrl-C to stop",
        file=sys.stderr,
    )
    _client(args).listen(args.namespace)
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gaia",
        description="Run networks of dependent computations: a workflow folder, a server, "
        "and the namespaces on it.",
        epilog="Try: gaia run examples/triangle",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    parser.set_defaults(func=lambda args: _usage(parser))
    verbose = argparse.ArgumentParser(add_help=False)
    verbose.add_argument(
        "-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help="log debug messages"
    )
    remote = argparse.ArgumentParser(add_help=False, parents=[verbose])
    remote.add_argument(
        "--host",
        default=os.environ.get("GAIA_HOST", DEFAULT_HOST),
        metavar="HOST:PORT",
        help="the Gaia server (default: $GAIA_HOST, else %(default)s)",
    )
    subs = parser.add_subparsers(title="commands", metavar="COMMAND")

    def add(name: str, func: Any, text: str, example: str, remote_: bool = True) -> Any:
        sub = subs.add_parser(
            name,
            help=text,
            description=text,
            epilog=f"example:\n  {example}",
            parents=[remote if remote_ else verbose],
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        sub.set_defaults(func=func)
        return sub

    workers = os.cpu_count() or 1

    def sandbox_option(sub: argparse.ArgumentParser) -> None:
        sub.add_argument(
            "--sandbox",
            choices=("auto", "bwrap", "none"),
            default="auto",
            help="how tasks are sealed: auto or bwrap (bubblewrap; when it cannot start, no "
            "task runs) or none (no isolation: a task can do all that this user can; "
            "unsafe) (default: %(default)s)",
        )

    sub = add(
        "serve",
        _serve,
        "run a standalone Gaia server (HTTP API, local tasks)",
        "gaia serve --port 24442 --data ./gaia-data",
        remote_=False,
    )
    sub.add_argument("--host", default="127.0.0.1", help="address to bind (default: %(default)s)")
    sub.add_argument("--port", type=_port, default=DEFAULT_PORT, help="default: %(default)s")
    sub.add_argument(
        "--data",
        default=str(DEFAULT_DATA),
        metavar="DIR",
        help="data and state folder (default: ./%(default)s)",
    )
    sub.add_argument(
        "--workers",
        type=_positive,
        default=workers,
        metavar="N",
        help="tasks run at once (default: CPU count, %(default)s)",
    )
    sub.add_argument(
        "--kafka",
        metavar="HOST:PORT",
        default=os.environ.get("GAIA_KAFKA_HOST"),
        help="also publish events to this Kafka broker ($GAIA_KAFKA_HOST)",
    )
    sub.add_argument(
        "--kafka-log-topic",
        metavar="TOPIC",
        default="sisyphus-log",
        help="Kafka topic of log lines (default: %(default)s)",
    )
    sub.add_argument(
        "--kafka-status-topic",
        metavar="TOPIC",
        default="sisyphus-status",
        help="Kafka topic of every other event (default: %(default)s)",
    )
    sandbox_option(sub)

    add(
        "operator",
        _operator,
        "run the Kubernetes operator (kopf) against the current kubeconfig's cluster; "
        "configured by GAIA_STORE_PATH, GAIA_STORE_CLAIM, GAIA_API_PORT, ... (docs/kubernetes.md)",
        "GAIA_STORE_PATH=/data gaia operator",
        remote_=False,
    )

    sub = add(
        "worker",
        _worker,
        "inside a worker pod on Kubernetes: take tasks from the operator and run them "
        "until idle (started by `gaia launch`; docs/kubernetes.md)",
        "gaia worker --key w1 --api http://gaia.gaia.svc:24442 --idle 300",
        remote_=False,
    )
    sub.add_argument("--key", required=True, help="this worker's name (a DNS label)")
    sub.add_argument(
        "--api", required=True, metavar="URL", help="the operator's HTTP API, e.g. http://HOST:PORT"
    )
    sub.add_argument(
        "--idle",
        type=float,
        default=300.0,
        metavar="SECONDS",
        help="stop after this long without work (default: %(default)s)",
    )
    sandbox_option(sub)

    task = add(
        "task",
        None,
        "inside a task pod on the S3 store: fetch inputs, upload outputs (used by the operator)",
        "gaia task fetch --root triangle --input /in/in animals/rabbit",
        remote_=False,
    )
    task.set_defaults(func=lambda args: _usage(task))
    steps = task.add_subparsers(title="steps", metavar="STEP")
    where = argparse.ArgumentParser(add_help=False, parents=[verbose])
    where.add_argument("--root", required=True, metavar="NS", help="the Gaia namespace")
    where.add_argument(
        "--work",
        default="/gaia/work",
        metavar="DIR",
        help="the pod's shared folder; container path /p is DIR/fs/p (default: %(default)s)",
    )
    bucket = (
        "The bucket is $GAIA_S3_BUCKET (keys under $GAIA_S3_PREFIX, server $GAIA_S3_ENDPOINT, "
        "region $GAIA_S3_REGION); credentials are the standard AWS variables."
    )
    step = steps.add_parser(
        "fetch",
        help="download each input object (or directory key) to its container path",
        description="Download each input key to DIR/fs/PATH. " + bucket,
        epilog="example:\n  gaia task fetch --root triangle --input /in/in animals/rabbit",
        parents=[where],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    step.add_argument(
        "--input",
        nargs=2,
        action="append",
        metavar=("PATH", "KEY"),
        help="container path and the data key to put there (repeatable)",
    )
    step.set_defaults(func=_task_fetch)
    step = steps.add_parser(
        "upload",
        help="wait for the command's exit code; if 0, upload the outputs to staging",
        description="Wait for DIR/run/exit; if it holds 0 upload each output DIR/fs/PATH to "
        "<prefix>/.gaia/staging/NS/JOB/PATH. Exits with the command's code. " + bucket,
        epilog="example:\n  gaia task upload --root triangle --job gaia-triangle-md5-1 "
        "--output /out/out",
        parents=[where],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    step.add_argument("--job", required=True, help="the Job's name (the staging folder)")
    step.add_argument(
        "--output",
        action="append",
        metavar="PATH",
        help="a declared output's container path, '/' ending for a directory (repeatable)",
    )
    step.add_argument(
        "--exit-file", metavar="FILE", help="where the exit code appears (default: DIR/run/exit)"
    )
    step.add_argument(
        "--timeout", type=float, metavar="SECONDS", help="give up waiting after this long"
    )
    step.set_defaults(func=_task_upload)

    sub = add(
        "run",
        _run,
        "run a workflow folder (commands.yaml, processes.yaml, data/) to the end",
        "gaia run examples/triangle --namespace triangle",
        remote_=False,
    )
    sub.add_argument("dir", metavar="DIR", help="folder with commands.yaml, processes.yaml, data/")
    sub.add_argument(
        "-n",
        "--namespace",
        metavar="NS",
        help="namespace to run in (default: the folder's name, lowercased)",
    )
    sub.add_argument(
        "--host", metavar="HOST:PORT", help="use this server instead of starting an embedded one"
    )
    sub.add_argument(
        "--data",
        metavar="DATA",
        help="the server's data folder, to seed DIR/data into "
        f"(default with the embedded server: ./{DEFAULT_DATA})",
    )
    sub.add_argument(
        "--workers",
        type=_positive,
        default=workers,
        metavar="N",
        help="tasks the embedded server runs at once (default: %(default)s)",
    )
    sandbox_option(sub)
    sub.add_argument("-q", "--quiet", action="store_true", help="print only the summary")

    sub = add(
        "status",
        _status,
        "show a namespace's state, counts, failures and waiting keys",
        "gaia status triangle   (without NS: every namespace and its state)",
    )
    sub.add_argument("namespace", metavar="NS", nargs="?", help="the namespace (default: all)")
    sub.add_argument("--json", action="store_true", help="print the server's raw reply")
    sub = add(
        "expire",
        _expire,
        "expire process or data keys and recompute what depends on them",
        "gaia expire triangle md5-rabbit hello/snake",
    )
    sub.add_argument("namespace", metavar="NS")
    sub.add_argument("keys", metavar="KEY", nargs="+", help="a process key or a data key")
    for name, func, text in (
        ("halt", _halt, "cancel a namespace's running tasks, start none"),
        ("trigger", _trigger, "start what is runnable, retrying failures"),
    ):
        add(name, func, text, f"gaia {name} triangle").add_argument("namespace", metavar="NS")
    sub = add(
        "logs", _logs, "print the log of a process's latest task", "gaia logs triangle cat-rabbit"
    )
    sub.add_argument("namespace", metavar="NS")
    sub.add_argument("process", metavar="PROCESS", help="the process key")
    sub = add("launch", _launch, "start workers, one per key", "gaia launch worker-a worker-b")
    sub.add_argument("keys", metavar="KEY", nargs="+", help="a worker key (unique)")
    sub = add("commands", _commands, "list the registered commands", "gaia commands --json")
    sub.add_argument("--json", action="store_true", help="print the server's raw list")
    sub = add(
        "listen", _listen, "print events as they happen, until Ctrl-C", "gaia listen triangle"
    )
    sub.add_argument("namespace", metavar="NS", nargs="?", help="only this namespace's events")
    sub.add_argument(
        "--kafka",
        metavar="HOST:PORT",
        default=os.environ.get("GAIA_KAFKA_HOST"),
        help="read the Kafka topics instead of the server's stream ($GAIA_KAFKA_HOST)",
    )
    return parser


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help(sys.stderr)
    return 2


def _positive(text: str) -> int:
    value = _whole(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def _port(text: str) -> int:
    value = _whole(text)
    if not 0 < value < 65536:
        raise argparse.ArgumentTypeError(f"{value} is not a TCP port (1-65535)")
    return value


def _whole(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None


if __name__ == "__main__":
    sys.exit(main())
