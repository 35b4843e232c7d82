"""The ``[cluster]`` lease timings: defaults, the file, the environment, and refusals."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from dari.settings import Settings


def test_defaults() -> None:
    timing = Settings.load(None).cluster
    assert (timing.lease_s, timing.renew_s, timing.reap_s) == (10.0, 2.0, 1.0)


def test_from_the_file_and_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "dari.toml"
    config.write_text("[cluster]\nlease_s = 6\nrenew_s = 1.5\n")
    monkeypatch.setenv("DARI_CLUSTER__REAP_S", "0.5")
    monkeypatch.setenv("DARI_CLUSTER__RENEW_S", "3")  # the environment wins over the file
    timing = Settings.load(config).cluster
    assert (timing.lease_s, timing.renew_s, timing.reap_s) == (6.0, 3.0, 0.5)


@pytest.mark.parametrize(
    ("cluster", "problem"),
    [
        ({"lease_s": 3, "renew_s": 2}, "at most half of cluster.lease_s"),
        ({"renew_s": 6}, "at most half of cluster.lease_s"),
        ({"lease_s": 0}, "greater than 0"),
        ({"reap_s": -1}, "greater than 0"),
        ({"lease_ms": 10}, "Extra inputs are not permitted"),
    ],
)
def test_timings_that_cannot_work_are_refused(cluster: dict[str, float], problem: str) -> None:
    with pytest.raises(ValidationError, match=problem) as raised:
        Settings.load(None, cluster=cluster)
    assert "cluster" in str(raised.value)
