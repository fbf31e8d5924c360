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
    src.emit(events([("a", "c1", 50.0, 1, False)], eos=["a"]))  # cascade over (a lone event: decided at eos)
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


def test_a_batch_is_released_once_its_own_outputs_are_done_whatever_stays_open():
    """No ref is held for open cascades (their state is checkpointed instead): a batch is done
    as soon as what it produced is delivered, so commits never wait for a cascade to end."""
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
        events([("a", "c1", 0.0, 1, True), ("a", "c2", 1.0, 1, True)]),  # no output: done at once
        events([("a", "c1", 4.0, 1, False)]),  # no output either
        events([("a", "c3", 30.0, 1, True)]),  # closes c1, c2; c3 stays open
    ]
    for b, r in zip(batches, refs):
        r.retain()  # the source's own hold while emitting
        src.emit(b, metadata=[{"ref": r}])
        r.release()
    assert [r.zeros for r in refs] == [1, 1, 0]  # batch 3's outputs are still held downstream
    for md in held:
        for m in md:
            m["ref"].release()
    assert [r.zeros for r in refs] == [1, 1, 1] and all(r.count == 0 for r in refs)
    assert win.open_cascades == 1  # c3, held as state, not as refs


def kafka_events(rows, offset0=0, partition=0, eos=()):
    """``events`` as read from partition ``partition`` at offsets ``offset0``, ``offset0 + 1``, ..."""
    e = events(rows, eos=eos)
    e.partition = [partition] * len(rows)
    e.offset = list(range(offset0, offset0 + len(rows)))
    e.eos_partition = [partition] * len(eos)
    return e


def summary(out):
    """What the windows emitted, by value: windows with their events, ends with their sizes, rejections."""
    ws = sorted((w.key, w.T_obs, tuple(w.times.tolist()), tuple(w.marks.tolist())) for w in flat(out, WindowClosed))
    ends = sorted((e.key, e.size, e.t_end, e.windows) for e in flat(out, CascadeEnded))
    return ws, ends, sorted(r.reason for r in flat(out, Rejected))


def stream_rows(n_cascades=60, seed=0):
    """A stream of one source: cascades every 3 s, a few retweets each, in time order."""
    rng = np.random.default_rng(seed)
    rows = []
    for k in range(n_cascades):
        t0 = 3.0 * k
        rows.append(("a", f"c{k}", t0, 1, True))
        rows += [("a", f"c{k}", t0 + d, float(m), False)
                 for d, m in zip(np.sort(rng.uniform(0, 12, 4)), rng.integers(1, 100, 4))]
    rows.sort(key=lambda r: (r[2], not r[4]))
    return rows


def uninterrupted(rows) -> list:
    """The outputs of one node that reads every row in one batch, then the end of stream."""
    src = Stream()
    out = src.cascade_windows([10, 20], terminated=5).sink_to_list()
    src.emit(kafka_events(rows, eos=["a"]))
    return out


@pytest.mark.parametrize("cut, replay_from", [(37, 37), (37, 20), (150, 101), (250, 0)])
def test_restore_and_replay_give_the_outputs_of_an_uninterrupted_run(cut, replay_from):
    """Checkpoint after ``cut`` events, restore in a new node, re-read from ``replay_from`` (an older
    commit, or the changelog ahead of it): the outputs after the restore, duplicates aside, are those
    of an uninterrupted run, and replayed events change nothing."""
    rows = stream_rows()
    ref_out = uninterrupted(rows)

    src = Stream()
    first = src.cascade_windows([10, 20], terminated=5)
    out = first.sink_to_list()
    for i in range(0, cut, 7):
        src.emit(kafka_events(rows[i:min(i + 7, cut)], offset0=i))
    changes = first.snapshot()
    assert changes and all(p == 0 for p, _, _ in changes)
    assert first.snapshot() == []  # clean afterwards

    src2 = Stream()
    second = src2.cascade_windows([10, 20], terminated=5)
    out2 = second.sink_to_list()
    live = second.restore(0, [(k, v) for _, k, v in changes])
    assert live == first.open_cascades
    src2.emit(kafka_events(rows[replay_from:], offset0=replay_from, eos=["a"]))
    assert second.replayed_events == cut - replay_from
    assert summary(out + out2) == summary(ref_out) or _same_but_duplicates(out + out2, ref_out)


def _same_but_duplicates(got, ref):
    g, r = summary(got), summary(ref)
    return all(sorted(set(a)) == sorted(set(b)) for a, b in zip(g, r))


def test_a_replayed_record_changes_nothing_even_past_the_last_checkpoint():
    """Records re-read after a restart (offset not above the state's) are ignored, also for ended
    cascades: no false "already ended" or "second original post" rejection, no double count."""
    rows = stream_rows(20)
    src = Stream()
    win = src.cascade_windows([10, 20], terminated=5)
    out = win.sink_to_list()
    src.emit(kafka_events(rows))
    before = summary(out)
    src.emit(kafka_events(rows[10:]))  # the same records again
    assert summary(out) == before and win.replayed_events == len(rows) - 10


def test_snapshot_restore_drop_by_partition():
    src = Stream()
    win = src.cascade_windows([10], terminated=5)
    src.emit(kafka_events([("a", "x", 0.0, 1, True)], partition=0))
    src.emit(kafka_events([("b", "y", 0.0, 1, True)], partition=1))
    assert {p for p, _, _ in win.snapshot([1])} == {1}
    assert {p for p, _, _ in win.snapshot()} == {0}
    win.drop([0])
    assert set(win.sources) == {"b"}


