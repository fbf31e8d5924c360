"""The offset bookkeeping of a consumer-group member, without a broker."""

from __future__ import annotations

from streams.kafka import OffsetTracker

T = "t"


def test_commits_only_the_longest_done_prefix():
    tr = OffsetTracker()
    tr.assign([(T, 0), (T, 1)])
    b1 = tr.consumed({(T, 0): 9, (T, 1): 4}, 15)
    b2 = tr.consumed({(T, 0): 19}, 10)
    b3 = tr.consumed({(T, 0): 29, (T, 1): 9}, 15)
    assert tr.committable() == {}
    assert tr.done(b2)
    assert tr.committable() == {}  # b1 before it is not done
    assert tr.done(b1)
    assert tr.committable() == {(T, 0): 20, (T, 1): 5}
    tr.committed({(T, 0): 20, (T, 1): 5})
    assert tr.committable() == {} and tr.behind() == {}
    assert tr.pending() == {(T, 0): 1, (T, 1): 1}
    assert tr.done(b3) and not tr.done(b3)  # a second release is refused
    assert tr.committable() == {(T, 0): 30, (T, 1): 10}
    assert tr.behind() == {(T, 0): (20, 30), (T, 1): (5, 10)}
    assert tr.positions() == {(T, 0): 30, (T, 1): 10}


def test_a_revoked_partition_is_never_committed_by_this_member():
    tr = OffsetTracker()
    tr.assign([(T, 0), (T, 1)])
    b = tr.consumed({(T, 0): 3, (T, 1): 3}, 8)
    tr.revoke([(T, 1)])
    assert not tr.is_assigned((T, 1)) and tr.assigned() == {(T, 0)}
    tr.done(b)
    assert tr.committable() == {(T, 0): 4}
    c = tr.consumed({(T, 1): 7}, 4)  # a partition not assigned is not tracked
    assert c.parts == []


def test_only_filters_partitions_and_committed_offsets_are_kept_after_revocation():
    tr = OffsetTracker()
    tr.assign([(T, 0), (T, 1)])
    tr.done(tr.consumed({(T, 0): 0, (T, 1): 0}, 2))
    assert tr.committable(only={(T, 1)}) == {(T, 1): 1}
    tr.committed({(T, 1): 1})
    tr.revoke([(T, 1)])
    assert tr.committed_offsets() == {(T, 1): 1}
