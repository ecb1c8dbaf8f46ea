"""The state machine of a task."""

import pytest

from plait.states import TaskState, can_move

TERMINAL = [TaskState.DONE, TaskState.FAILED, TaskState.CANCELLED]


def test_states_compare_equal_to_the_reference_strings():
    assert TaskState.DONE == "DONE"
    assert [s.value for s in TaskState] == ["PENDING", "RUNNING", "DONE", "FAILED", "CANCELLED"]


@pytest.mark.parametrize("end", TERMINAL)
def test_pending_and_running_may_end_in_any_terminal_state(end):
    assert can_move(TaskState.PENDING, end)
    assert can_move(TaskState.RUNNING, end)


@pytest.mark.parametrize("start", TERMINAL)
def test_terminal_states_never_change(start):
    assert not any(can_move(start, new) for new in TaskState)


def test_running_never_goes_back_to_pending():
    assert not can_move(TaskState.RUNNING, TaskState.PENDING)
    assert can_move(TaskState.PENDING, TaskState.RUNNING)
