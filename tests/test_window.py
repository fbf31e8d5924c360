"""Event-time cascade windows: closing rules, late events, several sources, bounded state, refs."""

from __future__ import annotations

import numpy as np
import pytest
from streamz import Stream

import streams.window  # noqa: F401  (registers cascade_windows)
from streams.window import CascadeEnded, Events, Rejected, WindowClosed


def events(rows, eos=()):
    """rows: (source, key, t, m, root)."""
    rows = list(rows)
    return Events(
        source=[r[0] for r in rows], key=[r[1] for r in rows], t=[r[2] for r in rows], m=[r[3] for r in rows],
        root=[r[4] for r in rows], info=[f"msg {r[1]}" if r[4] else None for r in rows],
        origin=list(range(len(rows))), eos=eos,
    )


@pytest.fixture
def node():
    src = Stream()
    win = src.cascade_windows([10, 20], terminated=5, min_size=1)
    out = win.sink_to_list()
    return src, win, out


def flat(out, kind):
    return [x for batch in out for x in batch if isinstance(x, kind)]


def test_windows_close_on_the_source_clock(node):
    src, win, out = node
    src.emit(events([("a", "c1", 100.0, 5, True), ("a", "c1", 104.0, 1, False), ("a", "c1", 109.0, 2, False)]))
    assert flat(out, WindowClosed) == []  # clock 109 < 100 + 10
    src.emit(events([("a", "c1", 110.0, 3, False)]))  # clock reaches 110: the 10 s window closes
    (w,) = flat(out, WindowClosed)
    assert (w.key, w.T_obs, w.start) == ("c1", 10, 100.0)
    np.testing.assert_allclose(w.times, [0, 4, 9])  # relative, t < start + 10 only
    np.testing.assert_allclose(w.marks, [5, 1, 2])
    src.emit(events([("a", "c2", 125.0, 1, True)]))  # clock 125: window 20 closes, and c1 ends (last 110 + 5 < 125)
    ws = flat(out, WindowClosed)
    assert [(x.key, x.T_obs) for x in ws] == [("c1", 10), ("c1", 20)]
    np.testing.assert_allclose(ws[1].times, [0, 4, 9, 10])
    (end,) = flat(out, CascadeEnded)
    assert (end.key, end.size, end.t_end, end.windows) == ("c1", 4, 10.0, (10, 20))
    assert win.open_cascades == 1  # only c2 remains


def test_a_cascade_does_not_end_before_its_last_window(node):
    src, win, out = node
    src.emit(events([("a", "c1", 0.0, 1, True), ("a", "x", 8.0, 1, True)]))  # c1 idle since 0, but T_max = 20
    src.emit(events([("a", "x", 19.0, 1, False)]))
    assert flat(out, CascadeEnded) == []
    src.emit(events([("a", "x", 20.0, 1, False)]))
    assert [e.key for e in flat(out, CascadeEnded)] == ["c1"]


def test_late_events_policy(node):
    src, win, out = node
    src.emit(events([("a", "c1", 0.0, 1, True), ("a", "c1", 12.0, 1, False)]))  # window 10 closed at clock 12
    src.emit(events([("a", "c1", 5.0, 7, False)]))  # late for window 10, in time for window 20
    src.emit(events([("a", "c1", 14.0, 1, False), ("a", "c1", 13.0, 1, False)]))  # out of order, same window
    src.emit(events([], eos=["a"]))
    ws = flat(out, WindowClosed)
    np.testing.assert_allclose(ws[0].times, [0])  # window 10 was emitted before the late event
    np.testing.assert_allclose(ws[1].times, [0, 5, 12, 13, 14])  # window 20 holds it, sorted
    np.testing.assert_allclose(ws[1].marks, [1, 7, 1, 1, 1])
    assert win.late_events == 1
    (end,) = flat(out, CascadeEnded)
    assert end.size == 5  # the late event counts in the final size


def test_rejections_with_reasons(node):
    src, win, out = node
    src.emit(events([("a", "c1", 10.0, 1, True)]))
    src.emit(events([
        ("a", "ghost", 11.0, 1, False),  # root never seen
        ("a", "c1", 5.0, 1, False),  # before its own root
        ("a", "c1", 12.0, 1, True),  # second root of an open cascade
    ]))
    src.emit(events([], eos=["a"]))
    src.emit(events([("a", "c1", 50.0, 1, False)]))  # cascade over
    reasons = [r.reason for r in flat(out, Rejected)]
    assert len(reasons) == 4
    assert "unknown" in reasons[0] and "before its original post" in reasons[1]
    assert "second original post" in reasons[2] and "already ended" in reasons[3]
    assert win.rejected_events == 4


