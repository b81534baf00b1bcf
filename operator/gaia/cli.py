"""The ``gaia`` command: run a workflow folder, serve the API, inspect and steer namespaces.

    gaia run examples/triangle            # embedded server, live progress, results listed
    gaia serve --port 24442               # a standalone server, its dashboard at /ui/
    gaia status triangle                  # state, counts, failures, waiting keys

Every subcommand has ``--help`` with an example. Errors print ``gaia: error: <message>``
and exit 2. Output goes through ``rich``: colours and live lines on a terminal, plain lines
elsewhere. Shell completion is argcomplete's (``gaia completion bash``). This is the only
module that configures logging (``--verbose``).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from gaia.client import DEFAULT_HOST, DEFAULT_PORT, Gaia
from gaia.errors import GaiaError, NotFound
from gaia.pod_commands import add_pod_commands, add_sandbox_option

__all__ = ["main"]

DEFAULT_DATA = Path("gaia-data")
SHELLS = ("bash", "zsh", "fish")
EPILOG = """\
Start with:  gaia run examples/triangle
Inside Kubernetes pods (not at a prompt): gaia operator, gaia worker, gaia task
(each with --help). Shell completion: eval "$(gaia completion bash)"."""


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``gaia`` command line; return its exit code."""
    parser = _parser()
    _complete(parser)
    args = parser.parse_args(argv)
    # Servers and workers narrate at INFO (set_defaults(log_level=...)); the rest warns.
    level = logging.DEBUG if args.verbose else getattr(args, "log_level", logging.WARNING)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not args.verbose:
        # kafka-python narrates every connection at INFO, and each lost one at ERROR with a
        # traceback, several a second while a broker is away; gaia.bus.kafka says once
        # that events are dropped, and once that the broker takes them again.
        logging.getLogger("kafka").setLevel(logging.CRITICAL)
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


def _serve(args: argparse.Namespace) -> int:
    import contextlib

    from gaia.standalone.serve import serve  # it says where it serves, and the dashboard's URL

    with contextlib.suppress(KeyboardInterrupt):
        serve(
            host=args.host,
            port=args.port,
            data_dir=Path(args.data),
            workers=args.workers,
            kafka=args.kafka,
            kafka_topics={"log": args.kafka_log_topic, "status": args.kafka_status_topic},
            sandbox=args.sandbox,
            token_file=Path(args.token_file) if args.token_file else None,
        )
    return 0


def _run(args: argparse.Namespace) -> int:
    from gaia.folder import run_folder  # the embedded server: aiohttp, only when asked for

    return run_folder(args)


def _client(args: argparse.Namespace) -> Gaia:
    return Gaia({"gaia_host": args.host, "kafka_host": getattr(args, "kafka", None)})


def _show(renderable: Any) -> None:
    from gaia.progress import show

    show(renderable)


def _status(args: argparse.Namespace) -> int:
    from gaia.progress import namespaces_view, status_view

    client = _client(args)
    if args.namespace is not None:
        reply = client.status(args.namespace)
        if args.json:
            print(json.dumps(reply, indent=2))
        else:
            _show(status_view(reply))
        return 0
    try:
        listed = client.overview().get("namespaces") or []
    except NotFound:  # a server from before /overview
        states = client.workflows().get("workflows") or {}
        listed = [{"root": root, "state": state} for root, state in states.items()]
    if args.json:
        print(json.dumps({"namespaces": listed}, indent=2))
    elif listed:
        _show(namespaces_view(listed))
    else:
        print("no namespaces yet; start one with `gaia run DIR`")
    return 0


def _graph(args: argparse.Namespace) -> int:
    from gaia.drawing import draw

    expand = ["*"] if args.all else list(args.expand or [])
    text = draw(_client(args).graph(args.namespace, expand), args.format)
    if args.output:
        Path(args.output).write_text(text, encoding="utf-8")
        print(f"wrote the graph of {args.namespace} to {args.output} ({args.format})")
    else:
        sys.stdout.write(text)
    return 0


def _expire(args: argparse.Namespace) -> int:
    from gaia.progress import listing

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
    client = _client(args)
    if args.follow:
        from gaia.logtail import follow

        def write(line: str) -> None:
            sys.stdout.write(line + "\n")
            sys.stdout.flush()

        ended, event = follow(client, args.namespace, args.process, write)
        detail = f": {event.get('error')}" if event and event.get("error") else ""
        print(f"({args.process}: {ended}{detail})", file=sys.stderr)
        return 1 if ended == "error" else 0
    reply = client.logs(args.namespace, args.process)
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
    from gaia.progress import commands_view

    commands = _client(args).command([]).get("commands") or []
    if args.json:
        print(json.dumps(commands, indent=2))
    elif commands:
        _show(commands_view(commands))
    else:
        print("no commands yet; register some with `gaia run DIR` or the client's command()")
    return 0


def _listen(args: argparse.Namespace) -> int:
    print(
        f"listening to {args.namespace or 'every namespace'} at {args.host}; Ctrl-C to stop",
        file=sys.stderr,
    )
    _client(args).listen(args.namespace)
    return 0


