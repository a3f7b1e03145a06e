"""The run lifecycle as a pure state machine: no event loop, no sockets, no tasks."""

from __future__ import annotations

import itertools

import pytest

from streamcore.errors import RunStateError
from streamcore.events import Failure, Kind, Usage
from streamcore.lifecycle import TRANSITIONS, Input, RunMachine, RunState

ALL_STATES = list(RunState)
ALL_INPUTS = list(Input)


def machine_in(state: RunState) -> RunMachine:
    """A machine driven into ``state`` through legal inputs only."""
    m = RunMachine("msg-1")
    if state is RunState.PENDING:
        return m
    m.start("model-x")
    if state is RunState.STREAMING:
        return m
    if state is RunState.FAILED:
        m._go(Input.FAIL)
        return m
    m.finish("complete")
    if state is RunState.ENDED:
        return m
    m.seal()
    return m


def apply(m: RunMachine, event: Input):
    return {
        Input.START: lambda: m.start(),
        Input.TEXT: lambda: m.text_delta("x"),
        Input.REASONING: lambda: m.reasoning_delta("r"),
        Input.APP: lambda: m.app("OBJECTIVE_GENERATED", {"objective": {}}),
        Input.FAIL: lambda: m._go(Input.FAIL),
        Input.END: lambda: m._go(Input.END),
        Input.SEAL: lambda: m.seal(),
    }[event]()


@pytest.mark.parametrize(("state", "event"), sorted(TRANSITIONS, key=lambda k: (k[0].value, k[1].value)))
def test_every_legal_transition(state, event):
    m = machine_in(state)
    apply(m, event)
    assert m.state is TRANSITIONS[state, event]


ILLEGAL = [(s, e) for s, e in itertools.product(ALL_STATES, ALL_INPUTS) if (s, e) not in TRANSITIONS]


@pytest.mark.parametrize(("state", "event"), ILLEGAL, ids=[f"{s.value}-{e.value}" for s, e in ILLEGAL])
def test_every_illegal_transition_raises(state, event):
    m = machine_in(state)
    seq = m.seq
    with pytest.raises(RunStateError, match="illegal transition"):
        apply(m, event)
    assert m.state is state and m.seq == seq  # nothing logged, nothing moved


def test_a_normal_run_logs_start_deltas_end_with_increasing_seq():
    m = RunMachine("msg-1")
    entries = [m.start("gpt"), m.reasoning_delta("think"), m.text_delta("Hel"), m.text_delta("lo")]
    entries += m.finish("complete", usage=Usage(1, 2, 3))
    assert [e[0] for e in entries] == [1, 2, 3, 4, 5]
    assert [e[1] for e in entries] == [Kind.STARTED, Kind.REASONING, Kind.TEXT, Kind.TEXT, Kind.ENDED]
    end = entries[-1][2]
    assert end.content == "Hello" and end.complete and end.usage.total_tokens == 3
    assert m.text == "Hello"  # reasoning is never part of the answer


def test_finish_from_pending_logs_start_then_failure_then_end():
    m = RunMachine("msg-1")
    entries = m.finish("error", failure=Failure("TIMEOUT", "too slow", True), model="m")
    assert [e[1] for e in entries] == [Kind.STARTED, Kind.FAILED, Kind.ENDED]
    assert entries[0][2].model == "m"
    assert entries[-1][2].stop_reason == "error" and not entries[-1][2].complete


@pytest.mark.parametrize("reason", ["complete", "user_cancelled", "length", "timeout", "error", "server_shutdown"])
def test_exactly_one_end_whatever_the_reason(reason):
    m = RunMachine("msg-1")
    m.start()
    m.finish(reason)
    with pytest.raises(RunStateError, match="already ended"):
        m.finish("complete")
    m.app("FOLLOW_UP_QUESTIONS", {"questions": []})  # application events may follow END
    m.seal()
    with pytest.raises(RunStateError):
        m.finish(reason)


def test_unknown_stop_reason_is_refused():
    m = RunMachine("msg-1")
    with pytest.raises(RunStateError, match="unknown stop reason"):
        m.finish("finished")
    assert m.state is RunState.PENDING


def test_text_before_start_is_illegal():
    with pytest.raises(RunStateError):
        RunMachine("msg-1").text_delta("x")
