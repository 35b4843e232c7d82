"""plan_resume: whether a reconnecting client can continue from last_seq, as a table."""

from __future__ import annotations

from typing import NamedTuple

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dari.protocol.resume import (
    LogPosition,
    NotResumedReason,
    ResumePlan,
    parse_last_seq,
    plan_resume,
)

R = NotResumedReason
EPOCH = "e1"
# A log holding seqs 1..10.
FULL = LogPosition(exists=True, epoch=EPOCH, first_seq=1, head=10)
# A log whose oldest frames were trimmed: it holds 6..10.
TRIMMED = LogPosition(exists=True, epoch=EPOCH, first_seq=6, head=10)
# Everything trimmed: nothing held, head stays 10.
EMPTIED = LogPosition(exists=True, epoch=EPOCH, first_seq=11, head=10)
# A client_id the server has no log for (first connection, restart, forgotten).
NO_LOG = LogPosition(exists=False, epoch=EPOCH, first_seq=1, head=0)
# A new log that is empty.
FRESH = LogPosition(exists=True, epoch=EPOCH, first_seq=1, head=0)


class Case(NamedTuple):
    name: str
    last_seq: str | None
    epoch: str | None
    log: LogPosition
    resumed: bool
    position: int
    reason: NotResumedReason | None


CASES = [
    # not asking to resume
    Case("no last_seq: start at head", None, None, FULL, False, 10, None),
    Case("no last_seq, epoch given", None, EPOCH, FULL, False, 10, None),
    Case("no last_seq, no log", None, None, NO_LOG, False, 0, None),
    # resumable
    Case("at head", "10", None, FULL, True, 10, None),
    Case("mid log", "5", None, FULL, True, 5, None),
    Case("from zero with the whole log", "0", None, FULL, True, 0, None),
    Case("zero on a fresh log", "0", EPOCH, FRESH, True, 0, None),
    Case("same epoch", "7", EPOCH, FULL, True, 7, None),
    Case("leading zeros", "007", EPOCH, FULL, True, 7, None),
    Case("oldest held frame is next", "5", None, TRIMMED, True, 5, None),
    Case("at head of an emptied log", "10", None, EMPTIED, True, 10, None),
    # expired
    Case("trimmed past", "4", None, TRIMMED, False, 10, R.EXPIRED),
    Case("trimmed past from zero", "0", None, TRIMMED, False, 10, R.EXPIRED),
    Case("emptied log, one behind", "9", None, EMPTIED, False, 10, R.EXPIRED),
    # ahead
    Case("one ahead of head", "11", None, FULL, False, 10, R.AHEAD),
    Case("far ahead", "999999999999999999", None, FULL, False, 10, R.AHEAD),
    Case("ahead of a fresh log", "3", EPOCH, FRESH, False, 0, R.AHEAD),
    # epoch
    Case("epoch changed", "5", "e0", FULL, False, 10, R.EPOCH_CHANGED),
    Case("empty epoch is an epoch", "5", "", FULL, False, 10, R.EPOCH_CHANGED),
    Case("epoch changed and no log", "5", "e0", NO_LOG, False, 0, R.EPOCH_CHANGED),
    # no log
    Case("no log", "3", None, NO_LOG, False, 0, R.NO_LOG),
    Case("no log from zero: nothing was ever sent", "0", EPOCH, NO_LOG, True, 0, None),
    # invalid last_seq: never resumed, never an exception
    Case("negative", "-1", None, FULL, False, 10, R.INVALID_LAST_SEQ),
    Case("exponent", "1e3", None, FULL, False, 10, R.INVALID_LAST_SEQ),
    Case("leading space", " 5", None, FULL, False, 10, R.INVALID_LAST_SEQ),
    Case("trailing space", "5 ", None, FULL, False, 10, R.INVALID_LAST_SEQ),
    Case("plus sign", "+5", None, FULL, False, 10, R.INVALID_LAST_SEQ),
    Case("empty", "", None, FULL, False, 10, R.INVALID_LAST_SEQ),
    Case("decimal", "5.0", None, FULL, False, 10, R.INVALID_LAST_SEQ),
    Case("hex", "0x5", None, FULL, False, 10, R.INVALID_LAST_SEQ),
    Case("underscore", "1_0", None, FULL, False, 10, R.INVALID_LAST_SEQ),
    Case("arabic-indic digit", "٣", None, FULL, False, 10, R.INVALID_LAST_SEQ),
    Case("fullwidth digit", "５", None, FULL, False, 10, R.INVALID_LAST_SEQ),
    Case("superscript digit", "²", None, FULL, False, 10, R.INVALID_LAST_SEQ),
    Case("19 digits", "1" * 19, None, FULL, False, 10, R.INVALID_LAST_SEQ),
    Case("huge", "9" * 10_000, None, FULL, False, 10, R.INVALID_LAST_SEQ),
    Case("text", "null", None, FULL, False, 10, R.INVALID_LAST_SEQ),
    Case("invalid wins over epoch change", "x", "e0", FULL, False, 10, R.INVALID_LAST_SEQ),
    Case("invalid wins over no log", "-1", None, NO_LOG, False, 0, R.INVALID_LAST_SEQ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_plan_resume(case: Case) -> None:
    plan = plan_resume(case.last_seq, case.epoch, case.log)
    assert plan == ResumePlan(case.resumed, case.position, case.reason)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_a_resumed_plan_replays_only_frames_the_log_still_holds(case: Case) -> None:
    plan = plan_resume(case.last_seq, case.epoch, case.log)
    if plan.resumed:
        # Resumed with no log only from 0, where there is nothing to replay.
        assert case.log.exists or plan.position == case.log.head == 0
        assert case.log.first_seq <= plan.position + 1 <= case.log.head + 1
    else:
        assert plan.position == case.log.head


@pytest.mark.parametrize(
    ("raw", "parsed"),
    [
        (None, None),
        ("0", 0),
        ("42", 42),
        ("0042", 42),
        ("9" * 18, int("9" * 18)),
        ("9" * 19, -1),
        ("-1", -1),
        ("", -1),
        ("1e3", -1),
        (" 5", -1),
        ("٣", -1),
        ("5\n", -1),
    ],
)
def test_parse_last_seq(raw: str | None, parsed: int | None) -> None:
    assert parse_last_seq(raw) == parsed


@st.composite
def log_positions(draw: st.DrawFn) -> LogPosition:
    head = draw(st.integers(min_value=0, max_value=10**6))
    first_seq = draw(st.integers(min_value=1, max_value=head + 1))
    return LogPosition(exists=True, epoch=EPOCH, first_seq=first_seq, head=head)


@given(log=log_positions(), last_seq=st.integers(min_value=0, max_value=2 * 10**6))
def test_resumed_exactly_when_the_log_holds_every_frame_after_last_seq(
    log: LogPosition, last_seq: int
) -> None:
    plan = plan_resume(str(last_seq), EPOCH, log)
    holds_the_rest = log.first_seq - 1 <= last_seq <= log.head
    assert plan.resumed is holds_the_rest
    assert plan.position == (last_seq if holds_the_rest else log.head)
    assert (plan.reason is None) is holds_the_rest


@given(log=log_positions(), raw=st.text(max_size=30), epoch=st.none() | st.text(max_size=5))
def test_any_query_string_gives_a_plan_and_never_an_error(
    log: LogPosition, raw: str, epoch: str | None
) -> None:
    plan = plan_resume(raw, epoch, log)
    if plan.resumed:
        assert raw.isascii() and raw.isdigit()
        assert plan.position == int(raw)
    else:
        assert plan.position == log.head
