"""Job: a batch report over every order, paged through `order.list`.

Params (JSON, all optional): ``{"page": 50, "pace_ms": 100, "pace_total_ms": 10000,
"call_timeout_ms": 5000}`` — the page size, a pause after each page so progress is visible in
the console, the most all those pauses may add up to (with many orders each pause shrinks, so a
demo database that has grown for hours is still reported in seconds), and the deadline of each
`order.list` call.

Progress: one task slot, "report: page" with done/total = pages read/pages in all, then
"report: summarise" 0/1 → 1/1.

Result (the JobResult body)::

    {"orders": N, "revenue_cents": X, "by_status": {status: count},
     "top_items": [[item, quantity], ...],   # up to 5, most quantity first, ties by name
     "customers": distinct user ids, "pages": P}

If `order` cannot be reached (unavailable, timeout, overloaded, circuit open) the call is retried
with backoff; after the last retry the job fails with an `unavailable` JobResult and exit status 1.
(A crashed `order` that the console still wants holds the call until its deadline, so the
answer is then `timeout`: `call_timeout_ms` bounds how long each attempt takes.)

Stack file::

    [services.report]
    kind = "job"
    command = "python3"
    args = ["services/python/order_report.py"]
    protocol = true
    calls = ["order"]
    depends_on = { order = "ready" }
    cwd = "."      # the repository root, if the stack file lives there
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from switchboard_sdk import CallError, ErrorCode, JobFailed, Service, TaskState

log = logging.getLogger("order_report")

RETRYABLE = {ErrorCode.UNAVAILABLE, ErrorCode.TIMEOUT, ErrorCode.OVERLOADED,
             ErrorCode.CIRCUIT_OPEN}
RETRIES = 4            # after the first attempt
BACKOFF_S = 0.25       # doubled after each failed attempt: 0.25 + 0.5 + 1 + 2 s at most


@dataclass
class Tally:
    orders: int = 0
    revenue_cents: int = 0
    by_status: Counter[str] = field(default_factory=Counter)
    quantities: Counter[str] = field(default_factory=Counter)
    customers: set[int] = field(default_factory=set)
    pages: int = 0

    def add(self, order: dict[str, Any]) -> None:
        self.orders += 1
        self.revenue_cents += int(order["amount_cents"])
        self.by_status[str(order["status"])] += 1
        self.quantities[str(order["item"])] += int(order["quantity"])
        self.customers.add(int(order["user_id"]))

    def result(self) -> dict[str, Any]:
        top = sorted(self.quantities.items(), key=lambda kv: (-kv[1], kv[0]))[:5]
        return {
            "orders": self.orders,
            "revenue_cents": self.revenue_cents,
            "by_status": dict(sorted(self.by_status.items())),
            "top_items": [[item, quantity] for item, quantity in top],
            "customers": len(self.customers),
            "pages": self.pages,
        }


def list_page(svc: Service, after: int, limit: int, timeout: float) -> dict[str, Any]:
    """One `order.list` call, retried with backoff while order is unreachable."""
    delay = BACKOFF_S
    for attempt in range(RETRIES + 1):
        try:
            answer = svc.call("order", "list", {"after": after, "limit": limit},
                              timeout=timeout)
        except CallError as err:
            if err.code not in RETRYABLE:
                raise JobFailed(f"order.list failed: {err}", err.code) from None
            if attempt == RETRIES:
                raise JobFailed(f"order service unavailable after {RETRIES + 1} attempts: {err}",
                                ErrorCode.UNAVAILABLE) from None
            log.warning("order.list attempt %d: %s; retrying in %.2fs", attempt + 1, err, delay)
            time.sleep(delay)
            delay *= 2
            continue
        if not isinstance(answer, dict) or not isinstance(answer.get("orders"), list):
            raise JobFailed(f"order.list answered {answer!r:.200}", ErrorCode.BAD_REQUEST)
        return answer
    raise AssertionError("unreachable")


def report(params: dict[str, Any], svc: Service) -> dict[str, Any]:
    page = int(params.get("page", 50))
    pace = float(params.get("pace_ms", 100)) / 1000
    pace_total = float(params.get("pace_total_ms", 10_000)) / 1000
    timeout = float(params.get("call_timeout_ms", 5000)) / 1000
    if page < 1:
        raise JobFailed("page must be at least 1", ErrorCode.BAD_REQUEST)
    task = svc.task("report: page", total=0)
    tally = Tally()
    pause = pace
    after: int | None = 0
    try:
        while after is not None:
            if svc.stopping:
                raise JobFailed("cancelled: the console is shutting down", ErrorCode.UNAVAILABLE)
            answer = list_page(svc, after, page, timeout)
            for order in answer["orders"]:
                tally.add(order)
            tally.pages += 1
            pages = max(tally.pages, -(-int(answer.get("total", 0)) // page))
            task.update(done=tally.pages, total=pages)
            log.info("page %d/%d: %d orders so far", tally.pages, pages, tally.orders)
            after = answer.get("next")
            pause = min(pace, pace_total / (pages + 1))
            if after is not None:
                time.sleep(pause)
        task.update(label="report: summarise", done=0, total=1)
        result = tally.result()
        time.sleep(pause)
        task.update(done=1)
        task.finish()
    except BaseException:
        task.finish(TaskState.CANCELLED if svc.stopping else TaskState.FAILED)
        raise
    return result


if __name__ == "__main__":
    raise SystemExit(Service("report", version="0.1.0").run_job(report))
