"""Maintenance windows and blackouts (§2.1 timing): when work may start, and whether it fits.

Windows are wall-clock times in a named timezone, so ``Sat 01:00-05:00 Europe/Berlin`` always
opens at 01:00 Berlin time; on a DST night it is an hour shorter or longer in real time.
A window edge inside a DST gap moves to the instant the clocks jump; an ambiguous edge
(clocks going back) is its first occurrence. All instants returned are timezone-aware UTC;
naive inputs are refused.
"""

from __future__ import annotations

import math
import re
import statistics
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

_DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_MAX_DURATION = timedelta(days=7)
# Bounds on what a schedule may declare, far above any real one; they keep every date
# computation inside what datetime can represent and every search finite.
MAX_WINDOWS = 50
MAX_BLACKOUTS = 100
MAX_ENTRY_LENGTH = 200
MAX_BLACKOUT_DAYS = 366
FIRST_YEAR, LAST_YEAR = 2000, 2199
# A window may open up to a week before the instant asked about and still be open.
_LOOKBACK = timedelta(days=8)
SEARCH_DAYS = 400
# With no history, assume a drain that runs to its 600 s timeout plus 300 s to upgrade and
# become Ready: better to wait for a longer window than to overrun this one.
DEFAULT_SECONDS_PER_NODE = 900.0


class WindowError(ValueError):
    """A maintenance window or blackout entry was refused; the message starts with the field
    (``windows[1]``, ``blackouts[0]``) and says why, on one line."""


def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown timezone {name!r} (use an IANA name like UTC or Europe/Berlin)") from None


def _instant(wall: datetime, zone: ZoneInfo) -> datetime:
    """The UTC instant a naive wall-clock time in ``zone`` stands for.

    An ambiguous time (clocks going back) is its first occurrence. A time inside a DST gap
    never happens; the clocks jump over it, so the instant is that jump.
    """
    first = wall.replace(tzinfo=zone).astimezone(UTC)
    if first.astimezone(zone).replace(tzinfo=None) == wall:
        return first
    # fold=1 reads the gap time with the new offset, fold=0 with the old one: the jump lies
    # between the two. Bisect on whole seconds, as zone transitions are.
    low = int(wall.replace(tzinfo=zone, fold=1).timestamp())
    high = int(first.timestamp())
    new_offset = first.astimezone(zone).utcoffset()
    while high - low > 1:
        middle = (low + high) // 2
        if datetime.fromtimestamp(middle, zone).utcoffset() == new_offset:
            high = middle
        else:
            low = middle
    return datetime.fromtimestamp(high, UTC)


def _utc(moment: datetime, what: str = "time") -> datetime:
    if moment.utcoffset() is None:
        raise ValueError(f"{what} {moment.isoformat()} has no timezone; pass an aware datetime")
    return moment.astimezone(UTC)


@dataclass(frozen=True)
class MaintenanceWindow:
    """A weekly window: on ``weekdays`` (0 = Monday) from ``start`` for ``duration``, in ``timezone``."""

    weekdays: frozenset[int]
    start: time
    duration: timedelta
    timezone: str

    def __post_init__(self) -> None:
        if not self.weekdays or not self.weekdays <= set(range(7)):
            raise ValueError(f"weekdays must be a non-empty subset of 0-6, got {sorted(self.weekdays)}")
        if not timedelta(0) < self.duration <= _MAX_DURATION:
            raise ValueError(f"duration must be above 0 and at most 7 days, got {self.duration}")
        _zone(self.timezone)

    def occurrences(self, first: date, last: date) -> Iterator[tuple[datetime, datetime]]:
        """``(start, end)`` in UTC of every occurrence opening on a local date in ``[first, last]``."""
        zone = _zone(self.timezone)
        day = first
        while day <= last:
            if day.weekday() in self.weekdays:
                # Both edges are wall-clock times: the window closes at local start + duration.
                wall = datetime.combine(day, self.start)
                yield _instant(wall, zone), _instant(wall + self.duration, zone)
            day += timedelta(days=1)


