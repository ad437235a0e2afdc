"""keel up's restart policy: backoff that grows with fast failures, and when to give up."""

from __future__ import annotations

import signal

from keel.supervisor import RestartPolicy, describe_exit


def test_a_child_that_ran_a_while_restarts_soon_and_forever() -> None:
    policy = RestartPolicy(first_delay_s=0.5, fast_s=15, give_up_after=3)
    for _ in range(10):
        assert policy.delay_after(ran_s=60) == 0.5
    assert policy.fast_failures == 0


def test_fast_failures_back_off_then_give_up() -> None:
    policy = RestartPolicy(first_delay_s=0.5, max_delay_s=1.5, fast_s=15, give_up_after=4)
    assert [policy.delay_after(ran_s=1) for _ in range(4)] == [1.0, 1.5, 1.5, None]


def test_a_long_run_between_fast_failures_starts_a_fresh_count() -> None:
    policy = RestartPolicy(first_delay_s=1, max_delay_s=30, fast_s=15, give_up_after=3)
    assert policy.delay_after(ran_s=1) == 2
    assert policy.delay_after(ran_s=1) == 4
    assert policy.delay_after(ran_s=120) == 1
    assert policy.delay_after(ran_s=1) == 2
    assert policy.delay_after(ran_s=1) == 4
    assert policy.delay_after(ran_s=1) is None


def test_a_child_killed_from_outside_restarts_at_once_and_is_never_given_up() -> None:
    policy = RestartPolicy(first_delay_s=0.5, fast_s=15, give_up_after=3)
    assert policy.delay_after(ran_s=1) == 1.0  # a fast failure of its own
    for _ in range(10):  # SIGKILLed every few seconds (the chaos run, the OOM killer)
        assert policy.delay_after(ran_s=2, killed=True) == 0.5
    assert policy.fast_failures == 0


def test_exits_are_described_for_the_log() -> None:
    assert describe_exit(-signal.SIGKILL) == "killed by SIGKILL"
    assert describe_exit(3) == "exited with code 3"
