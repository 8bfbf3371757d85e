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
  kafka_events.py consume BOOTSTRAP TOPIC COUNT
      reads COUNT events from the start of every partition with a plain
      confluent-kafka consumer (the brokers' and librdkafka's own pace, the
      stream benchmark's reference); prints {"events": n, "seconds": s}.
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
            # Paced: event i leaves at its slot, stamped with the time it
            # leaves.
            ahead = started + (i - first) / rate - time.time()
            if ahead > 0:
                producer.poll(min(ahead, 0.01))
                while time.time() < started + (i - first) / rate:
                    pass
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


def consume(bootstrap, topic, count):
    import time
    import uuid

    from confluent_kafka import Consumer

    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"reference-{uuid.uuid4()}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            # The fetch settings aurum's consumer uses.
            "fetch.wait.max.ms": 50,
            "max.partition.fetch.bytes": 8388608,
        }
    )
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
    {"create": create, "produce": produce, "consume": consume, "bronze": bronze}[command](*args)
    # deltalake's runtime threads can abort the interpreter's shutdown
    # ("terminate called without an active exception"); the answer is out.
    sys.stdout.flush()
    os._exit(0)
