"""TaskScope: the cancel scope of a run's provider stream on asyncio, held to anyio's rules."""

from __future__ import annotations

import asyncio
import sys

import anyio
import pytest

from streamcore._tasks import TaskScope, cancel_scope

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.skipif(sys.version_info < (3, 11), reason="TaskScope needs Task.uncancel (Python 3.11)"),
]


@pytest.fixture
def anyio_backend():
    return "asyncio"


def _scope() -> TaskScope:
    return TaskScope(asyncio.get_running_loop())


async def _started(coro, entered: asyncio.Event) -> asyncio.Task:
    """``coro`` in a task of its own, once it has set ``entered`` (inside its scope)."""
    task = asyncio.create_task(coro)
    await entered.wait()
    return task


async def test_a_cancel_from_another_task_ends_the_body_and_is_swallowed():
    entered = asyncio.Event()
    after: list[str] = []
    scope = _scope()

    async def body():
        with scope:
            entered.set()
            await asyncio.Event().wait()  # forever, unless cancelled
            after.append("not reached")
        after.append("past the scope")
        await asyncio.sleep(0)  # later awaits are not cancelled
        after.append("awaited again")
        return asyncio.current_task().cancelling()

    task = await _started(body(), entered)
    scope.cancel()
    assert await asyncio.wait_for(task, 5) == 0
    assert after == ["past the scope", "awaited again"]
    assert scope.cancel_called and scope.cancelled_caught


async def test_a_scope_cancelled_before_it_is_entered_cancels_at_the_first_await():
    scope = _scope()
    scope.cancel()
    reached: list[str] = []

    async def body():
        with scope:
            reached.append("entered")  # the body starts: like anyio, nothing before an await
            await asyncio.sleep(3600)
            reached.append("not reached")
        await asyncio.sleep(0)
        reached.append("after")

    await asyncio.wait_for(body(), 5)
    assert reached == ["entered", "after"]
    assert scope.cancelled_caught


async def test_a_cancel_from_the_task_itself_never_lands_after_the_scope():
    """Cancelled from inside and leaving without a suspension: nothing is delivered, and
    the awaits after the scope are not hit by a cancellation meant for the body."""
    scope = _scope()

    async def body():
        with scope:
            scope.cancel()  # e.g. a reader leaving while the run emits, grace period 0
        await asyncio.sleep(0)
        await asyncio.sleep(0.01)
        return "done"

    assert await asyncio.wait_for(body(), 5) == "done"
    assert scope.cancel_called and not scope.cancelled_caught


async def test_a_cancel_from_the_task_itself_lands_at_its_next_await_inside():
    scope = _scope()
    steps: list[str] = []

    async def body():
        with scope:
            scope.cancel()
            steps.append("cancelled")
            await asyncio.sleep(3600)
            steps.append("not reached")
        steps.append("after")

    await asyncio.wait_for(body(), 5)
    assert steps == ["cancelled", "after"] and scope.cancelled_caught


async def test_the_cancellation_is_delivered_again_while_the_body_stays_inside():
    """A provider that swallows one CancelledError cannot keep the run going (anyio's
    level-triggered cancellation)."""
    entered = asyncio.Event()
    swallowed = 0
    scope = _scope()

    async def stubborn():
        nonlocal swallowed
        with scope:
            entered.set()
            for _ in range(3):
                try:
                    await asyncio.sleep(3600)
                except asyncio.CancelledError:
                    swallowed += 1
            await asyncio.sleep(3600)
        return asyncio.current_task().cancelling()

    task = await _started(stubborn(), entered)
    scope.cancel()
    assert await asyncio.wait_for(task, 5) == 0
    assert swallowed == 3 and scope.cancelled_caught


async def test_a_foreign_cancellation_passes_through():
    entered = asyncio.Event()
    scope = _scope()

    async def body():
        with scope:
            entered.set()
            await asyncio.sleep(3600)

    task = await _started(body(), entered)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 5)
    assert not scope.cancelled_caught


async def test_a_foreign_cancellation_landing_with_its_own_is_not_swallowed():
    """The engine cancelling its run tasks while a STOP cancelled the scope: the task
    still ends cancelled (the two requests fold into one CancelledError)."""
    entered = asyncio.Event()
    scope = _scope()

    async def body():
        with scope:
            entered.set()
            await asyncio.sleep(3600)
        await asyncio.sleep(3600)  # not reached: the task is cancelled

    task = await _started(body(), entered)
    scope.cancel()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 5)
    assert not scope.cancelled_caught


async def test_an_inner_anyio_scope_lets_the_run_scope_cancellation_through():
    entered = asyncio.Event()
    scope = _scope()
    inner_caught: list[bool] = []

    async def body():
        with scope:
            with anyio.CancelScope() as inner:  # as httpx/httpcore do inside a provider
                entered.set()
                await anyio.sleep(3600)
            inner_caught.append(inner.cancelled_caught)
        return "after"

    task = await _started(body(), entered)
    scope.cancel()
    assert await asyncio.wait_for(task, 5) == "after"
    assert inner_caught == [] and scope.cancelled_caught


