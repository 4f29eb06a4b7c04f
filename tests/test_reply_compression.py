"""The per-OSD choice of reply compression (skyhook_py/query/reply_compression.py), on
its own: fixed modes, and what moves ``auto`` (large replies' delivery rate) and what
does not (small replies, other OSDs).  Its effect on a real cluster is in
test_executor_cluster.py and, over shaped links, test_multihost.py."""

import pytest

from skyhook_py.errors import QueryError
from skyhook_py.query.reply_compression import (FAST_BYTES_PER_S, MIN_SAMPLE_BYTES, SLOW_BYTES_PER_S,
                                                SLOW_LINK_CODEC, ReplyCompression)

MB = 1 << 20


def reply_at(policy, osd, rate, nbytes=4 * MB, cpu=0.002, in_flight=1):
    """Report a reply of ``nbytes`` from ``osd`` whose transfer ran at ``rate`` bytes/s."""
    policy.observe(osd, nbytes, wall_seconds=cpu + nbytes / rate, class_cpu_seconds=cpu, in_flight=in_flight)


@pytest.mark.parametrize("mode", ["none", "lz4", "zstd"])
def test_a_fixed_mode_is_asked_of_every_osd_whatever_the_link(mode):
    p = ReplyCompression(mode)
    for osd in (0, 1, 2):
        reply_at(p, osd, SLOW_BYTES_PER_S / 10)
        reply_at(p, osd + 10, FAST_BYTES_PER_S * 10)
    assert {p.for_osd(o) for o in (0, 1, 2, 10, 11, 12, "never seen")} == {mode}
    assert p.rates() == {}


def test_auto_compresses_an_osd_once_its_large_replies_arrive_slowly_and_stops_when_they_speed_up():
    p = ReplyCompression("auto")
    assert p.for_osd(3) == "none"                 # no evidence yet
    reply_at(p, 3, 110e6)                          # a 1 Gbit/s link
    assert p.for_osd(3) == SLOW_LINK_CODEC
    reply_at(p, 3, 2e9)                            # average ~1 GB/s: fast again
    assert p.rates()[3] > FAST_BYTES_PER_S and p.for_osd(3) == "none"


def test_auto_holds_its_choice_while_the_rate_stays_inside_the_band():
    middle = (SLOW_BYTES_PER_S + FAST_BYTES_PER_S) / 2
    p = ReplyCompression("auto")
    reply_at(p, 0, 50e6)
    for _ in range(10):
        reply_at(p, 0, middle)
    assert SLOW_BYTES_PER_S < p.rates()[0] < FAST_BYTES_PER_S and p.for_osd(0) == SLOW_LINK_CODEC
    q = ReplyCompression("auto")
    for _ in range(10):
        reply_at(q, 0, middle)
    assert q.for_osd(0) == "none"


def test_small_replies_and_other_osds_do_not_move_the_choice():
    p = ReplyCompression("auto")
    for _ in range(20):
        reply_at(p, 0, 1e6, nbytes=MIN_SAMPLE_BYTES - 1)   # latency-bound: says nothing of the link
    assert p.for_osd(0) == "none" and 0 not in p.rates()
    reply_at(p, 1, 50e6)
    assert p.for_osd(1) == SLOW_LINK_CODEC and p.for_osd(0) == "none" and p.for_osd(2) == "none"


def test_replies_in_flight_together_each_count_as_a_share_of_the_link():
    p = ReplyCompression("auto")
    # four replies sharing a 400 MB/s path each see 100 MB/s: not a slow link
    reply_at(p, 0, 100e6, in_flight=4)
    assert p.rates()[0] == pytest.approx(400e6, rel=1e-6) and p.for_osd(0) == "none"


def test_the_class_cpu_time_is_not_counted_as_transfer():
    p = ReplyCompression("auto")
    # 4 MiB in 30 ms of which 29 ms were the class's work: a fast link behind a busy OSD
    p.observe(0, 4 * MB, wall_seconds=0.030, class_cpu_seconds=0.029)
    assert p.rates()[0] > FAST_BYTES_PER_S and p.for_osd(0) == "none"


def test_an_unknown_mode_is_refused_with_the_known_ones():
    with pytest.raises(QueryError, match=r"reply compression must be one of none, lz4, zstd, auto, got 'gzip'"):
        ReplyCompression("gzip")
