"""``gaia run DIR``: a workflow folder (commands.yaml, processes.yaml, data/) run to the end
on an embedded server (or a given one), with live progress and the dashboard's address."""

from __future__ import annotations

import argparse
import contextlib
import filecmp
import os
import re
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gaia.api.dashboard import url as dashboard_url
from gaia.client import Gaia, load_yaml
from gaia.errors import InvalidRequest
from gaia.progress import Progress, show, summary_view

__all__ = ["DEFAULT_DATA", "EXIT_CODES", "namespace_for", "run_folder", "seed"]

DEFAULT_DATA = Path("gaia-data")
EXIT_CODES = {"complete": 0, "error": 1, "incomplete": 1, "halted": 1}


def run_folder(args: argparse.Namespace) -> int:
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
        host, token = args.host, None
        if host is None:
            from gaia.standalone.embedded import EmbeddedServer

            embedded = EmbeddedServer(
                data_dir=data_dir or DEFAULT_DATA, workers=args.workers, sandbox=args.sandbox
            )
            server = stack.enter_context(embedded)
            assert server.host is not None
            box = server.host.sandbox
            if box.problem is not None or box.mode == "none":
                print(f"gaia: warning: {box.summary()}", file=sys.stderr)
            host, token = server.address, server.token
            say(f"embedded Gaia server at {host}: data in {data_dir}/, {args.workers} workers")
        client = Gaia({"gaia_host": host, "token": token})
        page = dashboard_url(client.url, client.token, f"/ns/{root}")
        try:
            reply = client.command(commands)
            say(f"{len(reply.get('commands') or [])} commands registered")
            changed = (client.merge(root, processes).get("processes") or {}).get(root) or []
            say(
                f"{root}: {len(changed)} processes added or changed"
                if changed
                else f"{root}: processes unchanged"
            )
            say(f"dashboard: {page}")
            progress = Progress(client, root, out=None if args.quiet else sys.stdout)
            progress.start()
            client.trigger(root)
            status = progress.wait()
        except KeyboardInterrupt:
            print(f"\ninterrupted. {_resume_hint(args, root, host)}", file=sys.stderr)
            return 130
        results = data_dir / root if data_dir else None
        show(summary_view(root, status, time.monotonic() - started, results, host))
        if getattr(args, "stay", False) and args.host is None:
            print(f"the dashboard stays up at {page}; Ctrl-C to stop the server", flush=True)
            with contextlib.suppress(KeyboardInterrupt):
                threading.Event().wait()
    return EXIT_CODES.get(str(status.get("state")), 1)


def seed(source: Path, target: Path, say: Callable[[str], None] = print) -> int:
    """Copy the files under ``source`` missing from ``target``; keep differing ones, saying so.

    Each file lands whole (written aside, then renamed). Returns how many were copied.
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
