"""The event store on a real nats-server with JetStream."""

from __future__ import annotations

import pytest
from nats.aio.client import Client

from libs.api.events import testing_pb2 as t
from libs.api.events.envelope_pb2 import Envelope, EventBatch
from libs.config import Config
from libs.errors import (
    AlreadyExists,
    ConcurrencyError,
    InvalidArgument,
    MalformedMessage,
    MessageTooLarge,
    UnknownEventType,
)
from libs.events import (
    NEW,
    AggregateRef,
    Append,
    EventStore,
    Position,
    ensure_stream,
    execute,
    load,
)
from tests.support import counter


async def make_store(nc: Client, max_message_bytes: int = 1 << 20) -> EventStore:
    js = nc.jetstream()
    cfg = Config(max_message_bytes=max_message_bytes)
    await ensure_stream(js, cfg)
    await ensure_stream(js, cfg)  # idempotent
    return EventStore.from_config(nc, counter.registry(), cfg)


async def test_append_and_read_back_in_order(nc: Client) -> None:
    store = await make_store(nc)
    agg = counter.ref("a")
    first = await store.append(agg, [t.CounterOpened(name="a")], NEW, principal="alice")
    second = await store.append(
        agg, [t.CounterIncremented(by=2), t.CounterIncremented(by=3)], first.position
    )
    assert second.position.version == 3
    events = [e async for e in store.read(agg)]
    assert [e.type for e in events] == [
        "testing.CounterOpened",
        "testing.CounterIncremented",
        "testing.CounterIncremented",
    ]
    assert [e.aggregate_version for e in events] == [1, 2, 3]
    assert events[0].envelope.principal == "alice"
    assert events[1].stream_seq == events[2].stream_seq == second.position.seq
    assert await store.position(agg) == second.position
    assert await store.position(counter.ref("none")) == NEW


async def test_stale_expected_position_is_a_concurrency_error(nc: Client) -> None:
    store = await make_store(nc)
    agg = counter.ref("b")
    opened = await store.append(agg, [t.CounterOpened()], NEW)
    await store.append(agg, [t.CounterIncremented(by=1)], opened.position)
    with pytest.raises(ConcurrencyError) as info:
        await store.append(agg, [t.CounterIncremented(by=1)], opened.position)
    assert info.value.fields["expected"] == opened.position.seq
    # Creating an aggregate that exists is also a lost race.
    with pytest.raises(ConcurrencyError):
        await store.append(agg, [t.CounterOpened()], NEW)
    assert len([e async for e in store.read(agg)]) == 2


async def test_retried_append_with_same_msg_id_is_stored_once(nc: Client) -> None:
    store = await make_store(nc)
    agg = counter.ref("c")
    a = await store.append(agg, [t.CounterOpened()], NEW, msg_id="cmd-1")
    b = await store.append(agg, [t.CounterOpened()], NEW, msg_id="cmd-1")
    assert b.duplicate and not a.duplicate
    assert b.position.seq == a.position.seq
    assert len([e async for e in store.read(agg)]) == 1


async def test_upcaster_turns_v1_into_v2_on_read(nc: Client) -> None:
    store = await make_store(nc)
    agg = counter.ref("d")
    opened = await store.append(agg, [t.CounterOpened()], NEW)
    # An old writer stored the v1 schema.
    await store.append(agg, [t.RenamedV1(full_name="Ada Lovelace")], opened.position)
    events = [e async for e in store.read(agg)]
    assert events[1].envelope.schema_version == 1
    assert isinstance(events[1].event, t.Renamed)
    assert (events[1].event.given_name, events[1].event.family_name) == ("Ada", "Lovelace")
    state = (await load(store, agg, counter.Counter(), counter.evolve)).state
    assert state.family_name == "Lovelace"


async def test_execute_decides_on_current_state(nc: Client) -> None:
    store = await make_store(nc)
    agg = counter.ref("e")
    await execute(store, agg, counter.Counter(), counter.evolve, counter.open_counter)
    done = await execute(store, agg, counter.Counter(), counter.evolve, counter.increment(5))
    assert done.state.value == 5
    with pytest.raises(AlreadyExists):
        await execute(store, agg, counter.Counter(), counter.evolve, counter.open_counter)


