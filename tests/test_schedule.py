"""Schedule math: windows across midnight, timezones, daylight saving, drain lead, edges."""
import datetime as dt
from zoneinfo import ZoneInfo

import pytest

from components.model import config
from components.model.schedule import DailyWindow, drain_deadline_seconds

BERLIN = "Europe/Berlin"
SECOND = dt.timedelta(seconds=1)


def night(zone: str = BERLIN, lead_minutes: int = 15) -> DailyWindow:
    """The prod heavy-compute window: 18:00-06:00, drained from end minus lead."""
    return DailyWindow(dt.time(18), dt.time(6), zone, dt.timedelta(minutes=lead_minutes))


def local(zone: str, *parts: int, fold: int = 0) -> dt.datetime:
    return dt.datetime(*parts, tzinfo=ZoneInfo(zone), fold=fold)


class TestEdges:
    """On an ordinary night (no clock change) every edge is exact to the second."""

    @pytest.mark.parametrize(
        "instant, live",
        [
            ((2026, 6, 10, 17, 59, 59), False),
            ((2026, 6, 10, 18, 0, 0), True),  # start is inclusive
            ((2026, 6, 10, 23, 59, 59), True),
            ((2026, 6, 11, 0, 0, 0), True),  # across midnight
            ((2026, 6, 11, 5, 44, 59), True),
            ((2026, 6, 11, 5, 45, 0), False),  # drain start: already out of the desired state
            ((2026, 6, 11, 5, 59, 59), False),
            ((2026, 6, 11, 6, 0, 0), False),
            ((2026, 6, 11, 12, 0, 0), False),
        ],
    )
    def test_wants_live(self, instant, live):
        assert night().wants_live(local(BERLIN, *instant)) is live

    def test_current_spans_the_drain_lead_and_ends_exclusively(self):
        window = night()
        during_lead = window.current(local(BERLIN, 2026, 6, 11, 5, 59, 59))
        assert during_lead is not None
        assert during_lead.start == local(BERLIN, 2026, 6, 10, 18)
        assert during_lead.drain_start == local(BERLIN, 2026, 6, 11, 5, 45)
        assert during_lead.end == local(BERLIN, 2026, 6, 11, 6)
        assert window.current(local(BERLIN, 2026, 6, 11, 6)) is None
        assert window.current(local(BERLIN, 2026, 6, 10, 17, 59, 59)) is None

    def test_same_instant_in_another_offset_gives_the_same_answer(self):
        instant = local(BERLIN, 2026, 6, 10, 18)  # 16:00 UTC in summer
        assert night().wants_live(instant.astimezone(dt.timezone.utc))
        assert not night().wants_live((instant - SECOND).astimezone(ZoneInfo("Asia/Tokyo")))

    def test_zero_lead_drains_exactly_at_the_end(self):
        window = night(lead_minutes=0)
        assert window.wants_live(local(BERLIN, 2026, 6, 11, 5, 59, 59))
        assert not window.wants_live(local(BERLIN, 2026, 6, 11, 6))


class TestDaylightSaving:
    """Edges are wall-clock times; the real length of the night changes with the clocks."""

    @pytest.mark.parametrize(
        "zone, evening, hours, start_offset, end_offset",
        [
            # Europe: clocks go forward on 2026-03-29 and back on 2026-10-25.
            (BERLIN, dt.date(2026, 3, 28), 11, 1, 2),
            (BERLIN, dt.date(2026, 10, 24), 13, 2, 1),
            (BERLIN, dt.date(2026, 6, 10), 12, 2, 2),
            # United States: 2026-03-08 and 2026-11-01.
            ("America/New_York", dt.date(2026, 3, 7), 11, -5, -4),
            ("America/New_York", dt.date(2026, 10, 31), 13, -4, -5),
            # No daylight saving at all.
            ("Asia/Kolkata", dt.date(2026, 3, 28), 12, 5.5, 5.5),
            ("UTC", dt.date(2026, 3, 28), 12, 0, 0),
        ],
    )
    def test_real_length_and_local_edges(self, zone, evening, hours, start_offset, end_offset):
        window = night(zone)
        occurrence = window.occurrence(evening)
        assert occurrence.end - occurrence.start == dt.timedelta(hours=hours)
        assert occurrence.end - occurrence.drain_start == dt.timedelta(minutes=15)

        start, drain, end = (
            t.astimezone(ZoneInfo(zone)) for t in (occurrence.start, occurrence.drain_start, occurrence.end)
        )
        morning = evening + dt.timedelta(days=1)
        assert (start.date(), start.time()) == (evening, dt.time(18))
        assert (drain.date(), drain.time()) == (morning, dt.time(5, 45))
        assert (end.date(), end.time()) == (morning, dt.time(6))
        assert start.utcoffset() == dt.timedelta(hours=start_offset)
        assert end.utcoffset() == dt.timedelta(hours=end_offset)

    def test_spring_forward_night_in_berlin(self):
        window = night()
        # 02:30 does not exist on 2026-03-29; 01:30 UTC is 03:30 CEST, inside the night.
        assert window.wants_live(dt.datetime(2026, 3, 29, 1, 30, tzinfo=dt.timezone.utc))
        assert window.wants_live(local(BERLIN, 2026, 3, 29, 5, 44, 59))
        assert not window.wants_live(local(BERLIN, 2026, 3, 29, 5, 45))
        assert window.next_transition(local(BERLIN, 2026, 3, 28, 20)) == local(BERLIN, 2026, 3, 29, 5, 45)

    def test_fall_back_night_in_berlin(self):
        window = night()
        # 02:30 happens twice on 2026-10-25: live both times.
        assert window.wants_live(local(BERLIN, 2026, 10, 25, 2, 30, fold=0))
        assert window.wants_live(local(BERLIN, 2026, 10, 25, 2, 30, fold=1))
        assert not window.wants_live(local(BERLIN, 2026, 10, 25, 5, 45))
        assert drain_deadline_seconds(window, dt.timedelta(minutes=10), local(BERLIN, 2026, 10, 25, 5, 45)) == 900


