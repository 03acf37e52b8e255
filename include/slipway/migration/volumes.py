"""Volume data for the stateful cut-over, moved with rclone (Debian package ``rclone``, 1.60).

rclone runs as a subprocess with explicit flags (never through a shell) between two folders
this machine can read: on the local platform a local PersistentVolume's ``spec.local.path`` is
a folder standing in for the node's disk. No Kubernetes here: :mod:`slipway.migration.stateful`
decides which folders pair up and when the source is frozen.

- :func:`sync` makes the target folder an exact copy of the source folder (incremental: only
  new or changed files move, files gone from the source are deleted on the target) and reports
  the bytes and files it moved;
- :func:`check` proves the copy: every file on both sides compared by size and MD5 (rclone's
  common hash for two local folders), in both directions (``--one-way`` would miss a file that
  exists only on the target); a check that could not use a hash is refused, never trusted;
- :func:`snapshot` / :func:`restore`: the source folder as it was right after the freeze,
  kept beside it so a rollback can put it back.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

# Same folder flags for every copy: empty folders and symlinks are part of a volume, and
# file mode, owner and times (rclone's local metadata) travel with the files.
COPY_FLAGS = ("--create-empty-src-dirs", "--links", "--metadata")
# No rclone.conf is read or needed: both ends are local paths.
COMMON_FLAGS = ("--config", "", "--use-json-log", "--verbose", "--stats", "1h")
SNAPSHOT_SUFFIX = ".slipway-pre-cutover"
# rclone check's --combined output: one line per file, the first character says what it found.
COMBINED = {"=": "identical", "*": "differs", "+": "missing on the target", "-": "only on the target"}
ERROR = "!"


class RcloneError(RuntimeError):
    """rclone could not run, or failed for a reason other than differences it found."""


@dataclass(frozen=True)
class PassStats:
    """What one sync pass moved (from rclone's final stats)."""

    bytes: int
    files: int
    deletes: int
    checks: int
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class CheckResult:
    """``rclone check`` over both folders: the files that are not identical, with why."""

    matching: int
    differences: dict[str, str] = field(
        default_factory=dict
    )  # path -> "differs", "missing on the target", ...

    @property
    def ok(self) -> bool:
        return not self.differences

    def describe(self, limit: int = 10) -> str:
        shown = [f"{path} ({why})" for path, why in sorted(self.differences.items())[:limit]]
        more = len(self.differences) - limit
        return ", ".join(shown) + (f" and {more} more" if more > 0 else "")


def rclone_binary() -> str:
    """The rclone on PATH (``make system-deps`` installs Debian's)."""
    found = shutil.which("rclone")
    if found is None:
        raise RcloneError("rclone is not installed: run `make system-deps` (Debian package rclone)")
    return found


def _folder(path: Path) -> str:
    # An absolute path is always a local folder to rclone, also when it holds a colon.
    if not path.is_absolute():
        raise RcloneError(f"{path} is relative: rclone is given absolute volume paths only")
    return str(path)


def _run(args: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
    try:
        # A fixed binary and a list of arguments: no shell ever sees a volume path.
        return subprocess.run(
            [rclone_binary(), *args, *COMMON_FLAGS],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as err:
        raise RcloneError(f"rclone {args[0]} did not finish in {timeout:.0f} s") from err


def _log(stderr: str) -> list[dict[str, Any]]:
    lines = []
    for line in stderr.splitlines():
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            continue  # rclone prints its final "Failed to ..." line as plain text
        if isinstance(entry, dict):
            lines.append(entry)
    return lines


def _errors(stderr: str) -> str:
    errors = [
        f"{e.get('object', '')}: {e.get('msg', '')}".strip(": ")
        for e in _log(stderr)
        if e.get("level") == "error"
    ]
    tail = stderr.strip().splitlines()[-1:] if stderr.strip() else []
    return "; ".join(errors[:5]) or " ".join(tail) or "no output"


def sync(source: Path, target: Path, *, checksum: bool = False, timeout: float = 3600) -> PassStats:
    """One incremental pass: make ``target`` equal to ``source`` (repeatable; an unchanged source
    moves nothing). Files are compared by size and modification time, which rclone preserves;
    with ``checksum`` by size and hash, which also repairs a copy changed behind rclone's back
    (same size and time) at the cost of reading both sides. :func:`check` is the proof, not this."""
    if not source.is_dir():
        raise RcloneError(f"source volume folder {source} does not exist")
    target.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    compare = ["--checksum"] if checksum else []
    done = _run(["sync", _folder(source), _folder(target), *COPY_FLAGS, *compare], timeout)
    if done.returncode != 0:
        raise RcloneError(
            f"rclone sync {source} -> {target} failed (exit {done.returncode}): {_errors(done.stderr)}"
        )
    stats = next((e["stats"] for e in reversed(_log(done.stderr)) if isinstance(e.get("stats"), dict)), None)
    if stats is None:
        raise RcloneError(f"rclone sync {source} -> {target} printed no final stats")
    return PassStats(
        bytes=int(stats.get("bytes", 0)),
        files=int(stats.get("transfers", 0)),
        deletes=int(stats.get("deletes", 0)),
        checks=int(stats.get("checks", 0)),
        seconds=round(time.monotonic() - started, 3),
    )


def check(source: Path, target: Path, *, timeout: float = 3600) -> CheckResult:
    """Compare every file of both folders by size and hash, both ways; list what is not identical."""
    for side in (source, target):
        if not side.is_dir():
            return CheckResult(0, {str(side): "volume folder does not exist"})
    done = _run(["check", _folder(source), _folder(target), "--links", "--combined", "-"], timeout)
    log = _log(done.stderr)
    if any("no common hash" in str(e.get("msg", "")).lower() for e in log):
        raise RcloneError(f"rclone check {source} {target} found no common hash: sizes alone prove nothing")
    matching, differences = 0, {}
    for line in done.stdout.splitlines():
        mark, _, path = line.partition(" ")
        if mark == "=":
            matching += 1
        elif mark in COMBINED:
            differences[path] = COMBINED[mark]
        elif mark == ERROR:
            differences[path] = "could not be read or hashed"
    if done.returncode != 0 and not differences:
        raise RcloneError(
            f"rclone check {source} {target} failed (exit {done.returncode}): {_errors(done.stderr)}"
        )
    return CheckResult(matching, differences)


def snapshot_path(volume: Path, tag: str) -> Path:
    """Where the pre-cutover snapshot of ``volume`` taken at freeze ``tag`` lives: beside it, on
    the same disk (a node's disk on a real cluster)."""
    return volume.with_name(f"{volume.name}{SNAPSHOT_SUFFIX}-{tag}")


def snapshot(volume: Path, tag: str, *, timeout: float = 3600) -> tuple[Path, bool]:
    """Copy ``volume`` to its snapshot folder once per freeze.

    Written under a ``.partial`` name and renamed when complete, so an existing snapshot is a
    whole one: a second call (a cleared task) keeps it and returns ``(path, False)``.
    """
    final = snapshot_path(volume, tag)
    if final.is_dir():
        return final, False
    partial = final.with_name(final.name + ".partial")
    sync(volume, partial, timeout=timeout)
    os.replace(partial, final)
    return final, True


def restore(volume: Path, tag: str, *, timeout: float = 3600) -> PassStats:
    """Put the snapshot of freeze ``tag`` back into ``volume`` (exact copy, proven by :func:`check`)."""
    saved = snapshot_path(volume, tag)
    if not saved.is_dir():
        raise RcloneError(f"no pre-cutover snapshot {saved} to restore {volume} from")
    moved = sync(saved, volume, checksum=True, timeout=timeout)
    proof = check(saved, volume, timeout=timeout)
    if not proof.ok:
        raise RcloneError(f"restored {volume} differs from its snapshot: {proof.describe()}")
    return moved
