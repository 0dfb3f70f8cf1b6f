"""The Batcher's timing rules: what goes out together, and when."""
from __future__ import annotations

import asyncio
from collections.abc import Sequence

from miniupi.nodes.batcher import Batcher


class Recorder:
    """A batch call that answers each item with itself and remembers every batch."""

    def __init__(self) -> None:
        self.batches: list[list[str]] = []

    async def send(self, items: list[str]) -> Sequence[str]:
        self.batches.append(items)
        await asyncio.sleep(0)
        return items


class Gate(Recorder):
    """A Recorder whose call carrying exactly `held` stays in flight until `release` is set."""

    def __init__(self, held: list[str]) -> None:
        super().__init__()
        self.held, self.release = held, asyncio.Event()

    async def send(self, items: list[str]) -> Sequence[str]:
        self.batches.append(items)
        if items == self.held:
            await self.release.wait()
        return items


def test_an_urgent_item_goes_out_on_the_next_turn_of_the_loop() -> None:
    async def main() -> list[list[str]]:
        calls = Recorder()
        batcher: Batcher[str, str] = Batcher(calls.send)
        assert await asyncio.wait_for(batcher.submit("prepare"), 1) == "prepare"
        return calls.batches

    assert asyncio.run(main()) == [["prepare"]]


def test_a_patient_item_rides_with_the_next_urgent_one() -> None:
    async def main() -> tuple[list[list[str]], list[str]]:
        calls = Recorder()
        batcher: Batcher[str, str] = Batcher(calls.send)
        decision = batcher.submit("decision", 10)
        await asyncio.sleep(0.05)
        sent_alone = list(calls.batches)
        answers = await asyncio.wait_for(asyncio.gather(decision, batcher.submit("prepare")), 1)
        assert sent_alone == []
        return calls.batches, answers

    batches, answers = asyncio.run(main())
    assert batches == [["decision", "prepare"]]
    assert answers == ["decision", "prepare"]


def test_a_patient_item_alone_goes_out_when_its_patience_ends() -> None:
    async def main() -> tuple[list[list[str]], list[list[str]]]:
        calls = Recorder()
        batcher: Batcher[str, str] = Batcher(calls.send)
        decision = batcher.submit("decision", 0.3)
        await asyncio.sleep(0.1)
        before = list(calls.batches)
        await asyncio.wait_for(decision, 2)
        return before, calls.batches

    before, after = asyncio.run(main())
    assert before == []
    assert after == [["decision"]]


def test_an_item_waits_its_patience_for_company() -> None:
    async def main() -> list[list[str]]:
        calls = Recorder()
        batcher: Batcher[str, str] = Batcher(calls.send)
        first = batcher.submit("p1", 0.3)
        await asyncio.sleep(0.05)
        second = batcher.submit("p2", 0.3)
        await asyncio.wait_for(asyncio.gather(first, second), 2)
        return calls.batches

    assert asyncio.run(main()) == [["p1", "p2"]]


def test_patience_counts_from_when_the_link_is_free() -> None:
    """An item that waited out its patience behind a call in flight still waits once the call ends:
    the wait is what gathers company, and under load a call is in flight most of the time."""

    async def main() -> tuple[bool, list[list[str]]]:
        calls = Gate(["p0"])
        batcher: Batcher[str, str] = Batcher(calls.send)
        p0 = batcher.submit("p0")
        await asyncio.sleep(0.01)  # p0 is in flight
        late = batcher.submit("p1", 0.2)
        await asyncio.sleep(0.3)  # longer than p1's patience
        calls.release.set()
        await p0
        await asyncio.sleep(0.05)
        early = late.done()
        await asyncio.wait_for(late, 2)
        return early, calls.batches

    early, batches = asyncio.run(main())
    assert not early
    assert batches == [["p0"], ["p1"]]