class TestTimezones:
    @pytest.mark.parametrize(
        "zone, live",
        [
            ("UTC", True),  # 20:00
            (BERLIN, True),  # 22:00
            ("America/New_York", False),  # 16:00
            ("Asia/Kolkata", True),  # 01:30 the next morning
        ],
    )
    def test_one_instant_in_four_zones(self, zone, live):
        assert night(zone).wants_live(dt.datetime(2026, 6, 10, 20, tzinfo=dt.timezone.utc)) is live

    def test_kolkata_half_hour_offset_edges(self):
        window = night("Asia/Kolkata")
        # 18:00 IST is 12:30 UTC.
        assert not window.wants_live(dt.datetime(2026, 1, 5, 12, 29, 59, tzinfo=dt.timezone.utc))
        assert window.wants_live(dt.datetime(2026, 1, 5, 12, 30, tzinfo=dt.timezone.utc))


class TestDaytimeWindow:
    """A window that does not cross midnight."""

    window = DailyWindow(dt.time(9), dt.time(17), "America/New_York", dt.timedelta(minutes=30))

    @pytest.mark.parametrize(
        "instant, live",
        [
            ((2026, 6, 10, 8, 59, 59), False),
            ((2026, 6, 10, 9, 0, 0), True),
            ((2026, 6, 10, 16, 29, 59), True),
            ((2026, 6, 10, 16, 30, 0), False),
            ((2026, 6, 10, 17, 0, 0), False),
            ((2026, 6, 10, 23, 0, 0), False),
            ((2026, 6, 11, 0, 30, 0), False),
        ],
    )
    def test_wants_live(self, instant, live):
        assert self.window.wants_live(local("America/New_York", *instant)) is live

    @pytest.mark.parametrize(
        "instant, expected",
        [
            ((2026, 6, 10, 8, 0), (2026, 6, 10, 9, 0)),
            ((2026, 6, 10, 9, 0), (2026, 6, 10, 16, 30)),  # strictly after
            ((2026, 6, 10, 16, 45), (2026, 6, 11, 9, 0)),
            ((2026, 6, 10, 23, 0), (2026, 6, 11, 9, 0)),
        ],
    )
    def test_next_transition(self, instant, expected):
        zone = "America/New_York"
        assert self.window.next_transition(local(zone, *instant)) == local(zone, *expected)


class TestNextTransition:
    @pytest.mark.parametrize(
        "instant, expected",
        [
            ((2026, 6, 10, 12, 0), (2026, 6, 10, 18, 0)),
            ((2026, 6, 10, 18, 0), (2026, 6, 11, 5, 45)),  # at an edge: the next one
            ((2026, 6, 10, 23, 0), (2026, 6, 11, 5, 45)),
            ((2026, 6, 11, 3, 0), (2026, 6, 11, 5, 45)),
            ((2026, 6, 11, 5, 50), (2026, 6, 11, 18, 0)),  # the window end is no transition
        ],
    )
    def test_prod_window(self, instant, expected):
        assert night().next_transition(local(BERLIN, *instant)) == local(BERLIN, *expected)

    @pytest.mark.parametrize(
        "window",
        [
            night(),
            night("America/New_York"),
            night("Asia/Kolkata", lead_minutes=0),
            DailyWindow(dt.time(9), dt.time(17), BERLIN, dt.timedelta(minutes=30)),
            DailyWindow(dt.time(23, 30), dt.time(0, 30), BERLIN, dt.timedelta(minutes=5)),
        ],
        ids=["berlin-night", "new-york-night", "kolkata-no-lead", "berlin-day", "around-midnight"],
    )
    def test_is_exactly_where_wants_live_flips(self, window):
        # Sweep both 2026 clock changes in Europe and the US at an odd step.
        for start in (dt.datetime(2026, 3, 6, tzinfo=dt.timezone.utc), dt.datetime(2026, 10, 23, tzinfo=dt.timezone.utc)):
            instant = start
            while instant < start + dt.timedelta(days=10):
                edge = window.next_transition(instant)
                assert edge > instant
                assert window.wants_live(edge - SECOND) == window.wants_live(instant)
                assert window.wants_live(edge) != window.wants_live(instant)
                instant += dt.timedelta(minutes=97)