@dataclass(frozen=True)
class Blackout:
    """Dates (``first`` to ``last`` inclusive, local to ``timezone``) on which no window opens."""

    first: date
    last: date
    timezone: str = "UTC"
    reason: str = ""

    def __post_init__(self) -> None:
        if self.last < self.first:
            raise ValueError(f"blackout ends ({self.last}) before it starts ({self.first})")
        for day in (self.first, self.last):
            if not FIRST_YEAR <= day.year <= LAST_YEAR:
                raise ValueError(f"{day} is outside the years {FIRST_YEAR} to {LAST_YEAR}")
        if (self.last - self.first).days + 1 > MAX_BLACKOUT_DAYS:
            # Longer than a year is not a change freeze but a schedule with no windows.
            days = (self.last - self.first).days + 1
            raise ValueError(f"blackout of {days} days is longer than {MAX_BLACKOUT_DAYS} days")
        _zone(self.timezone)

    def span(self) -> tuple[datetime, datetime]:
        """The blackout as a UTC ``[start, end)`` interval."""
        zone = _zone(self.timezone)
        start = datetime.combine(self.first, time(0))
        return _instant(start, zone), _instant(datetime.combine(self.last + timedelta(days=1), time(0)), zone)


@dataclass(frozen=True)
class MaintenanceSchedule:
    """Windows minus blackouts. Overlapping or touching windows count as one open stretch."""

    windows: tuple[MaintenanceWindow, ...]
    blackouts: tuple[Blackout, ...] = ()

    def __post_init__(self) -> None:
        if not self.windows:
            raise WindowError("windows: a maintenance schedule needs at least one window")

    def _open_stretches(self, after: datetime) -> Iterator[tuple[datetime, datetime]]:
        """Merged, blackout-free stretches that end after ``after``, in order."""
        first = (after - _LOOKBACK).date()
        last = (after + timedelta(days=SEARCH_DAYS)).date()
        closed = [blackout.span() for blackout in self.blackouts]
        # A window touching a blackout is dropped whole: a change freeze means no work at all.
        # One lying wholly inside a DST gap has no length and is dropped too.
        spans = sorted(
            (start, end)
            for window in self.windows
            for start, end in window.occurrences(first, last)
            if start < end and not any(start < b_end and b_start < end for b_start, b_end in closed)
        )
        current: tuple[datetime, datetime] | None = None
        for start, end in spans:
            if current is not None and start <= current[1]:
                current = (current[0], max(current[1], end))
                continue
            if current is not None and current[1] > after:
                yield current
            current = (start, end)
        if current is not None and current[1] > after:
            yield current

    def next_window(self, after: datetime) -> tuple[datetime, datetime]:
        """The open stretch containing ``after``, or else the next one, as UTC ``(start, end)``.

        :raises LookupError: when no window opens within :data:`SEARCH_DAYS` days.
        """
        moment = _utc(after, "after")
        for stretch in self._open_stretches(moment):
            return stretch
        raise LookupError(f"no maintenance window opens within {SEARCH_DAYS} days of {moment.isoformat()}")

    def is_inside(self, moment: datetime) -> bool:
        """Whether ``moment`` falls inside an open window (start inclusive, end exclusive)."""
        return self.remaining(moment) > timedelta(0)

    def remaining(self, moment: datetime) -> timedelta:
        """Time left in the window open at ``moment``; zero when none is open (blackouts may
        close every window for the whole search horizon: that is zero too, not an error)."""
        moment = _utc(moment)
        try:
            start, end = self.next_window(moment)
        except LookupError:
            return timedelta(0)
        return end - moment if start <= moment else timedelta(0)

    def fits(self, moment: datetime, predicted: timedelta, margin: timedelta = timedelta(minutes=10)) -> bool:
        """Whether work of ``predicted`` length plus ``margin`` can start at ``moment`` and finish in time."""
        return self.is_inside(moment) and predicted + margin <= self.remaining(moment)

    def next_start(
        self, after: datetime, predicted: timedelta, margin: timedelta = timedelta(minutes=10)
    ) -> datetime:
        """The earliest instant at or after ``after`` where :meth:`fits` holds.

        :raises LookupError: when no window within :data:`SEARCH_DAYS` days is long enough.
        """
        moment = _utc(after, "after")
        for start, end in self._open_stretches(moment):
            begin = max(start, moment)
            if predicted + margin <= end - begin:
                return begin
        raise LookupError(
            f"no maintenance window within {SEARCH_DAYS} days is long enough for {predicted} "
            f"plus {margin} margin"
        )


