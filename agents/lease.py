"""Lease sources: where an agent learns that its node goes away before the lease says.

The registration carries the lease terms the agent starts with (``--lease-end`` or the simulated
fleet file). A *notice source* is polled while the agent runs and answers the end time a provider
announced since, or None. The agent sends a new or earlier end to the control plane as a
``LeaseNotice``; the control plane treats it like ``tokenfab lease revoke`` and moves the node's
replicas off make-before-break.

:class:`MetadataNotices` polls a URL, cloud-metadata style:

- **EC2 spot**: ``http://169.254.169.254/latest/meta-data/spot/instance-action`` answers 404
  until an interruption is scheduled, then ``{"action": "terminate" | "stop" | "hibernate",
  "time": "2026-11-22T08:22:00Z"}``; AWS issues it two minutes ahead and recommends polling every
  5 s (docs.aws.amazon.com/AWSEC2/latest/UserGuide/spot-instance-termination-notices.html).
- **A plain flag** (Compute Engine's ``instance/preempted`` answers ``TRUE``/``FALSE``): ``TRUE``
  means the node goes away ``flag_notice_s`` after the agent first saw it.
- ``file://`` URLs read a local file in the same formats (a missing file is "no notice"); the
  simulated fleet of ``tokenfab up`` uses one per node, written by ``tokenfab preempt``.

A source that cannot be read is logged and retried: a metadata hiccup is never a notice.

HTTP polling is careful because its answer moves workloads (aiohttp, no proxies from the
environment):

- **One deadline per poll** (``timeout_s``) covers everything: the token, redirects, the body. A
  per-read timeout would let an endpoint that trickles a byte a second hold a poll for ever.
- **Redirects** are followed (at most 3) only to the same scheme, host and port, and without the
  custom headers (``--lease-notice-header``, the IMDS token): those are meant for the configured
  endpoint only. A redirect elsewhere is an error, never followed.
- **EC2 IMDSv2**: instances that require session tokens answer 401 to a plain GET
  (docs.aws.amazon.com/AWSEC2/latest/UserGuide/configuring-instance-metadata-service.html). On a
  401 the source asks for a token (``PUT /latest/api/token`` with
  ``X-aws-ec2-metadata-token-ttl-seconds``) and sends it as ``X-aws-ec2-metadata-token``; the token
  is reused until a minute before its TTL ends, and fetched again after any 401.
"""

from __future__ import annotations

import asyncio
import json
import time
import urllib.parse
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Protocol

import aiohttp

from tokenfab.errors import PermanentError
from tokenfab.logs import get_logger

log = get_logger("agent.lease")

EC2_SPOT_URL = "http://169.254.169.254/latest/meta-data/spot/instance-action"
MAX_BODY_BYTES = 64 * 1024
MAX_REDIRECTS = 3
IMDS_TOKEN_PATH = "/latest/api/token"
IMDS_TOKEN_HEADER = "X-aws-ec2-metadata-token"
IMDS_TTL_HEADER = "X-aws-ec2-metadata-token-ttl-seconds"
IMDS_TOKEN_TTL_S = 21600  # the longest AWS allows (6 hours)


class NoticeError(PermanentError, ValueError):
    """A notice source answered something that is not a notice (named field, readable reason)."""


@dataclass(frozen=True)
class Notice:
    end: datetime
    source: str
    reason: str
    flag: bool = False  # from a TRUE/FALSE flag: the end is the agent's own estimate


class NoticeSource(Protocol):
    interval_s: float

    async def poll(self) -> Notice | None: ...


def parse_notice(body: str, *, source: str, now: datetime, flag_notice_s: float) -> Notice | None:
    """A notice from a metadata answer; None for "no notice"; NoticeError for anything else."""
    text = body.strip()
    if not text or text.upper() == "FALSE":
        return None
    if text.upper() == "TRUE":
        return Notice(now + timedelta(seconds=flag_notice_s), source, "preempted (metadata flag)", flag=True)
    try:
        doc = json.loads(text)
    except json.JSONDecodeError:
        raise NoticeError(f"{source}: neither TRUE/FALSE nor a JSON document: {text[:80]!r}") from None
    if not isinstance(doc, dict):
        raise NoticeError(f"{source}: expected a JSON object, got {type(doc).__name__}")
    action = doc.get("action")
    if not isinstance(action, str) or not action:
        raise NoticeError(f"{source}: action: missing or not a string")
    raw_time = doc.get("time")
    if not isinstance(raw_time, str):
        raise NoticeError(f"{source}: time: missing or not a string")
    try:
        end = datetime.fromisoformat(raw_time)
    except ValueError:
        raise NoticeError(f"{source}: time: not an ISO 8601 time: {raw_time!r}") from None
    if end.tzinfo is None:
        raise NoticeError(f"{source}: time: carries no timezone: {raw_time!r}")
    return Notice(end.astimezone(UTC), source, f"provider notice: {action} at {raw_time}")


