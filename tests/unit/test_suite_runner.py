"""The two phases of `make test` (tests/suite.py): what each selects, and the exit status."""

from __future__ import annotations

from pathlib import Path

from tests import lanes
from tests.suite import NO_TESTS, combined_status, phases, split_marker


def test_each_phase_selects_its_half_and_keeps_the_callers_arguments() -> None:
    (first, parallel), (second, alone) = phases(["tests/unit", "-x"], workers=2)
    assert (first, second) == ("parallel", "alone")
    assert parallel == ["-n", "2", "--dist", "loadgroup", "-m", "not alone", "tests/unit", "-x"]
    # one worker per lane of the alone phase
    assert alone == ["-n", str(lanes.COUNT), "--dist", "loadgroup", "-m", "alone", "tests/unit", "-x"]
    (_, serial), (_, alone_serial) = phases(["tests/unit"], workers=0)
    assert serial == ["-m", "not alone", "tests/unit"]
    assert alone_serial == ["-m", "alone", "tests/unit"]


def test_a_marker_expression_of_the_caller_is_combined_with_each_phases() -> None:
    assert split_marker(["-m", "chaos", "-q"]) == ("chaos", ["-q"])
    assert split_marker(["-mchaos"]) == ("chaos", [])
    (_, parallel), (_, alone) = phases(["-m", "chaos or e2e"], workers=0)
    assert parallel == ["-m", "(chaos or e2e) and (not alone)"]
    assert alone == ["-m", "(chaos or e2e) and (alone)"]


def test_the_status_is_the_first_failure_and_an_empty_phase_is_none() -> None:
    assert combined_status([0, 0]) == 0
    assert combined_status([0, NO_TESTS]) == 0
    assert combined_status([NO_TESTS, 0]) == 0
    assert combined_status([NO_TESTS, NO_TESTS]) == NO_TESTS
    assert combined_status([1, 0]) == 1
    assert combined_status([0, 2]) == 2
    assert combined_status([NO_TESTS, 1]) == 1


def test_every_alone_test_has_one_lane_and_the_prefixes_name_real_files() -> None:
    assert lanes.lane_of("tests/e2e/test_governor.py::test_x") == "alone-e2e"
    assert lanes.lane_of("tests/chaos/test_postgres_failover.py::test_x") == "alone-servers"
    assert lanes.lane_of("tests/chaos/test_leases.py::test_x") == lanes.REST
    root = Path(__file__).resolve().parents[2]
    for prefixes in lanes.LANES.values():
        for prefix in prefixes:
            assert (root / prefix).exists(), f"{prefix} names no file: a lane lost its tests"
