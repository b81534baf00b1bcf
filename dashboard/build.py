#!/usr/bin/env python3
"""Build the dashboard into the Python package (operator/gaia/dashboard/), only when its
sources changed.

The built page is committed, so that `pip install`, the Docker image and `make run` need
no Node.js. operator/gaia/dashboard/SOURCES holds a hash of the sources it was built from;
this script compares it with the sources as they are now:

    python3 dashboard/build.py            # rebuild if the sources changed (npm ci + vite)
    python3 dashboard/build.py --check    # exit 1 if the committed build is stale
    python3 dashboard/build.py --deps     # only install the npm packages (for tsc)
    python3 dashboard/build.py --force    # rebuild whatever the hash says
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
BUILT = HERE.parent / "operator" / "gaia" / "dashboard"
STAMP = BUILT / "SOURCES"
CACHE = HERE.parent / ".cache" / "npm"
INPUTS = ("index.html", "package.json", "package-lock.json", "tsconfig.json", "vite.config.ts")


def source_hash() -> str:
    """sha256 over every source file's path and content, in path order."""
    files = [HERE / name for name in INPUTS] + sorted((HERE / "src").rglob("*"))
    digest = hashlib.sha256()
    for path in files:
        if path.is_file():
            digest.update(path.relative_to(HERE).as_posix().encode() + b"\0")
            digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()


def built_hash() -> str | None:
    return STAMP.read_text().strip() if STAMP.is_file() else None


def install() -> None:
    """npm ci, skipped while node_modules is newer than the lockfile."""
    marker = HERE / "node_modules" / ".installed"
    lock = HERE / "package-lock.json"
    if marker.is_file() and marker.stat().st_mtime >= lock.stat().st_mtime:
        return
    npm = shutil.which("npm")
    if npm is None:
        sys.exit(
            "dashboard: npm not found; install Node.js 20+ (Debian: apt-get install nodejs npm)"
        )
    CACHE.mkdir(parents=True, exist_ok=True)
    command = [npm, "ci", "--cache", str(CACHE), "--no-audit", "--no-fund", "--loglevel=error"]
    subprocess.run(command, cwd=HERE, check=True)
    marker.touch()


def build() -> None:
    install()
    env = {**os.environ, "NODE_ENV": "production"}
    subprocess.run(
        [shutil.which("npm") or "npm", "run", "--silent", "build"], cwd=HERE, env=env, check=True
    )
    STAMP.write_text(source_hash() + "\n")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--check", action="store_true", help="only say whether the build is current")
    group.add_argument("--deps", action="store_true", help="only install the npm packages")
    group.add_argument("--force", action="store_true", help="build even if current")
    args = parser.parse_args()
    if args.deps:
        install()
        return 0
    current = built_hash() == source_hash()
    if args.check:
        if not current:
            print(
                "dashboard: the committed build in operator/gaia/dashboard/ is not built from "
                "the sources in dashboard/; run `make dashboard` and commit the result",
                file=sys.stderr,
            )
        return 0 if current else 1
    if current and not args.force:
        return 0
    print("dashboard: sources changed; building operator/gaia/dashboard/", flush=True)
    build()
    return 0


if __name__ == "__main__":
    sys.exit(main())