def test_sources_have_their_own_clocks(node):
    src, win, out = node
    src.emit(events([("a", "c1", 0.0, 1, True), ("b", "c9", 1000.0, 1, True)]))
    assert flat(out, WindowClosed) == []  # source b's clock does not close a's windows
    src.emit(events([("a", "c1", 10.0, 1, False)]))
    assert [(w.source, w.key) for w in flat(out, WindowClosed)] == [("a", "c1")]


def test_min_size_skips_small_windows():
    src = Stream()
    out = src.cascade_windows([10, 20], terminated=5, min_size=3).sink_to_list()
    src.emit(events([("a", "s", 0.0, 1, True), ("a", "s", 1.0, 1, False), ("a", "s", 15.0, 1, False)]))
    src.emit(events([], eos=["a"]))
    assert [w.T_obs for w in flat(out, WindowClosed)] == [20]  # 2 events before 10 s: skipped
    (end,) = flat(out, CascadeEnded)
    assert end.windows == (20,) and end.size == 3


def test_state_stays_bounded_over_a_long_stream():
    src = Stream()
    win = src.cascade_windows([10, 20], terminated=5, min_size=1, remember_ended=100)
    ends = src.cascade_windows([10], terminated=5)  # noqa: F841 - a second consumer must not matter
    out = win.sink_to_list()
    rng = np.random.default_rng(0)
    peak = 0
    for k in range(2000):
        t0 = 3.0 * k
        rows = [("a", f"c{k}", t0, 1, True)] + [("a", f"c{k}", t0 + d, 1, False) for d in np.sort(rng.uniform(0, 8, 3))]
        src.emit(events(rows))
        peak = max(peak, win.open_cascades)
        out.clear()
    assert peak <= 12  # cascades live about 25 s on a clock moving 3 s per cascade
    assert len(win.sources["a"].ended) == 100


class Counter:
    """A stand-in for streamz's RefCounter that records how often it reached zero."""

    def __init__(self):
        self.count = 0
        self.zeros = 0

    def retain(self, n=1):
        self.count += n

    def release(self, n=1):
        self.count -= n
        assert self.count >= 0
        if self.count == 0:
            self.zeros += 1


def test_each_batch_is_released_exactly_once_after_its_cascades_end():
    src = Stream()
    win = src.cascade_windows([10], terminated=5)
    held = []

    # a downstream that holds on to what it receives, as a sink would until delivery
    class Hold(Stream):
        def update(self, x, who=None, metadata=None):
            self._retain_refs(metadata)
            held.append(metadata)

    hold = Hold(win)  # noqa: F841 - downstream links are weak: keep it alive
    refs = [Counter() for _ in range(3)]
    batches = [
        events([("a", "c1", 0.0, 1, True), ("a", "c2", 1.0, 1, True)]),
        events([("a", "c1", 4.0, 1, False)]),
        events([("a", "c3", 30.0, 1, True)]),  # closes c1, c2 (clock 30 >= 0 + 10, 1 + 10; ends too)
    ]
    for b, r in zip(batches, refs):
        r.retain()  # the source's own hold while emitting
        src.emit(b, metadata=[{"ref": r}])
        r.release()
    assert [r.zeros for r in refs] == [0, 0, 0]  # the downstream still holds the outputs
    for md in held:
        for m in md:
            m["ref"].release()
    held.clear()
    assert [r.zeros for r in refs] == [1, 1, 0]  # batch 3 is held by the open cascade c3
    src.emit(events([], eos=["a"]), metadata=[])
    for md in held:
        for m in md:
            m["ref"].release()
    assert [r.zeros for r in refs] == [1, 1, 1] and all(r.count == 0 for r in refs)


def test_bad_settings():
    with pytest.raises(ValueError, match="increasing"):
        Stream().cascade_windows([20, 10], terminated=5)
    with pytest.raises(ValueError, match="terminated"):
        Stream().cascade_windows([10], terminated=0)
