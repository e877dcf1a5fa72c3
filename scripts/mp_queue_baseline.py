#!/usr/bin/env python3
"""The design Switchboard replaces, measured: a hub-and-spoke exchange over Python
multiprocessing.Queue. Client A -> hub -> service B -> hub -> A, 64-byte payloads.

Usage: mp_queue_baseline.py IN_FLIGHT COUNT [WARMUP]   (prints one JSON object)
"""
import json
import multiprocessing as mp
import sys
import threading
import time


def relay(source, sink):
    while True:
        item = source.get()
        sink.put(item)
        if item is None:
            return


def hub(a_out, b_in, b_out, a_in):
    # One thread per direction, like the bare pipe hub.
    forward = threading.Thread(target=relay, args=(a_out, b_in))
    backward = threading.Thread(target=relay, args=(b_out, a_in))
    forward.start()
    backward.start()
    forward.join()
    backward.join()


def service(requests, responses):
    while True:
        item = requests.get()
        responses.put(item)
        if item is None:
            return


def main():
    in_flight = int(sys.argv[1])
    count = int(sys.argv[2])
    # Requests made first at the same load and not counted, as the Rust side does.
    warmup = int(sys.argv[3]) if len(sys.argv) > 3 else 0
    total = count + warmup
    a_out, b_in, b_out, a_in = (mp.Queue() for _ in range(4))
    procs = [
        mp.Process(target=hub, args=(a_out, b_in, b_out, a_in)),
        mp.Process(target=service, args=(b_in, b_out)),
    ]
    for p in procs:
        p.start()
    payload = b"x" * 64
    # Warm up the processes and queues.
    for _ in range(100):
        a_out.put(payload)
        a_in.get()
    sent_at = {}
    latencies = []
    start = time.perf_counter()
    issued = 0
    while issued < min(in_flight, total):
        sent_at[issued] = time.perf_counter()
        a_out.put((issued, payload))
        issued += 1
    received = 0
    while received < total:
        key, _ = a_in.get()
        latency = time.perf_counter() - sent_at.pop(key)
        received += 1
        if received == warmup:
            start = time.perf_counter()
        elif received > warmup:
            latencies.append(latency)
        if issued < total:
            sent_at[issued] = time.perf_counter()
            a_out.put((issued, payload))
            issued += 1
    elapsed = time.perf_counter() - start
    a_out.put(None)
    for p in procs:
        p.join(timeout=5)
    latencies.sort()
    print(json.dumps({
        "in_flight": in_flight,
        "count": count,
        "rate": count / elapsed,
        "p50_us": latencies[len(latencies) // 2] * 1e6,
        "p99_us": latencies[int((len(latencies) - 1) * 0.99)] * 1e6,
    }))


if __name__ == "__main__":
    main()