_SPAN = re.compile(r"^(?P<start>\d{1,2}:\d{2})(?:-(?P<end>\d{1,2}:\d{2})|\+(?P<duration>.+))$")
# Few digits: a duration is at most 7 days, and a huge number must not overflow timedelta.
_DURATION = re.compile(r"^(?:(?P<days>\d{1,2})d)?(?:(?P<hours>\d{1,3})h)?(?:(?P<minutes>\d{1,5})m)?$")


def _clock(text: str) -> timedelta:
    hours, _, minutes = text.partition(":")
    if int(minutes) > 59 or int(hours) > 24 or (int(hours) == 24 and int(minutes) > 0):
        raise ValueError(f"{text} is not a time of day")
    return timedelta(hours=int(hours), minutes=int(minutes))


def _weekdays(text: str) -> frozenset[int]:
    if text.lower() in ("daily", "*"):
        return frozenset(range(7))
    days: set[int] = set()
    for part in text.lower().split(","):
        first, dash, last = part.partition("-")
        if first not in _DAYS or (dash and last not in _DAYS):
            raise ValueError(f"{part!r} is not a day or day range (Mon..Sun, Mon-Fri, Sat,Sun, daily)")
        begin, end = _DAYS.index(first), _DAYS.index(last if dash else first)
        # Fri-Mon wraps over the weekend.
        days.update((begin + step) % 7 for step in range((end - begin) % 7 + 1))
    return frozenset(days)


def _entry_text(entry: object) -> str:
    if not isinstance(entry, str):
        raise ValueError(f"must be a string, got {type(entry).__name__}")
    if len(entry) > MAX_ENTRY_LENGTH:
        raise ValueError(f"is {len(entry)} characters long; at most {MAX_ENTRY_LENGTH}")
    return entry


