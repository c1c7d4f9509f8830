"""Garbage-collector settings for a long-running core process.

Why: Python's full collection walks every tracked object. A server holding 10,000 live
conversations has a few hundred thousand of them, so a full collection that happens while
10,000 sessions expire at once stalls every other task for ~200 ms, far above the 50 ms the
scheduler may stall (bench/README.md, Core, 2026-11-25). Two settings bring it under:

* :func:`gc.freeze` once start-up (and the restore of open sessions) is done: what exists
  then lives for the whole run, and a frozen object is never walked again.
* Larger thresholds: a young collection every 10,000 allocations instead of 700, and a full
  one after 100 older ones instead of 10. Most objects of a message (entries, transitions,
  effects) die within one scheduler tick, before any young collection sees them, so fewer
  collections find the same garbage with less walking; full collections become rarer.

The price: cyclic garbage lives a little longer (it is still collected), and a frozen object
that later becomes garbage in a cycle is never collected (conversations do not form cycles
once retired, and the frozen set is only what start-up built). Call :func:`tune_collector`
once, after start-up; the embedding application decides, so the core never calls it itself.
"""

from __future__ import annotations

import gc

YOUNG_THRESHOLD = 10_000
MIDDLE_THRESHOLD = 50
OLD_THRESHOLD = 100


def raise_thresholds() -> None:
    """Take the larger thresholds before start-up: restoring 10,000 open sessions builds
    objects that live for the whole run, and with the default ones each full collection
    on the way walks all that was built so far again (about a third of the restore)."""
    gc.set_threshold(YOUNG_THRESHOLD, MIDDLE_THRESHOLD, OLD_THRESHOLD)


def tune_collector() -> None:
    """Freeze what start-up built and raise the collector's thresholds (see module doc).
    No full collection first: after a restore of 10,000 open sessions it walked 200,000
    objects (0.1-0.3 s of every start) to find about 150 of cyclic garbage, which stay
    frozen instead (bench/README.md, 2026-12-03 (evening): restart)."""
    gc.freeze()
    gc.set_threshold(YOUNG_THRESHOLD, MIDDLE_THRESHOLD, OLD_THRESHOLD)
