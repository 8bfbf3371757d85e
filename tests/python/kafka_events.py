"""Kafka from a real client (confluent-kafka, librdkafka), for the stream
tests and benchmarks: create a topic, produce payment events, and read back
what aurum landed in bronze with Python's deltalake.

usage:
  kafka_events.py create BOOTSTRAP TOPIC PARTITIONS
  kafka_events.py produce BOOTSTRAP TOPIC FIRST COUNT [BAD_EVERY [ONE_PER_BATCH [RATE]]]
      events FIRST..FIRST+COUNT-1 (event i: customer c{i % 97}, amount
      i / 100, time 2026-01-01 + i seconds); with BAD_EVERY, every
      BAD_EVERY-th event is malformed (in turn: not JSON, a JSON array, an
      unparseable time, no customer). ONE_PER_BATCH=1 sends each event in
      a record batch of its own: tansu 0.6 answers a fetch from an offset
      inside a batch with the next batch, skipping the rest of that one, so
      a consumer resuming mid-batch would miss events through no fault of
      its own. With RATE (events/s; -1: as fast as possible), events are
      stamped with the time they are sent instead. Prints {"produced": n,
      "bad": [...]}.
  kafka_events.py produce_avro BOOTSTRAP TOPIC SCHEMA_FILE COUNT SCHEMA_ID
      COUNT events written with fastavro in the schema of SCHEMA_FILE
      (event i as above, its time a timestamp-millis, a note field no
      column declares), framed as Confluent's Schema Registry frames them
      with SCHEMA_ID; every 10th event is malformed (in turn: cut short,
      framed with another schema id, a union branch the schema lacks).
      Prints {"produced": n, "bad": [...], "sum": total amount of the
      good events}.
  kafka_events.py consume BOOTSTRAP TOPIC COUNT
      reads COUNT events from the start of every partition with a plain
      confluent-kafka consumer (the brokers' and librdkafka's own pace, the
      stream benchmark's reference); prints {"events": n, "seconds": s}.
  kafka_events.py latency BOOTSTRAP TOPIC COUNT
      reads COUNT live-stamped events (produce with RATE) as they arrive
      with a plain confluent-kafka consumer (aurum's fetch settings) and
      prints the time from each event's stamp to its receipt: {"p50_ms",
      "p90_ms", "p99_ms", "events"} (the broker's and librdkafka's own
      latency, the stream latency benchmark's reference).
  kafka_events.py bronze TABLE_DIR
      what the bronze table holds: rows, distinct (partition, offset)
      pairs, event ids, and per partition the smallest and largest offset.
"""

import json
import os
import sys
import time
from datetime import datetime, timedelta, timezone


def create(bootstrap, topic, partitions):
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": bootstrap})
    futures = admin.create_topics(
        [NewTopic(topic, num_partitions=int(partitions), replication_factor=1)]
    )
    for future in futures.values():
        future.result(timeout=30)
    print(json.dumps({"created": topic, "partitions": int(partitions)}))


BASE = datetime(2026, 1, 1, tzinfo=timezone.utc)


