"""One home for "reuse the compiled function when the ingredients are the same".

jnn builds jitted functions from static ingredients (a model, a loss, an optimizer, shapes).
:func:`cached` memoises the builder's result in a small bounded LRU table keyed by those
ingredients, so a second ``fit`` / ``evaluate`` / ``predict`` with the same ingredients reuses
the compiled program; an unhashable ingredient (a closure over arrays, a dict) builds afresh.
The table holds at most ``MAX_ENTRIES`` entries per builder, so a long-running process (a
notebook, a sweep driver) keeps at most that many models and executables alive.
"""

from __future__ import annotations

import collections
import functools
import threading

__all__ = ["MAX_ENTRIES", "cached"]

MAX_ENTRIES = 16


def cached(builder=None, *, max_entries: int = MAX_ENTRIES):
    """Decorator: ``builder(*ingredients)`` memoised in a bounded LRU table.

    Args:
      builder: a function of hashable ingredients returning e.g. a jitted function.
      max_entries: the table's bound; the least recently used entry is dropped first.

    Returns:
      The memoised builder; ``.cache_clear()`` empties its table, ``.cache_len()`` sizes it.
    """
    if builder is None:
        return functools.partial(cached, max_entries=max_entries)
    table: collections.OrderedDict = collections.OrderedDict()
    lock = threading.Lock()

    @functools.wraps(builder)
    def get(*ingredients):
        try:
            hash(ingredients)
        except TypeError:  # something unhashable: build afresh, keep nothing
            return builder(*ingredients)
        with lock:
            if ingredients in table:
                table.move_to_end(ingredients)
                return table[ingredients]
        value = builder(*ingredients)
        with lock:
            table[ingredients] = value
            table.move_to_end(ingredients)
            while len(table) > max_entries:
                table.popitem(last=False)
        return value

    get.cache_clear = table.clear
    get.cache_len = lambda: len(table)
    return get