class TestDrainDeadline:
    grace = dt.timedelta(minutes=20)

    @pytest.mark.parametrize(
        "instant, seconds",
        [
            ((2026, 6, 11, 5, 45, 0), 900),  # the scheduled drain: until the window end
            ((2026, 6, 11, 5, 50, 0), 600),
            ((2026, 6, 11, 5, 59, 59), 1),
            ((2026, 6, 11, 5, 44, 59), 901),  # still live: not the schedule's removal; grace, cut at the window end
            ((2026, 6, 11, 5, 30, 0), 1200),  # the whole grace fits before the window end
            ((2026, 6, 11, 6, 0, 0), 1200),
            ((2026, 6, 11, 12, 0, 0), 1200),
            ((2026, 3, 29, 5, 50, 0), 600),  # the morning the clocks went forward
        ],
    )
    def test_deadline(self, instant, seconds):
        assert drain_deadline_seconds(night(), self.grace, local(BERLIN, *instant)) == seconds

    def test_always_on_tier_gets_the_grace(self):
        assert drain_deadline_seconds(None, self.grace, local(BERLIN, 2026, 6, 11, 5, 50)) == 1200


class TestTierLiveAt:
    NOON = local(BERLIN, 2026, 6, 10, 12)
    EVENING = local(BERLIN, 2026, 6, 10, 20)

    def test_prod_follows_the_schedule(self, prod_config):
        assert prod_config.live_tiers(self.NOON) == ["always-on"]
        assert prod_config.live_tiers(self.EVENING) == ["always-on", "heavy-compute"]
        assert [p.node.name for p in prod_config.live_nodes(self.EVENING)] == [
            "ray-ao-1", "ray-ao-2", "ray-ao-3", "ray-hc-1", "ray-hc-2", "ray-hc-3",
        ]

    @pytest.mark.parametrize("override, noon, evening", [("on", True, True), ("off", False, False)])
    def test_override_wins_over_the_schedule(self, raw, override, noon, evening):
        raw["tiers"]["heavy-compute"]["override"] = override
        tier = config.load(raw).tiers["heavy-compute"]
        assert tier.live_at(self.NOON) is noon
        assert tier.live_at(self.EVENING) is evening

    def test_always_on_tier_is_live_at_any_instant(self, prod_config):
        tier = prod_config.tiers["always-on"]
        assert tier.window is None
        assert all(tier.live_at(self.NOON + dt.timedelta(hours=h)) for h in range(0, 24, 5))


class TestBringUpLead:
    """The tier is deployed `bring_up_lead` before `start`, so it serves at `start`."""

    window = DailyWindow(dt.time(18), dt.time(6), BERLIN, dt.timedelta(minutes=15), dt.timedelta(minutes=30))

    @pytest.mark.parametrize(
        "instant, live, serving",
        [
            ((2026, 6, 10, 17, 29, 59), False, False),
            ((2026, 6, 10, 17, 30, 0), True, False),  # the bring-up: deployed, not yet expected
            ((2026, 6, 10, 17, 59, 59), True, False),
            ((2026, 6, 10, 18, 0, 0), True, True),
            ((2026, 6, 11, 5, 45, 0), False, False),
            ((2026, 3, 28, 17, 30, 0), True, False),  # the evening before the clocks go forward
            ((2026, 10, 24, 17, 30, 0), True, False),  # the evening before they go back
        ],
    )
    def test_edges(self, instant, live, serving):
        at = local(BERLIN, *instant)
        assert (self.window.wants_live(at), self.window.serving(at)) == (live, serving)

    def test_next_transition_is_the_bring_up(self):
        assert self.window.next_transition(local(BERLIN, 2026, 6, 10, 12)) == local(BERLIN, 2026, 6, 10, 17, 30)

    def test_the_drain_deadline_in_the_lead_is_the_grace(self):
        # A removal while the tier is being brought up (an override, a node dropped) is not the schedule's.
        assert drain_deadline_seconds(self.window, dt.timedelta(minutes=20), local(BERLIN, 2026, 6, 10, 17, 45)) == 1200

    def test_transitions_flip_wants_live_across_clock_changes(self):
        for start in (dt.datetime(2026, 3, 26, tzinfo=dt.timezone.utc), dt.datetime(2026, 10, 22, tzinfo=dt.timezone.utc)):
            instant = start
            while instant < start + dt.timedelta(days=5):
                edge = self.window.next_transition(instant)
                assert self.window.wants_live(edge) != self.window.wants_live(edge - SECOND)
                instant += dt.timedelta(minutes=37)
