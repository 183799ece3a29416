"""Follow a key prefix for as long as the process runs, surviving store failures.

Every long-lived watcher in the control plane (nodes, presence keys, replica records for fencing,
capacity requests for the reconciler) is the same loop: watch from a revision, apply each event,
and when the store goes away (a dead etcd member, a broken stream) wait a second and watch again
from the last revision seen. How long to wait comes from the error tree
(:func:`controlplane.errors.retry_delay`); an error a retry cannot fix is logged as an error, and
the follower still goes on.

Compaction is the one failure that resuming cannot survive: etcd has forgotten the history the
follower needs (the Helm chart's etcd compacts every hour, so a follower that was cut off for a
while comes back to a compacted revision). Retrying the same revision would fail forever; the
follower instead re-lists (``resync`` rebuilds its state from a fresh listing and returns the
revision it read at) and resumes from there. A follower that resumes from a revision therefore
must say how to re-list: ``start_revision`` without ``resync`` is refused.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from controlplane.errors import retry_delay
from controlplane.store.base import RevisionCompacted, Store, WatchEvent
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
    on_resync: Callable[[], None] = lambda: None,
) -> None:
    """Apply every change under ``prefix`` until cancelled.

    ``start_revision``: resume from there, then from the last event seen. None: every (re)start
    begins at the store's current revision (for followers that only react to what happens next).
    ``resync``: rebuild the follower's state from a listing and return the revision it read at;
    called when the revision to resume from was compacted (required with ``start_revision``).
    ``on_resync``: told after every successful re-listing (metrics, tests).
    """
    if start_revision is not None and resync is None:
        raise ValueError(f"follow {what}: a follower resuming from a revision needs resync for compactions")
    revision = start_revision
    needs_resync = False
    while True:
        try:
            if needs_resync:
                assert resync is not None
                revision = await resync() + 1
                needs_resync = False
                on_resync()
                log.info("follow.resynced", what=what, prefix=prefix, revision=revision)
            elif start_revision is None:
                _, current = await store.list_prefix(prefix)
                revision = current + 1
            assert revision is not None
            async for event in store.watch_prefix(prefix, start_revision=revision):
                revision = event.mod_revision + 1
                apply(event)
        except asyncio.CancelledError:
            raise
        except RevisionCompacted as exc:
            # the history from `revision` is gone: list again (no wait: etcd is there and answering)
            log.warning(
                "follow.compacted",
                what=what,
                prefix=prefix,
                revision=revision,
                compacted=exc.compacted_revision,
            )
            needs_resync = resync is not None
            continue
        except Exception as exc:
            # the error tree says whether and when to try again (a dead etcd member: after RETRY_S)
            delay = retry_delay(exc, default=RETRY_S)
            error = str(exc) or type(exc).__name__
            if delay is None:
                # not a fault a retry can fix (a bug, a refusal): said loudly; the follower still
                # goes on at its own pace, since a dead watcher would leave its state stale for good
                log.error("follow.failed", what=what, prefix=prefix, error=error, retryable=False)
                delay = RETRY_S
            else:
                log.warning("follow.failed", what=what, prefix=prefix, error=error, retryable=True)
            await asyncio.sleep(delay)
