"""Game-day faults on a stopped member's files: the real damage a rollback must survive.

bbolt pages carry no checksum, so a value changed in place (same length) is read back as
it is: the member serves the changed value and its ``hashkv`` differs from its peers', as
after a flipped bit on its disk. Used only by the local platform's fault injection.
"""

from __future__ import annotations

import mmap
from pathlib import Path


def overwrite_in_place(path: Path, old: bytes, new: bytes) -> int:
    """Replace every occurrence of ``old`` in ``path`` with ``new`` (same length), in place.

    :returns: how many places changed.
    :raises ValueError: when the lengths differ (that would shift every page) or ``old`` is empty.
    :raises LookupError: when ``old`` is not in the file (nothing to damage).
    """
    if not old or len(old) != len(new):
        raise ValueError(
            f"overwrite_in_place: old and new must be non-empty and of one length ({old!r}, {new!r})"
        )
    changed = 0
    with path.open("r+b") as fh, mmap.mmap(fh.fileno(), 0) as view:
        at = view.find(old)
        while at != -1:
            view[at : at + len(new)] = new
            changed += 1
            at = view.find(old, at + len(new))
        view.flush()
    if not changed:
        raise LookupError(f"{old!r} is not in {path}: nothing to change")
    return changed