async def test_an_inner_anyio_timeout_stays_inside():
    scope = _scope()

    async def body():
        with scope:
            with anyio.move_on_after(0.01) as inner:
                await anyio.sleep(3600)
            await asyncio.sleep(0)
            return inner.cancelled_caught

    assert await asyncio.wait_for(body(), 5) is True
    assert not scope.cancel_called and not scope.cancelled_caught


async def test_a_shielded_cleanup_inside_the_body_is_not_cancelled():
    """A provider's ``finally`` releasing its response under ``CancelScope(shield=True)``
    (providers/openai.py) runs to its end, over several turns of the loop."""
    entered = asyncio.Event()
    cleaned: list[int] = []
    scope = _scope()

    async def provider_like():
        with scope:
            try:
                entered.set()
                await asyncio.sleep(3600)
            finally:
                with anyio.CancelScope(shield=True):
                    for i in range(5):
                        await asyncio.sleep(0.002)
                        cleaned.append(i)
        return asyncio.current_task().cancelling()

    task = await _started(provider_like(), entered)
    scope.cancel()
    assert await asyncio.wait_for(task, 5) == 0
    assert cleaned == [0, 1, 2, 3, 4] and scope.cancelled_caught


async def test_a_shielded_cleanup_does_not_keep_the_loop_busy():
    """While the body is in a shield, the scope looks again every 10 ms, not at every turn
    of the loop (which never lets the loop sleep: a core at 100% for the whole cleanup)."""
    calls = 0

    class Counting(TaskScope):
        __slots__ = ()

        def _deliver(self) -> None:
            nonlocal calls
            calls += 1
            super()._deliver()

    entered = asyncio.Event()
    scope = Counting(asyncio.get_running_loop())

    async def body():
        with scope:
            try:
                entered.set()
                await asyncio.sleep(3600)
            finally:
                with anyio.CancelScope(shield=True):
                    await asyncio.sleep(0.2)

    task = await _started(body(), entered)
    scope.cancel()
    await asyncio.wait_for(task, 5)
    assert scope.cancelled_caught
    # 0.2 s / 10 ms, and a few turns around the shield; turning every loop: thousands.
    assert calls < 60, calls


async def test_a_group_of_its_own_cancellations_is_swallowed_and_the_rest_goes_on():
    """As anyio: a body that wraps the scope's CancelledError in an exception group."""
    scope = _scope()
    entered = asyncio.Event()

    async def body(extra: BaseException | None):
        with scope:
            try:
                entered.set()
                await asyncio.sleep(3600)
            except asyncio.CancelledError as exc:
                raise BaseExceptionGroup("wrapped", [exc] + ([extra] if extra else [])) from None  # noqa: F821 (3.11+)
        return "after"

    task = await _started(body(None), entered)
    scope.cancel()
    assert await asyncio.wait_for(task, 5) == "after" and scope.cancelled_caught

    scope = _scope()
    entered.clear()
    task = await _started(body(ValueError("boom")), entered)
    scope.cancel()
    with pytest.raises(BaseExceptionGroup) as info:  # noqa: F821 (the module needs 3.11)
        await asyncio.wait_for(task, 5)
    assert [type(e) for e in info.value.exceptions] == [ValueError] and scope.cancelled_caught


async def test_a_cancel_while_the_body_is_shielded_waits_for_the_shield_to_end():
    in_shield, leave_shield = asyncio.Event(), asyncio.Event()
    steps: list[str] = []
    scope = _scope()

    async def body():
        with scope:
            with anyio.CancelScope(shield=True):
                in_shield.set()
                await leave_shield.wait()
                await asyncio.sleep(0)
                steps.append("shield done")
            await asyncio.sleep(3600)
            steps.append("not reached")
        steps.append("after")

    task = await _started(body(), in_shield)
    scope.cancel()
    for _ in range(5):  # turns of the loop with the cancellation pending
        await asyncio.sleep(0)
    leave_shield.set()
    await asyncio.wait_for(task, 5)
    assert steps == ["shield done", "after"] and scope.cancelled_caught


async def test_a_shield_around_the_scope_does_not_stop_it():
    entered = asyncio.Event()
    scope = _scope()

    async def body():
        with anyio.CancelScope(shield=True):
            with scope:
                entered.set()
                await asyncio.sleep(3600)
            return "after"

    task = await _started(body(), entered)
    scope.cancel()
    assert await asyncio.wait_for(task, 5) == "after"
    assert scope.cancelled_caught


async def test_a_body_that_ends_before_the_cancel_is_not_cancelled():
    scope = _scope()
    with scope:
        await asyncio.sleep(0)
    scope.cancel()  # after the exit: nothing to deliver
    await asyncio.sleep(0.01)
    assert not scope.cancelled_caught and asyncio.current_task().cancelling() == 0


async def test_cancel_scope_is_anyios_without_an_asyncio_loop():
    assert isinstance(cancel_scope(None), anyio.CancelScope)
    assert isinstance(cancel_scope(asyncio.get_running_loop()), TaskScope)