def _completion(args: argparse.Namespace) -> int:
    import argcomplete

    sys.stdout.write(argcomplete.shellcode(["gaia"], shell=args.shell))
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gaia",
        description="Run networks of dependent computations: a workflow folder, a server, "
        "and the namespaces on it.",
        epilog=EPILOG,
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

    def namespace(sub: Any, **options: Any) -> None:
        action = sub.add_argument("namespace", metavar="NS", **options)
        action.completer = _complete_namespaces

    workers = os.cpu_count() or 1

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
    add_sandbox_option(sub)
    sub.add_argument("-q", "--quiet", action="store_true", help="print only the summary")
    sub.add_argument(
        "--stay",
        action="store_true",
        help="keep the embedded server and its dashboard up after the run, until Ctrl-C",
    )

    sub = add(
        "serve",
        _serve,
        "run a standalone Gaia server (HTTP API, dashboard at /ui/, local tasks)",
        "gaia serve --port 24442 --data ./gaia-data",
        remote_=False,
    )
    sub.set_defaults(log_level=logging.INFO)
    sub.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to bind (default: %(default)s, this machine only; another address "
        "lets other machines call, with the token)",
    )
    sub.add_argument(
        "--token-file",
        metavar="FILE",
        help="the API's bearer token (default: a new random one at each start, left for "
        "this user's clients in ~/.gaia/tokens/PORT)",
    )
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
    add_sandbox_option(sub)

    sub = add(
        "status",
        _status,
        "show a namespace's state, counts, failures and waiting keys",
        "gaia status triangle   (without NS: every namespace, its state and counts)",
    )
    namespace(sub, nargs="?", help="the namespace (default: all)")
    sub.add_argument("--json", action="store_true", help="print the server's raw reply")

    sub = add(
        "graph",
        _graph,
        "print a namespace's graph, fan-outs grouped, as Mermaid, DOT or SVG",
        "gaia graph triangle --format svg -o triangle.svg",
    )
    namespace(sub)
    sub.add_argument(
        "-f", "--format", choices=("mermaid", "dot", "svg"), default="mermaid",
        help="mermaid (Markdown, notebooks), dot (Graphviz) or svg (default: %(default)s)",
    )  # fmt: skip
    sub.add_argument(
        "--expand", action="append", metavar="GROUP",
        help="draw this group's members one by one (a group id, e.g. pg:cat; repeatable)",
    )  # fmt: skip
    sub.add_argument("--all", action="store_true", help="expand every group (small graphs)")
    sub.add_argument("-o", "--output", metavar="FILE", help="write to FILE instead of stdout")

    sub = add(
        "logs",
        _logs,
        "print the log of a process's latest task; -f follows it while it runs",
        "gaia logs -f triangle cat-rabbit",
    )
    namespace(sub)
    process = sub.add_argument("process", metavar="PROCESS", help="the process key")
    process.completer = _complete_processes
    sub.add_argument(
        "-f", "--follow", action="store_true", help="then print new lines until the task ends"
    )

    sub = add(
        "expire",
        _expire,
        "expire process or data keys and recompute what depends on them",
        "gaia expire triangle md5-rabbit hello/snake",
    )
    namespace(sub)
    keys = sub.add_argument("keys", metavar="KEY", nargs="+", help="a process key or a data key")
    keys.completer = _complete_processes
    for name, func, text in (
        ("halt", _halt, "cancel a namespace's running tasks, start none"),
        ("trigger", _trigger, "start what is runnable, retrying failures"),
    ):
        namespace(add(name, func, text, f"gaia {name} triangle"))
    sub = add(
        "listen", _listen, "print events as they happen, until Ctrl-C", "gaia listen triangle"
    )
    namespace(sub, nargs="?", help="only this namespace's events")
    sub.add_argument(
        "--kafka",
        metavar="HOST:PORT",
        default=os.environ.get("GAIA_KAFKA_HOST"),
        help="read the Kafka topics instead of the server's stream ($GAIA_KAFKA_HOST)",
    )
    sub = add("launch", _launch, "start workers, one per key", "gaia launch worker-a worker-b")
    sub.add_argument("keys", metavar="KEY", nargs="+", help="a worker key (unique)")
    sub = add("commands", _commands, "list the registered commands", "gaia commands --json")
    sub.add_argument("--json", action="store_true", help="print the server's raw list")
    sub = add(
        "completion",
        _completion,
        "print the shell code that completes gaia's commands, namespaces and processes",
        "gaia completion bash > ~/.local/share/bash-completion/completions/gaia",
        remote_=False,
    )
    sub.add_argument("shell", choices=SHELLS, help="the shell")
    add_pod_commands(subs, verbose, _usage)
    return parser


def _complete(parser: argparse.ArgumentParser) -> None:
    """Answer the shell's completion request (argcomplete) if this is one; else nothing."""
    if "_ARGCOMPLETE" not in os.environ:
        return
    import argcomplete

    argcomplete.autocomplete(parser)


def _complete_namespaces(prefix: str, parsed_args: argparse.Namespace, **_: Any) -> list[str]:
    try:
        client = Gaia({"gaia_host": parsed_args.host, "timeout": 2})
        return sorted(client.workflows().get("workflows") or {})
    except (GaiaError, AttributeError):
        return []


def _complete_processes(prefix: str, parsed_args: argparse.Namespace, **_: Any) -> list[str]:
    try:
        client = Gaia({"gaia_host": parsed_args.host, "timeout": 2})
        reply = client.members(parsed_args.namespace, prefix=prefix, limit=200)
        return [member["key"] for member in reply.get("members") or []]
    except (GaiaError, AttributeError):
        return []


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
