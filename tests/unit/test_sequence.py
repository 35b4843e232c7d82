"""SeqTracker: the client's rule for seq (welcome sets the position, drop seen, detect gaps)."""

from __future__ import annotations

from dari.protocol.sequence import SeqTracker, Verdict


def welcome(seq: int, epoch: str = "e1") -> dict[str, object]:
    return {"type": "welcome", "seq": seq, "epoch": epoch, "resumed": True}


def frame(seq: int) -> dict[str, object]:
    return {"type": "response", "seq": seq, "content": "x"}


def test_welcome_sets_the_position_and_epoch() -> None:
    tracker = SeqTracker()
    assert tracker.observe(welcome(5, "e9")) is Verdict.NEW
    assert tracker.position == 5
    assert tracker.epoch == "e9"


def test_next_frames_advance_the_position_one_by_one() -> None:
    tracker = SeqTracker()
    tracker.observe(welcome(5))
    assert [tracker.observe(frame(s)) for s in (6, 7, 8)] == [Verdict.NEW] * 3
    assert tracker.position == 8


def test_frames_at_or_below_the_position_are_duplicates() -> None:
    tracker = SeqTracker()
    tracker.observe(welcome(5))
    tracker.observe(frame(6))
    assert tracker.observe(frame(6)) is Verdict.DUPLICATE
    assert tracker.observe(frame(5)) is Verdict.DUPLICATE
    assert tracker.observe(frame(1)) is Verdict.DUPLICATE
    assert tracker.position == 6


def test_a_skipped_seq_is_a_gap_and_does_not_move_the_position() -> None:
    tracker = SeqTracker()
    tracker.observe(welcome(5))
    assert tracker.observe(frame(7)) is Verdict.GAP
    assert tracker.position == 5
    assert tracker.observe(frame(6)) is Verdict.NEW


def test_a_later_welcome_resets_the_position_even_backwards() -> None:
    tracker = SeqTracker()
    tracker.observe(welcome(5, "e1"))
    tracker.observe(frame(6))
    tracker.observe(welcome(0, "e2"))  # the server lost its log: fresh start
    assert tracker.position == 0
    assert tracker.epoch == "e2"
    assert tracker.observe(frame(1)) is Verdict.NEW
    assert tracker.observe(frame(1)) is Verdict.DUPLICATE


def test_welcome_does_not_advance_seq() -> None:
    tracker = SeqTracker()
    tracker.observe(welcome(3))
    assert tracker.observe(frame(3)) is Verdict.DUPLICATE
    assert tracker.observe(frame(4)) is Verdict.NEW


def test_frames_before_any_welcome_or_without_seq_are_passed_through() -> None:
    tracker = SeqTracker()
    assert tracker.observe(frame(9)) is Verdict.NEW
    assert tracker.position is None
    tracker.observe(welcome(1))
    assert tracker.observe({"type": "pong"}) is Verdict.NEW
    assert tracker.position == 1


def test_welcome_without_usable_seq_or_epoch_starts_from_zero() -> None:
    tracker = SeqTracker()
    tracker.observe({"type": "welcome", "seq": "7", "epoch": 5})
    assert tracker.position == 0
    assert tracker.epoch is None
