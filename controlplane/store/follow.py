"""Follow a key prefix for as long as the process runs, surviving store failures.

Every long-lived watcher in the control plane (nodes, presence keys, replica records for fencing,
capacity requests for the reconciler) is the same loop: watch from a revision, apply each event,
and when the store goes away (a dead etcd member, a broken stream, a compaction past the
revision) wait a second and watch again, from the last revision seen or, with ``resync``, from
a fresh listing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from controlplane.store.base import Store, WatchEvent
from tokenfab.logs import get_logger

log = get_logger("store.follow")
RETRY_S = 1.0


async def follow(
    store: Store,
    prefix: str,
    apply: Callable[[WatchEvent], None],
    *,
    start_revision: int | None = None,
    resync: Callable[[], Awaitable[int]] | None = None,
    what: str,
) -> None:
    """Apply every change under ``prefix`` until cancelled.

    ``start_revision``: resume from there, then from the last event seen. None: every (re)start
    begins at the store's current revision (for followers that only react to what happens next).
    ``resync``: after a failure, rebuild the follower's state and return the revision it read at.
    """
    revision = start_revision
    while True:
        try:
            if start_revision is None:
                _, current = await store.list_prefix(prefix)
                revision = current + 1
            assert revision is not None
            async for event in store.watch_prefix(prefix, start_revision=revision):
                revision = event.mod_revision + 1
                apply(event)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("follow.failed", what=what, prefix=prefix, error=str(exc) or type(exc).__name__)
            await asyncio.sleep(RETRY_S)
            if resync is not None:
                try:
                    revision = await resync() + 1
                except Exception as again:  # still down: the next round tries again
                    log.warning("follow.resync_failed", what=what, error=str(again) or type(again).__name__)
