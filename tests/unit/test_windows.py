"""Unit tests for maintenance windows, blackouts and duration prediction."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta

import pytest

from slipway.windows import (
    Blackout,
    MaintenanceSchedule,
    MaintenanceWindow,
    parse_blackouts,
    parse_windows,
    predict_duration,
    slow_progress,
)


def at(text: str) -> datetime:
    """An aware UTC instant from ISO text, so expectations read like a timeline."""
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def schedule(*entries: str, blackouts: tuple[str, ...] = ()) -> MaintenanceSchedule:
    """A schedule from compact window and blackout entries."""
    return MaintenanceSchedule(parse_windows(entries), parse_blackouts(blackouts))


class TestParse:
    def test_end_form_and_duration_form(self) -> None:
        saturday, sunday = parse_windows(["Sat 01:00-05:00 Europe/Berlin", "Sun 02:00+3h UTC"])
        assert saturday == MaintenanceWindow(frozenset({5}), time(1), timedelta(hours=4), "Europe/Berlin")
        assert sunday == MaintenanceWindow(frozenset({6}), time(2), timedelta(hours=3), "UTC")

    @pytest.mark.parametrize(
        ("entry", "days", "duration"),
        [
            ("Mon-Fri 22:00-02:00 UTC", {0, 1, 2, 3, 4}, timedelta(hours=4)),
            ("Fri-Mon 23:30+1h30m UTC", {4, 5, 6, 0}, timedelta(minutes=90)),
            ("sat,SUN 00:00-24:00 UTC", {5, 6}, timedelta(hours=24)),
            ("daily 03:00+90m UTC", set(range(7)), timedelta(minutes=90)),
            ("Sat 00:00+2d UTC", {5}, timedelta(days=2)),
        ],
    )
    def test_day_ranges_and_durations(self, entry: str, days: set[int], duration: timedelta) -> None:
        (window,) = parse_windows([entry])
        assert (set(window.weekdays), window.duration) == (days, duration)

    @pytest.mark.parametrize(
        ("entry", "why"),
        [
            ("Sat 01:00-05:00", "expected 'DAYS"),
            ("Caturday 01:00-05:00 UTC", "'caturday' is not a day"),
            ("Sat 25:00-05:00 UTC", "25:00 is not a time of day"),
            ("Sat 01:60-05:00 UTC", "01:60 is not a time of day"),
            ("Sat 01:00-01:00 UTC", "start and end are equal"),
            ("Sat 24:00+1h UTC", "cannot start at 24:00"),
            ("Sat 01:00~05:00 UTC", "is not HH:MM-HH:MM"),
            ("Sat 01:00+3x UTC", "duration '3x'"),
            ("Sat 01:00+8d UTC", "at most 7 days"),
            ("Sat 01:00-05:00 Mars/Olympus_Mons", "unknown timezone 'Mars/Olympus_Mons'"),
        ],
    )
    def test_bad_entry_named_with_reason(self, entry: str, why: str) -> None:
        with pytest.raises(ValueError, match="maintenance window") as caught:
            parse_windows(["Sun 02:00+3h UTC", entry])
        assert repr(entry) in str(caught.value)
        assert why in str(caught.value)

    def test_blackouts(self) -> None:
        single, span = parse_blackouts(["2026-11-27", "2026-12-24..2027-01-01 Europe/Berlin"])
        assert single == Blackout(date(2026, 11, 27), date(2026, 11, 27), "UTC")
        assert span == Blackout(date(2026, 12, 24), date(2027, 1, 1), "Europe/Berlin")
        assert span.span() == (at("2026-12-23T23:00"), at("2027-01-01T23:00"))

    @pytest.mark.parametrize(
        ("entry", "why"),
        [
            ("2026-13-01", "month"),
            ("2026-12-24..2026-12-01", "before it starts"),
            ("2026-12-24 Nowhere", "timezone"),
        ],
    )
    def test_bad_blackout_named(self, entry: str, why: str) -> None:
        with pytest.raises(ValueError, match=why) as caught:
            parse_blackouts([entry])
        assert repr(entry) in str(caught.value)

    def test_windows_validate_their_fields(self) -> None:
        with pytest.raises(ValueError, match="weekdays"):
            MaintenanceWindow(frozenset({7}), time(1), timedelta(hours=1), "UTC")
        with pytest.raises(ValueError, match="duration"):
            MaintenanceWindow(frozenset({1}), time(1), timedelta(0), "UTC")
        with pytest.raises(ValueError, match="at least one window"):
            MaintenanceSchedule(())


class TestSchedule:
    def test_next_window_and_inside(self) -> None:
        weekly = schedule("Sat 01:00-05:00 UTC")
        assert weekly.next_window(at("2026-01-02T12:00")) == (at("2026-01-03T01:00"), at("2026-01-03T05:00"))
        # Inside a window the current one is returned, so callers see how long is left.
        assert weekly.next_window(at("2026-01-03T02:00")) == (at("2026-01-03T01:00"), at("2026-01-03T05:00"))
        assert weekly.is_inside(at("2026-01-03T01:00"))
        assert not weekly.is_inside(at("2026-01-03T05:00"))
        # At the closing instant the window is over: the next one is a week later.
        assert weekly.next_window(at("2026-01-03T05:00"))[0] == at("2026-01-10T01:00")
        assert weekly.remaining(at("2026-01-03T04:30")) == timedelta(minutes=30)
        assert weekly.remaining(at("2026-01-03T06:00")) == timedelta(0)

    def test_window_across_midnight(self) -> None:
        nightly = schedule("Fri 22:00-02:00 UTC")
        assert nightly.next_window(at("2026-01-02T12:00")) == (at("2026-01-02T22:00"), at("2026-01-03T02:00"))
        # Saturday 01:00 belongs to Friday's window, though Saturday is not a listed day.
        assert nightly.is_inside(at("2026-01-03T01:00"))
        assert nightly.remaining(at("2026-01-03T01:00")) == timedelta(hours=1)

    def test_touching_windows_merge(self) -> None:
        weekend = schedule("Sat 22:00-24:00 UTC", "Sun 00:00-03:00 UTC")
        assert weekend.next_window(at("2026-01-03T12:00")) == (at("2026-01-03T22:00"), at("2026-01-04T03:00"))
        assert weekend.remaining(at("2026-01-03T23:00")) == timedelta(hours=4)

    def test_local_time_follows_the_zone(self) -> None:
        berlin = schedule("Sat 01:00-05:00 Europe/Berlin")
        assert berlin.next_window(at("2026-01-02T00:00")) == (at("2026-01-03T00:00"), at("2026-01-03T04:00"))
        assert berlin.next_window(at("2026-07-01T00:00")) == (at("2026-07-03T23:00"), at("2026-07-04T03:00"))

    @pytest.mark.parametrize(
        ("entry", "after", "start", "end"),
        [
            # Spring forward: 01:00 CET to 05:00 CEST is three real hours.
            ("Sun 01:00-05:00 Europe/Berlin", "2026-03-28T12:00", "2026-03-29T00:00", "2026-03-29T03:00"),
            # Fall back: 01:00 CEST to 05:00 CET is five real hours.
            ("Sun 01:00-05:00 Europe/Berlin", "2026-10-24T12:00", "2026-10-24T23:00", "2026-10-25T04:00"),
            # 02:30 never happens on the spring night: the window opens when the clocks jump.
            ("Sun 02:30-04:00 Europe/Berlin", "2026-03-28T12:00", "2026-03-29T01:00", "2026-03-29T02:00"),
            ("Sun 02:30+1h Europe/Berlin", "2026-03-28T12:00", "2026-03-29T01:00", "2026-03-29T01:30"),
            # 02:30 happens twice on the autumn night: the first one counts.
            ("Sun 02:30-04:00 Europe/Berlin", "2026-10-24T12:00", "2026-10-25T00:30", "2026-10-25T03:00"),
        ],
    )
    def test_daylight_saving(self, entry: str, after: str, start: str, end: str) -> None:
        assert schedule(entry).next_window(at(after)) == (at(start), at(end))

    def test_window_wholly_inside_a_dst_gap_is_skipped(self) -> None:
        gap = schedule("Sun 02:10-02:40 Europe/Berlin")
        assert gap.next_window(at("2026-03-28T12:00"))[0] == at("2026-04-05T00:10")

    def test_blackout_day_skips_the_window(self) -> None:
        frozen = schedule("Sat 01:00-05:00 UTC", blackouts=("2026-01-03",))
        assert frozen.next_window(at("2026-01-02T12:00"))[0] == at("2026-01-10T01:00")
        assert not frozen.is_inside(at("2026-01-03T02:00"))

    def test_blackout_touching_a_midnight_window_drops_it_whole(self) -> None:
        frozen = schedule("Fri 22:00-02:00 UTC", blackouts=("2026-01-03",))
        assert not frozen.is_inside(at("2026-01-02T23:00"))
        assert frozen.next_window(at("2026-01-02T12:00"))[0] == at("2026-01-09T22:00")

    def test_blackout_in_its_own_zone(self) -> None:
        # Saturday in Auckland (UTC+13) runs from Friday 11:00 to Saturday 11:00 UTC.
        frozen = schedule("Sat 01:00-05:00 UTC", blackouts=("2026-01-03 Pacific/Auckland",))
        assert frozen.next_window(at("2026-01-02T00:00"))[0] == at("2026-01-10T01:00")

    def test_everything_blacked_out(self) -> None:
        frozen = schedule(
            "daily 01:00+1h UTC", blackouts=("2026-01-01..2026-12-31", "2027-01-01..2027-12-31")
        )
        with pytest.raises(LookupError, match="no maintenance window"):
            frozen.next_window(at("2026-01-02T00:00"))
        # Asking whether a window is open is no error: none is.
        assert frozen.remaining(at("2026-01-02T01:30")) == timedelta(0)
        assert not frozen.is_inside(at("2026-01-02T01:30"))

    def test_a_timetable_whose_windows_are_all_blacked_out_schedules_nothing(self) -> None:
        from airflow.timetables.base import TimeRestriction
        from pendulum import instance

        from slipway.airflow.timetable import MaintenanceWindowTimetable

        table = MaintenanceWindowTimetable(
            ["daily 01:00+1h UTC"], ["2026-01-01..2026-12-31", "2027-01-01..2027-12-31"]
        )
        manual = table.infer_manual_data_interval(run_after=instance(at("2026-01-02T01:30")))
        assert manual.start == manual.end == at("2026-01-02T01:30")  # no window: an empty interval
        restriction = TimeRestriction(earliest=instance(at("2026-01-02T00:00")), latest=None, catchup=True)
        assert table.next_dagrun_info(last_automated_data_interval=None, restriction=restriction) is None

    def test_naive_time_refused(self) -> None:
        with pytest.raises(ValueError, match="no timezone"):
            schedule("Sat 01:00-05:00 UTC").is_inside(datetime(2026, 1, 3, 2))


class TestFits:
    WEEKLY = schedule("Sat 01:00-05:00 UTC")

    def test_fits_only_when_work_and_margin_finish_in_time(self) -> None:
        two_am = at("2026-01-03T02:00")
        assert self.WEEKLY.fits(two_am, timedelta(hours=2))
        assert self.WEEKLY.fits(two_am, timedelta(hours=2, minutes=50))
        assert not self.WEEKLY.fits(two_am, timedelta(hours=2, minutes=51))
        assert self.WEEKLY.fits(two_am, timedelta(hours=3), margin=timedelta(0))

    def test_never_fits_outside_a_window(self) -> None:
        assert not self.WEEKLY.fits(at("2026-01-03T06:00"), timedelta(minutes=1))

    def test_next_start_skips_windows_too_short(self) -> None:
        assert self.WEEKLY.next_start(at("2026-01-03T02:00"), timedelta(hours=3)) == at("2026-01-10T01:00")
        assert self.WEEKLY.next_start(at("2026-01-03T02:00"), timedelta(hours=1)) == at("2026-01-03T02:00")
        with pytest.raises(LookupError, match="long enough"):
            self.WEEKLY.next_start(at("2026-01-03T02:00"), timedelta(hours=4))


class TestPredictDuration:
    def test_median_per_batch_plus_soak(self) -> None:
        # Median 600 s; 10 nodes in batches of 3 = 4 batches of 600 s + 30 s soak.
        assert predict_duration([300, 600, 9000], nodes=10, batch_size=3, soak_seconds=30) == timedelta(
            seconds=2520
        )

    def test_conservative_without_history(self) -> None:
        assert predict_duration([], nodes=2, batch_size=1, soak_seconds=30) == timedelta(seconds=2 * 930)

    def test_nothing_to_do(self) -> None:
        assert predict_duration([600], nodes=0, batch_size=1, soak_seconds=30) == timedelta(0)

    @pytest.mark.parametrize(
        ("history", "nodes", "batch"), [([600], -1, 1), ([600], 3, 0), ([0.0], 3, 1), ([float("nan")], 3, 1)]
    )
    def test_bad_inputs_refused(self, history: list[float], nodes: int, batch: int) -> None:
        with pytest.raises(ValueError):
            predict_duration(history, nodes=nodes, batch_size=batch, soak_seconds=30)


def test_slow_progress_is_judged_against_the_batches_before() -> None:
    assert slow_progress([60.0], 500.0) is None  # one batch is no history
    assert slow_progress([60.0, 70.0, 50.0], 120.0) is None  # 2x is still usual
    warning = slow_progress([60.0, 70.0, 50.0], 150.0)
    assert warning == (
        "150s per node, 2.5x the median 60s of the 3 batches before: "
        "the remaining batches may not fit the window"
    )
