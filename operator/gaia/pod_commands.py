"""The ``gaia`` subcommands that run inside Kubernetes pods, not at a user's prompt:
``operator``, ``worker`` and ``task fetch|upload``. They are left out of the list in
``gaia --help`` (its epilog names them); each still has its own ``--help``."""

from __future__ import annotations

import argparse
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["POD_COMMANDS", "add_pod_commands"]

POD_COMMANDS = ("operator", "worker", "task")
Usage = Callable[[argparse.ArgumentParser], int]


def _operator(args: argparse.Namespace) -> int:
    from gaia.kube.operator import main as run_operator

    run_operator()
    return 0


def _worker(args: argparse.Namespace) -> int:
    from gaia.worker.remote import main as run_worker

    token_file = Path(args.token_file) if args.token_file else None
    return run_worker(args.key, args.api, args.idle, args.sandbox, token_file)


def _task_fetch(args: argparse.Namespace) -> int:
    from gaia.worker.transfer import main_fetch  # boto3: only task pods on S3 need it

    return main_fetch(args.root, Path(args.work), [tuple(pair) for pair in args.input or []])


def _task_upload(args: argparse.Namespace) -> int:
    from gaia.worker.transfer import main_upload

    exit_file = Path(args.exit_file) if args.exit_file else None
    return main_upload(
        args.root, args.job, Path(args.work), args.output or [], exit_file, args.timeout
    )


def add_pod_commands(subs: Any, verbose: argparse.ArgumentParser, usage: Usage) -> None:
    """Add the pod-side subcommands to ``subs``, unlisted (no ``help=``: argparse then
    leaves them out of the parent's command list)."""

    def add(name: str, func: Any, text: str, example: str) -> argparse.ArgumentParser:
        sub: argparse.ArgumentParser = subs.add_parser(
            name,
            description=text,
            epilog=f"example:\n  {example}",
            parents=[verbose],
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        sub.set_defaults(func=func)
        return sub

    add(
        "operator",
        _operator,
        "run the Kubernetes operator (kopf) against the current kubeconfig's cluster; "
        "configured by GAIA_STORE_PATH, GAIA_STORE_CLAIM, GAIA_API_PORT, ... (docs/kubernetes.md)",
        "GAIA_STORE_PATH=/data gaia operator",
    )
    sub = add(
        "worker",
        _worker,
        "inside a worker pod on Kubernetes: take tasks from the operator and run them "
        "until idle (started by `gaia launch`; docs/kubernetes.md)",
        "gaia worker --key w1 --api http://gaia.gaia.svc:24442 --idle 300",
    )
    sub.set_defaults(log_level=logging.INFO)
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
    sub.add_argument(
        "--token-file",
        default=os.environ.get("GAIA_WORKER_TOKEN_FILE") or None,
        metavar="PATH",
        help="the pod's projected ServiceAccount token (audience gaia-worker), read before "
        "each call and sent to the operator ($GAIA_WORKER_TOKEN_FILE)",
    )
    add_sandbox_option(sub)
    task = add(
        "task",
        None,
        "inside a task pod on the S3 store: fetch inputs, upload outputs (used by the operator)",
        "gaia task fetch --root triangle --input /in/in animals/rabbit",
    )
    task.set_defaults(func=lambda args: usage(task))
    _add_task_steps(task, verbose)


def _add_task_steps(task: argparse.ArgumentParser, verbose: argparse.ArgumentParser) -> None:
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


def add_sandbox_option(sub: argparse.ArgumentParser) -> None:
    """``--sandbox``, for every command that runs tasks on this machine."""
    sub.add_argument(
        "--sandbox",
        choices=("auto", "bwrap", "none"),
        default="auto",
        help="how tasks are sealed: auto or bwrap (bubblewrap; when it cannot start, no "
        "task runs) or none (no isolation: a task can do all that this user can; "
        "unsafe) (default: %(default)s)",
    )
