"""Durations as people say them: ``45 s``, ``3 min 12 s``, ``1 h 31 min``, ``2 d 4 h``."""

from __future__ import annotations

import math


def human_duration(seconds: float) -> str:
    """Rounded to the second below a minute, then to two units; under a second is ``<1 s``."""
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"a duration is finite and not negative, got {seconds}")
    if 0 < seconds < 0.5:
        return "<1 s"
    total = round(seconds)
    if total < 60:
        return f"{total} s"
    minutes, secs = divmod(total, 60)
    if minutes < 60:
        return f"{minutes} min {secs} s" if secs else f"{minutes} min"
    # Above an hour, seconds are noise: round to the minute.
    minutes = round(seconds / 60)
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours} h" if hours else f"{days} d"