def event(i, bad_every, live=False):
    customer = f"c{i % 97}"
    if live:
        when = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    else:
        when = (BASE + timedelta(seconds=i)).strftime("%Y-%m-%dT%H:%M:%SZ")
    good = {"event_id": i, "customer_id": customer, "amount": i / 100, "ts": when}
    if bad_every and i % bad_every == bad_every - 1:
        kind = (i // bad_every) % 4
        if kind == 0:
            return customer, b"{not json", "not JSON"
        if kind == 1:
            return customer, b"[1, 2]", "JSON array"
        if kind == 2:
            return customer, json.dumps({**good, "ts": "yesterday"}).encode(), "timestamp"
        del good["customer_id"]
        return customer, json.dumps(good).encode(), "customer_id"
    return customer, json.dumps(good).encode(), None


def produce(bootstrap, topic, first, count, bad_every=0, one_per_batch=0, rate=0):
    from confluent_kafka import Producer

    settings = {
        "bootstrap.servers": bootstrap,
        "linger.ms": 5,
        "enable.idempotence": False,
        "acks": "all",
    }
    if int(one_per_batch):
        settings["batch.num.messages"] = 1
    producer = Producer(settings)
    failures = []

    def delivered(err, _msg):
        if err is not None:
            failures.append(str(err))

    bad = []
    first, count, bad_every, rate = int(first), int(count), int(bad_every), float(rate)
    started = time.time()
    for i in range(first, first + count):
        if rate > 0:
            # Paced: event i leaves at its slot (to the half millisecond,
            # sleeping rather than spinning, so the producer does not take
            # a core from the consumer it is measuring), stamped with the
            # time it leaves.
            ahead = started + (i - first) / rate - time.time()
            while ahead > 0:
                producer.poll(min(ahead, 0.0005))
                ahead = started + (i - first) / rate - time.time()
        key, value, why = event(i, bad_every, live=rate != 0)
        if why:
            bad.append({"event": i, "why": why})
        while True:
            try:
                producer.produce(topic, key=key.encode(), value=value, on_delivery=delivered)
                break
            except BufferError:
                producer.poll(0.05)
        producer.poll(0)
    left = producer.flush(60)
    if left or failures:
        raise SystemExit(f"{left} events undelivered, failures: {failures[:5]}")
    print(json.dumps({"produced": count, "bad": bad}))


def produce_avro(bootstrap, topic, schema_file, count, schema_id):
    import io
    import struct

    import fastavro
    from confluent_kafka import Producer

    with open(schema_file) as f:
        schema = fastavro.parse_schema(json.load(f))
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
    count, schema_id = int(count), int(schema_id)
    bad, total = [], 0.0
    for i in range(count):
        record = {
            "event_id": i,
            "customer_id": f"c{i % 7}",
            "amount": i / 4,
            "ts": BASE + timedelta(seconds=i, milliseconds=250),
            "note": None if i % 2 else f"note {i}",
        }
        body = io.BytesIO()
        fastavro.schemaless_writer(body, schema, record)
        datum = body.getvalue()
        frame_id = schema_id
        if i % 10 == 9:
            kind = (i // 10) % 3
            if kind == 0:
                datum = datum[:-3]
                bad.append({"event": i, "why": "short"})
            elif kind == 1:
                frame_id = schema_id + 1
                bad.append({"event": i, "why": "schema id"})
            else:
                # event_id, then customer_id's union branch 5.
                head = io.BytesIO()
                fastavro.schemaless_writer(head, {"type": "long"}, i)
                datum = head.getvalue() + bytes([10])
                bad.append({"event": i, "why": "union branch"})
        else:
            total += i / 4
        value = struct.pack(">bI", 0, frame_id) + datum
        producer.produce(topic, key=record["customer_id"].encode(), value=value)
        producer.poll(0)
    left = producer.flush(60)
    if left:
        raise SystemExit(f"{left} events undelivered")
    print(json.dumps({"produced": count, "bad": bad, "sum": total}))


def reference_consumer(bootstrap, start):
    """A plain consumer in a group of its own, with aurum's fetch settings."""
    import uuid

    from confluent_kafka import Consumer

    return Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"reference-{uuid.uuid4()}",
            "auto.offset.reset": start,
            "enable.auto.commit": False,
            "fetch.wait.max.ms": 10,
            "fetch.queue.backoff.ms": 10,
            "max.partition.fetch.bytes": 8388608,
        }
    )


def consume(bootstrap, topic, count):
    consumer = reference_consumer(bootstrap, "earliest")
    consumer.subscribe([topic])
    count, seen, started = int(count), 0, None
    deadline = time.time() + 600
    while seen < count and time.time() < deadline:
        for message in consumer.consume(10000, 0.5):
            if message.error() is None:
                if started is None:
                    started = time.time()
                seen += 1
    seconds = time.time() - (started or time.time())
    consumer.close()
    print(json.dumps({"events": seen, "seconds": seconds}))


def latency(bootstrap, topic, count):
    consumer = reference_consumer(bootstrap, "latest")
    consumer.subscribe([topic])
    count, waits = int(count), []
    deadline = time.time() + 600
    print(json.dumps({"ready": True}), flush=True)
    while len(waits) < count and time.time() < deadline:
        for message in consumer.consume(10000, 0.1):
            if message.error() is not None:
                continue
            now = datetime.now(timezone.utc)
            sent = json.loads(message.value())["ts"]
            sent = datetime.strptime(sent, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc)
            waits.append((now - sent).total_seconds() * 1000)
    consumer.close()
    waits.sort()
    at = lambda p: waits[min(int(len(waits) * p), len(waits) - 1)] if waits else None
    print(json.dumps({"events": len(waits), "p50_ms": at(0.5), "p90_ms": at(0.9), "p99_ms": at(0.99)}))


def bronze(table_dir):
    from deltalake import DeltaTable

    table = DeltaTable(table_dir).to_pyarrow_table(
        columns=["event_id", "_source_file", "_source_row", "_error"]
    ).to_pylist()
    pairs = {(r["_source_file"], r["_source_row"]) for r in table}
    ids = [r["event_id"] for r in table if r["event_id"] is not None]
    partitions = {}
    for f, o in pairs:
        lo, hi, n = partitions.get(f, (o, o, 0))
        partitions[f] = (min(lo, o), max(hi, o), n + 1)
    print(
        json.dumps(
            {
                "rows": len(table),
                "distinct_offsets": len(pairs),
                "event_ids": len(ids),
                "distinct_event_ids": len(set(ids)),
                "errors": sum(1 for r in table if r["_error"] is not None),
                "partitions": {
                    f: {"first": lo, "last": hi, "count": n}
                    for f, (lo, hi, n) in sorted(partitions.items())
                },
            }
        )
    )


if __name__ == "__main__":
    command, args = sys.argv[1], sys.argv[2:]
    {
        "create": create,
        "produce": produce,
        "produce_avro": produce_avro,
        "consume": consume,
        "latency": latency,
        "bronze": bronze,
    }[command](*args)
    # deltalake's runtime threads can abort the interpreter's shutdown
    # ("terminate called without an active exception"); the answer is out.
    sys.stdout.flush()
    os._exit(0)