async def test_bad_input_gets_typed_errors_and_changes_nothing(nc: Client) -> None:
    store = await make_store(nc, max_message_bytes=4096)
    agg = counter.ref("f")
    with pytest.raises(UnknownEventType):
        await store.append(agg, [Envelope()], NEW)  # not an event message
    with pytest.raises(MessageTooLarge):
        await store.append(agg, [t.CounterOpened(name="x" * 10_000)], NEW)
    with pytest.raises(InvalidArgument):
        await store.append(agg, [], NEW)
    with pytest.raises(InvalidArgument):
        AggregateRef("bad.service", "counter", "x")
    assert await store.position(agg) == NEW


async def test_ids_that_are_not_subject_tokens_are_encoded(nc: Client) -> None:
    store = await make_store(nc)
    odd = counter.ref("a.b *>/ü")
    await store.append(odd, [t.CounterOpened()], NEW)
    assert AggregateRef.from_subject(odd.subject) == odd
    assert [e.aggregate.id async for e in store.read(odd)] == ["a.b *>/ü"]
    assert await store.position(counter.ref("a")) == NEW


async def test_garbage_on_an_event_subject_reads_as_malformed(nc: Client) -> None:
    store = await make_store(nc)
    agg = counter.ref("g")
    await nc.jetstream().publish(agg.subject, b"\xff\x00garbage")
    with pytest.raises(MalformedMessage):
        [e async for e in store.read(agg)]
    # An envelope of a type nobody registered.
    bad = EventBatch(
        events=[
            Envelope(
                event_id="x",
                type="nope.Nothing",
                schema_version=1,
                aggregate_id="h",
                aggregate_service="testing",
                aggregate_type="counter",
                aggregate_version=1,
            )
        ]
    )
    other = counter.ref("h")
    await nc.jetstream().publish(other.subject, bad.SerializeToString())
    with pytest.raises(UnknownEventType):
        [e async for e in store.read(other)]
    # The store still works for everyone else.
    await store.append(counter.ref("i"), [t.CounterOpened()], NEW)
    assert (await store.position(counter.ref("i"))).version == 1
    assert Position(0, 0) == NEW


async def test_public_publish_path_behaves_like_the_fast_path(
    nc: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The publisher writes batches with nats-py internals when it can and
    falls back to ``nc.publish`` otherwise; force the fallback everywhere."""
    from libs.events import publisher

    monkeypatch.setattr(publisher, "_write_raw", lambda *a, **k: False)
    store = await make_store(nc)
    results = await store.append_many(
        [Append(counter.ref(f"slow{i}"), [t.CounterOpened()], NEW) for i in range(50)]
    )
    assert all(not isinstance(r, Exception) for r in results)
    first = results[0]
    assert not isinstance(first, Exception)
    again = await store.append_many(
        [
            Append(counter.ref("slow0"), [t.CounterIncremented(by=1)], NEW),  # lost race
            Append(counter.ref("slow1"), [t.CounterIncremented(by=1)], first.position),  # stale
        ]
    )
    assert isinstance(again[0], ConcurrencyError)
    assert isinstance(again[1], ConcurrencyError)
    dup1 = await store.append(counter.ref("fresh"), [t.CounterOpened()], NEW, msg_id="m")
    dup2 = await store.append(counter.ref("fresh"), [t.CounterOpened()], NEW, msg_id="m")
    assert dup2.duplicate and dup2.position == dup1.position


async def test_trace_context_and_principal_travel_in_the_envelope(nc: Client) -> None:
    from opentelemetry.sdk.trace import TracerProvider

    store = await make_store(nc)
    tracer = TracerProvider().get_tracer("test")
    with tracer.start_as_current_span("command") as span:
        trace_id = format(span.get_span_context().trace_id, "032x")
        await store.append(
            counter.ref("traced"),
            [t.CounterOpened()],
            NEW,
            principal="robot:ci",
            causation_id="cmd-7",
            correlation_id="req-9",
        )
    [event] = [e async for e in store.read(counter.ref("traced"))]
    env = event.envelope
    assert env.trace_context["traceparent"].split("-")[1] == trace_id
    assert (env.principal, env.causation_id, env.correlation_id) == ("robot:ci", "cmd-7", "req-9")
    assert env.time.seconds > 0 and len(env.event_id) == 32