def _parse_window(entry: str) -> MaintenanceWindow:
    parts = _entry_text(entry).split()
    if len(parts) != 3:
        raise ValueError("expected 'DAYS HH:MM-HH:MM TIMEZONE' or 'DAYS HH:MM+3h TIMEZONE'")
    days, span, zone = parts
    match = _SPAN.match(span)
    if match is None:
        raise ValueError(f"{span!r} is not HH:MM-HH:MM or HH:MM+DURATION")
    start = _clock(match["start"])
    if start >= timedelta(days=1):
        raise ValueError("a window cannot start at 24:00; write 00:00 on the next day")
    if match["end"] is not None:
        end = _clock(match["end"])
        if end == start:
            raise ValueError("start and end are equal; write DAYS HH:MM+24h for a whole day")
        # An end before the start means the window runs past midnight.
        duration = end - start if end > start else end - start + timedelta(days=1)
    else:
        found = _DURATION.match(match["duration"])
        if found is None or not any(found.groups()):
            raise ValueError(f"duration {match['duration']!r} is not like 3h, 90m, 1h30m or 2d")
        duration = timedelta(**{unit: int(value) for unit, value in found.groupdict().items() if value})
    return MaintenanceWindow(
        weekdays=_weekdays(days),
        start=time(start.seconds // 3600, start.seconds // 60 % 60),
        duration=duration,
        timezone=zone,
    )


def parse_windows(entries: Sequence[str]) -> tuple[MaintenanceWindow, ...]:
    """Parse compact window entries such as ``"Sat 01:00-05:00 Europe/Berlin"`` or ``"Sun 02:00+3h UTC"``.

    Days may be ``Mon``, ``Mon-Fri``, ``Fri-Mon``, ``Sat,Sun`` or ``daily``.

    :raises WindowError: ``windows[i]: maintenance window 'entry': why``, on one line.
    """
    if isinstance(entries, str) or len(entries) > MAX_WINDOWS:
        raise WindowError(f"windows: a list of at most {MAX_WINDOWS} entries, got {_count(entries)}")
    windows = []
    for i, entry in enumerate(entries):
        try:
            windows.append(_parse_window(entry))
        except ValueError as exc:
            raise WindowError(f"windows[{i}]: maintenance window {_show(entry)}: {exc}") from None
    return tuple(windows)


def _show(entry: object) -> str:
    text = repr(entry)
    return text if len(text) <= 60 else f"{text[:57]}..."


def _count(entries: object) -> str:
    return "a string" if isinstance(entries, str) else f"{len(entries)} entries"  # type: ignore[arg-type]


def parse_blackouts(entries: Sequence[str]) -> tuple[Blackout, ...]:
    """Parse blackout entries: ``"2026-12-24"``, ``"2026-12-24..2027-01-01 Europe/Berlin"``.

    :raises WindowError: ``blackouts[i]: blackout 'entry': why``, on one line.
    """
    if isinstance(entries, str) or len(entries) > MAX_BLACKOUTS:
        raise WindowError(f"blackouts: a list of at most {MAX_BLACKOUTS} entries, got {_count(entries)}")
    blackouts = []
    for i, entry in enumerate(entries):
        try:
            dates, _, zone = _entry_text(entry).strip().partition(" ")
            first, _, last = dates.partition("..")
            start = date.fromisoformat(first)
            end = date.fromisoformat(last) if last else start
            blackouts.append(Blackout(start, end, zone.strip() or "UTC"))
        except ValueError as exc:
            raise WindowError(f"blackouts[{i}]: blackout {_show(entry)}: {exc}") from None
    return tuple(blackouts)


def predict_duration(history: Sequence[float], nodes: int, batch_size: int, soak_seconds: int) -> timedelta:
    """Predict how long upgrading ``nodes`` workers takes, from past seconds-per-node figures.

    Nodes in a batch are upgraded together, so a batch takes about one node's time (the median
    of ``history``, or :data:`DEFAULT_SECONDS_PER_NODE` without history) plus its soak.
    """
    if nodes < 0 or batch_size < 1 or soak_seconds < 0:
        raise ValueError(
            f"need nodes >= 0, batch_size >= 1, soak_seconds >= 0; got {nodes}, {batch_size}, {soak_seconds}"
        )
    if any(not math.isfinite(seconds) or seconds <= 0 for seconds in history):
        raise ValueError("history must hold positive, finite seconds per node")
    per_node = statistics.median(history) if history else DEFAULT_SECONDS_PER_NODE
    batches = math.ceil(nodes / batch_size)
    return timedelta(seconds=batches * (per_node + soak_seconds))


SLOW_FACTOR = 2.0  # a batch this many times slower per node than usual is worth a warning
MIN_HISTORY = 2


def slow_progress(history: Sequence[float], seconds_per_node: float) -> str | None:
    """§4.2's "slow progress" warning: this batch's seconds per node against the median of
    the batches before it (None without enough history, or when it is not slow)."""
    if len(history) < MIN_HISTORY:
        return None
    usual = statistics.median(history)
    if seconds_per_node <= SLOW_FACTOR * usual:
        return None
    return (
        f"{seconds_per_node:.0f}s per node, {seconds_per_node / usual:.1f}x the median {usual:.0f}s "
        f"of the {len(history)} batches before: the remaining batches may not fit the window"
    )


# Per-phase prediction from the cluster's own run history (run records), or a stated model.
# The stated model is deliberately cautious; once the cluster has finished one upgrade, its
# own figures replace it (a 5x overestimate wastes windows as surely as an underestimate
# overruns them).
STATED_MODEL = {
    "preparation": 120.0,  # per run: inventory, preflight checks, risk assessment
    "etcd backup": 300.0,  # per run: snapshot plus its restore drill
    "control plane": 180.0,  # per component: stop, start at the target, wait for healthy
    "workers": DEFAULT_SECONDS_PER_NODE,  # per batch, before its soak
    "validation": 120.0,  # per run: the post-upgrade health checks
}
PHASE_ORDER = tuple(STATED_MODEL)


@dataclass(frozen=True)
class RunFigures:
    """What one finished run measured: seconds per phase and how much work each phase did."""

    phase_seconds: dict[str, float]
    batches: int
    components: int
    soak_seconds: float


@dataclass(frozen=True)
class PhasePrediction:
    phase: str
    seconds: float
    basis: str  # "median of 3 earlier runs" or "stated model: ..."


def _per_unit(phase: str, run: RunFigures) -> float | None:
    """One run's figure for ``phase`` in the unit the phase scales by; None when unmeasured."""
    seconds = run.phase_seconds.get(phase)
    if seconds is None or not math.isfinite(seconds) or seconds < 0:
        return None
    if phase == "control plane":
        return seconds / run.components if run.components else None
    if phase == "workers":
        # Nodes in a batch go together, so a batch is the unit; its soak is the request's, not the cluster's.
        return max(seconds / run.batches - run.soak_seconds, 0.0) if run.batches else None
    return seconds


def batch_history(history: Sequence[RunFigures]) -> list[float]:
    """Seconds per batch (soak excluded) of each earlier run: the ``history`` that
    :func:`predict_duration` and the maintenance-window check take."""
    found = [_per_unit("workers", run) for run in history]
    # predict_duration refuses non-positive figures: a run whose batches were all soak says nothing.
    return [seconds for seconds in found if seconds]


def predict_phases(
    history: Sequence[RunFigures], *, batches: int, components: int, soak_seconds: float
) -> list[PhasePrediction]:
    """Predicted seconds per phase: the median of the cluster's earlier runs where it has
    measured the phase, else :data:`STATED_MODEL`; the last entry is the total."""
    if batches < 0 or components < 0 or soak_seconds < 0:
        raise ValueError(
            f"need batches, components, soak_seconds >= 0; got {batches}, {components}, {soak_seconds}"
        )
    work = {"control plane": components, "workers": batches}
    found = []
    for phase in PHASE_ORDER:
        measured = [v for v in (_per_unit(phase, run) for run in history) if v is not None]
        if measured:
            unit = statistics.median(measured)
            basis = _median_of(len(measured))
        else:
            unit = STATED_MODEL[phase]
            basis = "stated model"
        seconds = unit * work.get(phase, 1)
        if phase == "workers":
            seconds += batches * soak_seconds
        found.append(PhasePrediction(phase, seconds, basis))
    # Time between the phases (lease waits, approvals, task scheduling) is part of the run too;
    # only history can say how long it is.
    gaps = [gap for gap in (between_phases(run) for run in history) if gap is not None]
    if gaps:
        found.append(PhasePrediction(BETWEEN_PHASES, statistics.median(gaps), _median_of(len(gaps))))
    found.append(PhasePrediction("total", sum(p.seconds for p in found), "sum of the phases"))
    return found


BETWEEN_PHASES = "between phases"


def _median_of(runs: int) -> str:
    return f"median of {runs} earlier run{'s' if runs != 1 else ''}"


def between_phases(run: RunFigures) -> float | None:
    """Seconds of a run's total spent outside its phases; None without a total."""
    total = run.phase_seconds.get("total")
    if total is None:
        return None
    return max(total - sum(v for k, v in run.phase_seconds.items() if k in STATED_MODEL), 0.0)