class MetadataNotices:
    """Polls an ``http(s)://`` or ``file://`` URL every ``interval_s``. A flag notice keeps the
    end time of its first sighting, so a source that keeps answering TRUE does not push it back."""

    def __init__(
        self,
        url: str,
        *,
        interval_s: float = 5.0,
        flag_notice_s: float = 30.0,
        timeout_s: float = 2.0,
        headers: dict[str, str] | None = None,
    ) -> None:
        scheme = urllib.parse.urlsplit(url).scheme
        if scheme not in ("http", "https", "file"):
            raise ValueError(f"lease_notice_url: expected an http(s):// or file:// URL, got {url!r}")
        if not 0.1 <= interval_s <= 3600:
            raise ValueError("lease_notice_interval: must be between 0.1 and 3600 seconds")
        self.url = url
        self.interval_s = interval_s
        self.flag_notice_s = flag_notice_s
        self.timeout_s = timeout_s
        self.headers = headers or {}
        self._flag_end: datetime | None = None
        self._token: str | None = None  # EC2 IMDSv2 session token, once the endpoint asked for one
        self._token_until = 0.0
        self.errors = 0
        self.token_fetches = 0

    async def _read(self) -> str:
        parts = urllib.parse.urlsplit(self.url)
        if parts.scheme == "file":
            path = Path(urllib.parse.unquote(parts.path))
            try:
                return (await asyncio.to_thread(path.read_text))[:MAX_BODY_BYTES]
            except FileNotFoundError:
                return ""
        async with asyncio.timeout(self.timeout_s):  # the whole poll, however the endpoint answers
            async with aiohttp.ClientSession(trust_env=False) as session:
                return await self._get(session)

    async def _get(self, session: aiohttp.ClientSession) -> str:
        url, headers = self.url, dict(self.headers)
        retried = False
        for _hop in range(MAX_REDIRECTS + 1):
            if url == self.url and self._token is not None and time.monotonic() < self._token_until:
                headers[IMDS_TOKEN_HEADER] = self._token
            async with session.get(url, headers=headers, allow_redirects=False) as response:
                if response.status == 401 and url == self.url and not retried:
                    retried = True  # IMDSv2 wants a session token (or ours expired): one more try
                    self._token = await self._fetch_token(session)
                    continue
                if response.status in (301, 302, 303, 307, 308):
                    url = self._redirect_target(url, response.headers.get("Location", ""))
                    headers = {}  # custom headers (and the token) are for the configured endpoint only
                    continue
                if response.status == 404:  # EC2: no interruption scheduled
                    return ""
                if response.status != 200:
                    raise NoticeError(f"{url}: HTTP {response.status}")
                return (await _read_body(response)).decode(errors="replace")
        raise NoticeError(f"{self.url}: more than {MAX_REDIRECTS} redirects")

    def _redirect_target(self, url: str, location: str) -> str:
        target = urllib.parse.urljoin(url, location)
        here, there = urllib.parse.urlsplit(self.url), urllib.parse.urlsplit(target)
        if (here.scheme, here.hostname, here.port) != (there.scheme, there.hostname, there.port):
            raise NoticeError(f"{self.url}: redirect to another scheme, host or port refused: {target!r}")
        return target

    async def _fetch_token(self, session: aiohttp.ClientSession) -> str:
        parts = urllib.parse.urlsplit(self.url)
        token_url = urllib.parse.urlunsplit((parts.scheme, parts.netloc, IMDS_TOKEN_PATH, "", ""))
        started = time.monotonic()
        async with session.put(
            token_url, headers={IMDS_TTL_HEADER: str(IMDS_TOKEN_TTL_S)}, allow_redirects=False
        ) as response:
            if response.status != 200:
                raise NoticeError(
                    f"{self.url}: HTTP 401, and the IMDSv2 token request answered {response.status}"
                )
            token = (await response.content.read(4096)).decode(errors="replace").strip()
        if not token or not token.isprintable():
            raise NoticeError(f"{self.url}: the IMDSv2 token request answered no usable token")
        self._token_until = started + IMDS_TOKEN_TTL_S - 60
        self.token_fetches += 1
        log.info("lease.imds_token", url=token_url)
        return token

    async def poll(self) -> Notice | None:
        now = datetime.now(UTC)
        try:
            body = await self._read()
            notice = parse_notice(body, source=self.url, now=now, flag_notice_s=self.flag_notice_s)
        except (OSError, NoticeError, aiohttp.ClientError) as exc:  # TimeoutError is an OSError
            self.errors += 1
            log.warning("lease.notice_unreadable", url=self.url, error=str(exc) or type(exc).__name__)
            return None
        if notice is not None and notice.flag:
            if self._flag_end is None:
                self._flag_end = notice.end
            notice = replace(notice, end=self._flag_end)
        return notice


async def _read_body(response: aiohttp.ClientResponse) -> bytes:
    """The whole body (a notice is small: at most MAX_BODY_BYTES), not just the first chunk."""
    data = b""
    while len(data) < MAX_BODY_BYTES:
        chunk = await response.content.read(MAX_BODY_BYTES - len(data))
        if not chunk:
            break
        data += chunk
    return data


def write_notice(path: Path, end: datetime, action: str = "terminate") -> None:
    """Publish a notice in the EC2 instance-action format (the simulated metadata endpoint);
    written to a temporary name and renamed, so a poll never reads half a document."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps({"action": action, "time": end.astimezone(UTC).isoformat(timespec="seconds")}))
    tmp.replace(path)


__all__ = [
    "EC2_SPOT_URL",
    "MetadataNotices",
    "Notice",
    "NoticeError",
    "NoticeSource",
    "parse_notice",
    "write_notice",
]