def test_a_busy_link_lingers_after_a_full_round_for_items_waiting_at_once() -> None:
    """Items with no patience that piled up behind a round of several wait the linger, so the next
    round fills; an impatient item arriving when only patient ones wait goes at once."""

    async def main() -> tuple[bool, bool]:
        calls = Gate(["a", "b"])
        batcher: Batcher[str, str] = Batcher(calls.send, linger_s=0.5)
        first = [batcher.submit("a", 0.01), batcher.submit("b", 0.01)]
        await asyncio.sleep(0.05)  # a and b are in flight together
        behind = batcher.submit("c")
        calls.release.set()
        await asyncio.gather(*first)
        await asyncio.sleep(0.1)
        lingered = not behind.done()
        await asyncio.wait_for(behind, 2)

        calls2 = Gate(["a", "b"])
        batcher2: Batcher[str, str] = Batcher(calls2.send, linger_s=0.5)
        first = [batcher2.submit("a", 0.01), batcher2.submit("b", 0.01)]
        await asyncio.sleep(0.05)
        decision = batcher2.submit("d", 60)
        calls2.release.set()
        await asyncio.gather(*first)
        prepare = batcher2.submit("p")
        await asyncio.wait_for(asyncio.gather(decision, prepare), 0.3)
        return lingered, calls2.batches == [["a", "b"], ["d", "p"]]

    lingered, went_at_once = asyncio.run(main())
    assert lingered
    assert went_at_once


def test_flush_sends_patient_items_at_once() -> None:
    async def main() -> list[list[str]]:
        calls = Recorder()
        batcher: Batcher[str, str] = Batcher(calls.send)
        first, second = batcher.submit("d1", 60), batcher.submit("d2", 60)
        batcher.flush()
        await asyncio.wait_for(asyncio.gather(first, second), 1)
        return calls.batches

    assert asyncio.run(main()) == [["d1", "d2"]]


def test_patient_items_left_after_a_call_wait_again_and_urgent_ones_do_not() -> None:
    """A call in flight holds back everything submitted meanwhile; once it ends, the next call
    goes at once if anyone waits on an item in it, else after the patience."""

    async def main() -> list[list[str]]:
        calls = Gate(["p1"])
        batcher: Batcher[str, str] = Batcher(calls.send)
        p1 = batcher.submit("p1")
        await asyncio.sleep(0.01)  # p1 is in flight
        d1 = batcher.submit("d1", 60)
        calls.release.set()
        await p1
        await asyncio.sleep(0.05)
        assert not d1.done()  # only patient items are left: they wait for company
        p2 = batcher.submit("p2")
        await asyncio.wait_for(asyncio.gather(d1, p2), 1)
        return calls.batches

    assert asyncio.run(main()) == [["p1"], ["d1", "p2"]]


def test_close_cancels_patient_items() -> None:
    async def main() -> bool:
        calls = Recorder()
        batcher: Batcher[str, str] = Batcher(calls.send)
        decision = batcher.submit("decision", 60)
        batcher.close()
        await asyncio.sleep(0)
        return decision.cancelled() and not calls.batches

    assert asyncio.run(main())


def test_drain_sends_what_waits_and_returns_once_everything_is_answered() -> None:
    async def main() -> tuple[bool, list[list[str]], list[str]]:
        calls = Gate(["p1"])
        batcher: Batcher[str, str] = Batcher(calls.send)
        p1 = batcher.submit("p1")
        await asyncio.sleep(0.01)  # p1 is in flight
        d1 = batcher.submit("d1", 60)
        drained = asyncio.ensure_future(batcher.drain())
        await asyncio.sleep(0.05)
        early = drained.done()  # p1 is still in flight
        calls.release.set()
        await asyncio.wait_for(drained, 1)
        return early, calls.batches, [p1.result(), d1.result()]

    early, batches, answers = asyncio.run(main())
    assert not early
    assert batches == [["p1"], ["d1"]]
    assert answers == ["p1", "d1"]


def test_close_fails_the_call_in_flight_even_if_it_never_started() -> None:
    async def main() -> tuple[bool, bool]:
        calls = Recorder()
        batcher: Batcher[str, str] = Batcher(calls.send)
        prepare = batcher.submit("p1")
        await asyncio.sleep(0)  # launched: its task exists but has not run yet
        batcher.close()
        await asyncio.sleep(0.01)
        return prepare.cancelled(), batcher._in_flight

    cancelled, in_flight = asyncio.run(main())
    assert cancelled
    assert not in_flight