def test_one_far_future_timestamp_does_not_end_the_open_cascades():
    src = Stream()
    win = src.cascade_windows([10], terminated=50, max_clock_jump=100)
    out = win.sink_to_list()
    src.emit(kafka_events([("a", "c1", 0.0, 1, True), ("a", "c1", 2.0, 1, False), ("a", "x", 1e12, 1, True),
                           ("a", "c1", 4.0, 1, False)]))
    (bad,) = flat(out, Rejected)
    assert "ahead of its source's clock" in bad.reason and bad.origin == 2
    assert flat(out, CascadeEnded) == [] and win.open_cascades == 1
    src.emit(kafka_events([("a", "c1", 12.0, 1, False)], offset0=4))
    (w,) = flat(out, WindowClosed)
    np.testing.assert_allclose(w.times, [0, 2, 4])
    # a source silent for long: the next far event confirms the jump, and both are kept
    src.emit(kafka_events([("a", "z", 5000.0, 1, True)], offset0=5))
    assert win.sources["a"].held is not None and flat(out, CascadeEnded) == []
    changes = win.snapshot()  # the held event survives a restart
    src.emit(kafka_events([("a", "z", 5001.0, 1, False)], offset0=6))
    assert len(flat(out, Rejected)) == 1 and win.sources["a"].clock == 5001.0
    assert [e.key for e in flat(out, CascadeEnded)] == ["c1"] and win.sources["a"].cascades["z"].size == 2
    other = Stream().cascade_windows([10], terminated=50, max_clock_jump=100)
    other.restore(0, [(k, v) for _, k, v in changes])
    assert other.sources["a"].held[:2] == ("z", 5000.0)


def test_events_beyond_max_events_count_in_the_size_but_are_not_kept():
    src = Stream()
    win = src.cascade_windows([10, 20], terminated=5, max_events=5)
    out = win.sink_to_list()
    src.emit(events([("a", "c", 0.0, 1, True)] + [("a", "c", float(t), 1, False) for t in range(1, 9)]))
    src.emit(events([("a", "c", 11.0, 1, False)]))  # window 10: 5 kept events, 8 before 10 s: not emitted
    assert flat(out, WindowClosed) == [] and win.truncated_windows == 1 and win.events_held == 5
    src.emit(events([], eos=["a"]))
    (end,) = flat(out, CascadeEnded)
    assert end.size == 10 and end.times.size == 5 and end.windows == ()


def test_bad_settings():
    with pytest.raises(ValueError, match="increasing"):
        Stream().cascade_windows([20, 10], terminated=5)
    with pytest.raises(ValueError, match="terminated"):
        Stream().cascade_windows([10], terminated=0)


def test_a_checkpoint_cut_short_anywhere_still_restores_to_the_uninterrupted_outputs():
    """A crash while a checkpoint is being written leaves any prefix of its records in the changelog,
    ahead of the committed offset: restoring from it and replaying from that offset gives the outputs
    of an uninterrupted run (duplicates aside), whatever the prefix."""
    rows = stream_rows(40, seed=3)
    ref_out = uninterrupted(rows)

    src = Stream()
    win = src.cascade_windows([10, 20], terminated=5)
    out = win.sink_to_list()
    src.emit(kafka_events(rows[:60]))
    first = win.snapshot()  # acknowledged and committed at offset 60
    src.emit(kafka_events(rows[60:130], offset0=60))
    second = win.snapshot()  # being written when the process dies
    assert len(second) > 3
    for cut in range(len(second) + 1):
        src2 = Stream()
        node = src2.cascade_windows([10, 20], terminated=5)
        out2 = node.sink_to_list()
        node.restore(0, [(k, v) for _, k, v in first + second[:cut]])
        for i in range(60, len(rows), 5):  # re-read in small batches, as a consumer would
            src2.emit(kafka_events(rows[i:i + 5], offset0=i))
        src2.emit(kafka_events([], eos=["a"]))
        assert _same_but_duplicates(out + out2, ref_out), f"checkpoint cut after {cut} records"
        assert not any("already ended" in r or "second original" in r for r in summary(out2)[2])


@pytest.mark.parametrize("seed", range(5))
def test_outputs_do_not_depend_on_how_the_input_is_cut_into_batches(seed):
    """Windows and ends are decided event by event: any cut of the same input gives the same outputs
    (a Kafka consumer and a file replay cut differently)."""
    rows = stream_rows(50, seed=seed)
    rng = np.random.default_rng(seed)

    def run(cuts):
        src = Stream()
        out = src.cascade_windows([5, 8], terminated=2).sink_to_list()
        bounds = [0, *sorted(cuts), len(rows)]
        for lo, hi in zip(bounds, bounds[1:]):
            src.emit(events(rows[lo:hi]))
        src.emit(events([], eos=["a"]))
        return summary(out)

    whole = run([])
    assert whole[2]  # the input has late events that some cut could decide otherwise
    assert run(rng.choice(len(rows), 30, replace=False).tolist()) == whole
    assert run(list(range(1, len(rows)))) == whole


def test_a_far_future_first_event_does_not_set_a_new_sources_clock():
    src = Stream()
    win = src.cascade_windows([10], terminated=50, max_clock_jump=100)
    out = win.sink_to_list()
    src.emit(kafka_events([("a", "x", 1e12, 1, True), ("a", "c1", 0.0, 1, True), ("a", "c1", 3.0, 1, False),
                           ("a", "c1", 11.0, 1, False)]))
    (bad,) = flat(out, Rejected)
    assert bad.origin == 0 and "ahead of its source's clock" in bad.reason
    (w,) = flat(out, WindowClosed)
    np.testing.assert_allclose(w.times, [0, 3])
    assert win.sources["a"].clock == 11.0 and flat(out, CascadeEnded) == []
