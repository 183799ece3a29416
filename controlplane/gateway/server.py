"""``tokenfab gateway``: one authenticated, OpenAI-compatible endpoint for every tenant's capacity.

Routes (aiohttp): ``POST /v1/chat/completions`` and ``POST /v1/completions`` (plain or streamed
as server-sent events), ``GET /v1/models`` (the caller's models), ``GET /healthz``. Prometheus
metrics are served on a separate ``metrics_address`` (they name every tenant, so they are not on
the tenant-facing port).

A call goes straight down, with no way back up: authenticate the bearer token against the tenant
directory (401) -> validate the body (400 naming the field) -> find the tenant's lane for the
model (404: a model of another tenant is as unknown as one nobody serves) -> refuse a call no
replica shape could serve (400 naming ``prompt``/``messages`` or ``max_tokens``: beyond the model's
context, or a prompt no shape prefills within the lane's TTFT target; see
:class:`controlplane.autoscale.feasibility.LiveCheck`) -> admission against the
reservation (queue, or 429 with Retry-After; 503 when no replica appears) -> the router picks a
replica and the proxy sends the call, failing over before the first token -> meter the usage the
replica reported.

Secure by default: the gateway refuses to listen beyond loopback without TLS (``tls_cert``).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import os
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Literal

import aiohttp
from aiohttp import web
from prometheus_client import start_http_server
from pydantic import BaseModel, ConfigDict, Field, model_validator

from controlplane.autoscale.feasibility import LiveCheck
from controlplane.capacity.tenants import Tenant, TenantDirectory
from controlplane.catalog import load_catalog
from controlplane.config import parse_endpoints
from controlplane.errors import InvalidArgument, Unauthenticated
from controlplane.gateway import admission, openai, proxy
from controlplane.gateway.demand import DemandMeter
from controlplane.gateway.metering import Meter
from controlplane.gateway.metrics import GatewayMetrics
from controlplane.gateway.router import Policy, Router
from controlplane.gateway.routes import Lane, RouteWatch
from controlplane.gateway.share import ShareWatch
from controlplane.store.base import Store
from controlplane.store.etcd import EtcdStore
from tokenfab.logs import get_logger
from tokenfab.tls import ClientTLS, server_ssl_context

log = get_logger("gateway")
SESSION_HEADER = "X-Session-Id"


class GatewayConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    listen: str = "127.0.0.1:8080"
    public_url: str = ""  # the base URL tenants are told; default http(s)://<listen>/v1
    tenants_file: Path
    etcd_endpoint: str = "127.0.0.1:2379"
    etcd_tls_ca: Path | None = None
    etcd_tls_cert: Path | None = None
    etcd_tls_key: Path | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    metrics_address: str | None = None
    policy: Policy = "affinity"
    burst_s: Annotated[float, Field(ge=0, le=3600)] = 2.0
    spare_horizon_s: Annotated[float, Field(ge=0, le=3600)] | None = None  # None: per lane, see admission
    cold_start_wait_s: Annotated[float, Field(ge=0, le=3600)] = 60.0
    max_attempts: Annotated[int, Field(ge=1, le=10)] = 3
    first_token_timeout_s: Annotated[float, Field(gt=0, le=3600)] = 30.0
    request_timeout_s: Annotated[float, Field(gt=0, le=86400)] = 600.0
    eject_s: Annotated[float, Field(ge=0, le=3600)] = 5.0
    usage_flush_s: Annotated[float, Field(gt=0, le=3600)] = 5.0
    demand_publish_s: Annotated[float, Field(gt=0, le=3600)] = 2.0
    demand_window_s: Annotated[float, Field(gt=0, le=3600)] = 30.0  # offered rates are over this
    instance: str = ""  # this gateway in its demand keys; default host-port-pid

    @model_validator(mode="after")
    def _secure(self) -> GatewayConfig:
        host, _, port = self.listen.rpartition(":")
        if not host or not port.isdigit() or not 0 <= int(port) < 65536:
            raise ValueError(f"listen: expected host:port, got {self.listen!r}")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("tls_cert and tls_key must be given together")
        if self.tls_cert is None and not _loopback(host):
            raise ValueError(
                f"listen: {host} is not loopback; serving beyond loopback needs tls_cert and tls_key"
            )
        parse_endpoints(self.etcd_endpoint)
        if "/" in self.instance:
            raise ValueError(f"instance: {self.instance!r} cannot be part of an etcd key (no '/')")
        return self

    @property
    def host(self) -> str:
        return self.listen.rpartition(":")[0].strip("[]")

    @property
    def port(self) -> int:
        return int(self.listen.rpartition(":")[2])


def _loopback(host: str) -> bool:
    if host.strip("[]") == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _error(status: int, message: str, *, code: str, param: str | None = None, **headers: str) -> web.Response:
    kind = "invalid_request_error" if status < 500 else "server_error"
    return web.json_response(
        openai.error_body(message, kind=kind, code=code, param=param), status=status, headers=headers or None
    )


class Gateway:
    """``await start()``, then serve until ``await stop()``. ``store`` and ``tenants`` may be given
    (tests); otherwise the etcd store and the tenants file of the config are used."""

    def __init__(
        self,
        config: GatewayConfig,
        *,
        store: Store | None = None,
        tenants: Callable[[], TenantDirectory] | None = None,
        metrics: GatewayMetrics | None = None,
    ) -> None:
        self.config = config
        self.metrics = metrics or GatewayMetrics()
        self._store = store
        self._tenants = tenants
        self.routes: RouteWatch | None = None
        self.upstreams: proxy.Upstreams | None = None
        self.admission: admission.Admission | None = None
        self.meter: Meter | None = None
        self.demand: DemandMeter | None = None
        self.feasible: LiveCheck | None = None
        self.shares: ShareWatch | None = None
        self._runner: web.AppRunner | None = None
        self._owned_store = False
        self.port = 0
        self._gauged: set[str] = set()  # replica ids with an outstanding-tokens series

    @property
    def base_url(self) -> str:
        if self.config.public_url:
            return self.config.public_url
        scheme = "https" if self.config.tls_cert else "http"
        host = self.config.host if ":" not in self.config.host else f"[{self.config.host}]"
        return f"{scheme}://{host}:{self.port or self.config.port}/v1"

    async def start(self) -> None:
        cfg = self.config
        if self._tenants is None:
            from controlplane.security.tokens import Reloading

            directory = Reloading(cfg.tenants_file, TenantDirectory.load)
            directory.load()  # a bad file stops the start, naming the problem
            self._tenants = directory.get
        if self._store is None:
            etcd_tls = (
                ClientTLS(cfg.etcd_tls_ca, cfg.etcd_tls_cert, cfg.etcd_tls_key) if cfg.etcd_tls_ca else None
            )
            etcd = EtcdStore(endpoints=parse_endpoints(cfg.etcd_endpoint), tls=etcd_tls)
            await etcd.connect()
            self._store, self._owned_store = etcd, True
        self.feasible = LiveCheck(load_catalog())
        self.upstreams = proxy.Upstreams(
            Router(policy=cfg.policy),
            self.metrics,
            settings=proxy.Settings(
                max_attempts=cfg.max_attempts, first_token_timeout_s=cfg.first_token_timeout_s,
                request_timeout_s=cfg.request_timeout_s, eject_s=cfg.eject_s,
            ),
        )  # fmt: skip
        instance = cfg.instance or f"{socket.gethostname()}-{cfg.port}-{os.getpid()}".replace("/", "-")
        self.shares = ShareWatch(self._store, instance, on_change=self._wake_queued)
        self.admission = admission.Admission(
            self.upstreams.lane_load,
            settings=admission.Settings(
                burst_s=cfg.burst_s,
                spare_horizon_s=cfg.spare_horizon_s,
                cold_start_wait_s=cfg.cold_start_wait_s,
            ),
            share=self._share,
        )
        gate = self.admission

        def on_release() -> None:
            if any(gate.waiting.values()):
                asyncio.get_running_loop().create_task(gate.notify())

        self.upstreams.on_release = on_release
        self.routes = RouteWatch(self._store, on_change=self._on_lanes)
        await self.routes.start()
        await self.upstreams.start()
        self.meter = Meter(self._store, flush_s=cfg.usage_flush_s)
        await self.meter.start()
        await self.shares.start()
        self.demand = DemandMeter(
            self._store, instance, window_s=cfg.demand_window_s, publish_s=cfg.demand_publish_s
        )
        routes = self.routes
        self.demand.lanes = lambda: routes.lanes
        await self.demand.start()
        app = web.Application(client_max_size=openai.MAX_BODY_BYTES)
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_post("/v1/completions", self._completions)
        app.router.add_get("/v1/models", self._models)
        app.router.add_get("/healthz", self._healthz)
        # a caller that hangs up ends its call (aiohttp cancels the handler): a queued call leaves the
        # queue instead of waiting out its deadline and then taking a replica's capacity for nobody,
        # and a stopping gateway does not wait on calls whose callers are gone
        self._runner = web.AppRunner(
            app, access_log=None, handle_signals=False, shutdown_timeout=30.0, handler_cancellation=True
        )
        await self._runner.setup()
        tls = None
        if cfg.tls_cert is not None and cfg.tls_key is not None:  # follows renewals of the files
            tls = server_ssl_context(
                cfg.tls_cert, cfg.tls_key, component="gateway", registry=self.metrics.registry
            )
        site = web.TCPSite(self._runner, cfg.host, cfg.port, ssl_context=tls, reuse_address=True)
        await site.start()
        self.port = int(self._runner.addresses[0][1])
        if cfg.metrics_address:
            host, _, port = cfg.metrics_address.rpartition(":")
            # a bare ":port" means loopback, as for the control plane (prometheus_client's own default
            # would be every interface, and these metrics name every tenant)
            start_http_server(int(port), addr=host.strip("[]") or "127.0.0.1", registry=self.metrics.registry)
        log.info("gateway.started", url=self.base_url, lanes=len(self.routes.lanes), policy=cfg.policy)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.shutdown()  # stop accepting; running calls finish (shutdown_timeout)
            await self._runner.cleanup()
            self._runner = None
        if self.meter is not None:
            await self.meter.stop()
        if self.demand is not None:
            await self.demand.stop()
        if self.shares is not None:
            await self.shares.stop()
        if self.routes is not None:
            await self.routes.stop()
        if self.upstreams is not None:
            await self.upstreams.stop()
        if self._owned_store and self._store is not None:
            await self._store.close()
        log.info("gateway.stopped")

    def _on_lanes(self, lanes: dict[tuple[str, str], Lane]) -> None:
        for (tenant, model), lane in lanes.items():
            self.metrics.replicas.labels(tenant, model).set(len(lane.backends))
        current = {b.replica_id for lane in lanes.values() for b in lane.backends}
        for gone in self._gauged - current:  # replicas come and go: their series go with them
            if self.upstreams is None or gone not in self.upstreams.outstanding:
                self.metrics.forget(self.metrics.outstanding, gone)
                self._gauged.discard(gone)
        self._gauged |= current
        self._wake_queued()

    def _wake_queued(self) -> None:
        """The lanes or the shares moved: queued callers look again."""
        if self.admission is not None and any(self.admission.waiting.values()):
            with contextlib.suppress(RuntimeError):  # no loop while starting
                asyncio.get_running_loop().create_task(self.admission.notify())

    def _share(self, lane: Lane) -> float:
        """This instance's share of the lane's reservation (:mod:`controlplane.gateway.share`)."""
        share = self.shares.share(lane) if self.shares is not None else 1.0
        self.metrics.child(self.metrics.share, lane.tenant, lane.model).set(share)
        return share

    def _tenant(self, request: web.Request) -> Tenant:
        assert self._tenants is not None
        return self._tenants().authenticate(request.headers.get("Authorization"))

    async def _healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"ok": self.routes is not None})  # nothing about tenants: unauthenticated

    async def _models(self, request: web.Request) -> web.Response:
        try:
            tenant = self._tenant(request)
        except Unauthenticated as exc:
            return _error(401, exc.message, code="invalid_api_key", **{"WWW-Authenticate": "Bearer"})
        assert self.routes is not None
        data = [
            {
                "id": lane.model,
                "object": "model",
                "created": 0,
                "owned_by": tenant.name,
                "replicas": len(lane.backends),
            }
            for lane in self.routes.models(tenant.name)
        ]
        return web.json_response({"object": "list", "data": data})

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        return await self._call(request, "chat", "/v1/chat/completions")

    async def _completions(self, request: web.Request) -> web.StreamResponse:
        return await self._call(request, "completions", "/v1/completions")

    async def _call(
        self, request: web.Request, kind: Literal["completions", "chat"], path: str
    ) -> web.StreamResponse:
        assert self.routes is not None
        assert self.admission is not None
        assert self.upstreams is not None
        m = self.metrics
        try:
            tenant = self._tenant(request)
        except Unauthenticated as exc:
            m.child(m.rejections, "", "", "unauthenticated").inc()
            return _error(401, exc.message, code="invalid_api_key", **{"WWW-Authenticate": "Bearer"})
        try:
            raw = await request.read()
            call = openai.parse(kind, raw, session=request.headers.get(SESSION_HEADER))
        except web.HTTPRequestEntityTooLarge:
            return _error(
                413, f"body: larger than {openai.MAX_BODY_BYTES} bytes", code="invalid_body", param="body"
            )
        except InvalidArgument as exc:
            m.child(m.rejections, tenant.name, "", "invalid").inc()
            return _error(400, exc.message, code="invalid_value", param=exc.field)
        routes = self.routes
        lane = routes.lane(tenant.name, call.model)
        if lane is None:
            m.child(m.rejections, tenant.name, "", "not_found").inc()
            return _error(
                404, f"model: {call.model!r} is not served by any capacity request of yours",
                code="model_not_found", param="model",
            )  # fmt: skip
        refused = self._infeasible(call, lane)
        if refused is not None:
            m.child(m.rejections, tenant.name, call.model, "infeasible").inc()
            return refused
        labels = (tenant.name, call.model)
        assert self.demand is not None
        demand = self.demand
        demand.arrival(lane, call.prompt_tokens, call.max_tokens)
        m.child(m.arrivals, *labels).inc()
        m.child(m.offered_tokens, *labels, "prompt").inc(call.prompt_tokens)
        m.child(m.offered_tokens, *labels, "completion").inc(call.max_tokens)
        started = time.monotonic()

        def lane_of() -> Lane | None:
            return routes.lane(tenant.name, call.model)

        m.child(m.queue_length, *labels).inc()
        ticket = demand.enqueue(lane)
        try:
            verdict = await self.admission.admit(lane_of, call.max_tokens)
        except admission.RateLimited as exc:
            demand.rejected(lane)
            m.child(m.rejections, *labels, "rate").inc()
            m.child(m.responses, *labels, "429").inc()
            return _error(
                429, str(exc), code="rate_limit_exceeded", **{"Retry-After": str(exc.retry_after_s)}
            )
        except admission.NoReplica as exc:
            demand.rejected(lane)
            m.child(m.rejections, *labels, "no_replica").inc()
            m.child(m.responses, *labels, "503").inc()
            return _error(503, str(exc), code="no_replica", **{"Retry-After": "5"})
        finally:
            demand.dequeue(lane, ticket)
            m.child(m.queue_length, *labels).dec()
            m.child(m.queue_wait, *labels).observe(time.monotonic() - started)
        m.child(m.admitted, *labels, verdict.value).inc()
        served = [0]  # completion tokens the replica reported
        try:
            return await self._forward(request, lane_of, call, path, tenant, started, lane, served)
        finally:
            if verdict is admission.Verdict.GUARANTEED:  # it paid max_tokens: true up to what was served
                self.admission.settle(lane, call.max_tokens, served[0])

    async def _forward(
        self, request: web.Request, lane_of: Callable[[], Lane | None], call: openai.Call, path: str,
        tenant: Tenant, started: float, lane: Lane, served: list[int],
    ) -> web.StreamResponse:  # fmt: skip
        """Send an admitted call to a replica and answer the client; ``served[0]``: the completion
        tokens the replica reported (metered)."""
        assert self.upstreams is not None
        assert self.demand is not None
        m, labels = self.metrics, (tenant.name, call.model)
        attempt = proxy.Attempt()
        try:
            if call.stream:
                return await self._relay(request, lane_of, call, path, tenant, started, lane, served, attempt)
            answer = await self.upstreams.send(lane_of, call, path, attempt)
        except asyncio.CancelledError:
            # the caller hung up before its answer (handler_cancellation): the upstream connection
            # is closed, so the replica stops; the prompt it was given is metered as an estimate,
            # as for a stream cut before its usage event
            if attempt.backend is not None and not attempt.metered:
                m.child(m.responses, *labels, "499").inc()  # nginx's "client closed request"
                estimate = proxy.Usage(prompt_tokens=call.prompt_tokens)
                self._meter(tenant, call, attempt.backend.request_id, estimate)
            raise
        except proxy.UpstreamRejected as exc:
            m.child(m.responses, *labels, str(exc.status)).inc()
            return web.Response(status=exc.status, body=exc.body, content_type="application/json")
        except proxy.UpstreamFailed as exc:
            m.child(m.responses, *labels, str(exc.status)).inc()
            return _error(exc.status, str(exc), code="upstream_failed")
        m.child(m.responses, *labels, str(answer.status)).inc()
        m.child(m.latency, *labels).observe(time.monotonic() - started)
        if answer.status == 200:
            self._meter(tenant, call, answer.backend.request_id, answer.usage)
            reported = (call.prompt_tokens, answer.usage.prompt_tokens) if answer.usage.reported else None
            self.demand.finished(lane, answer.usage.completion_tokens, reported)
            served[0] = answer.usage.completion_tokens
        return web.Response(status=answer.status, body=answer.body, content_type="application/json")

    def _infeasible(self, call: openai.Call, lane: Lane) -> web.Response | None:
        """A 400 for a call that no replica shape could serve at the lane's TTFT target. A text
        prompt's token count is the gateway's estimate (4 characters a token), so it is checked at
        half the estimate: a call is refused only when it is out of reach by a wide margin."""
        assert self.feasible is not None
        exact = isinstance(call.payload.get("prompt"), list)  # token ids: the count is exact
        prompt = call.prompt_tokens if exact else max(1, call.prompt_tokens // 2)
        verdict = self.feasible.check(call.model, lane.ttft_budget_s, prompt, call.max_tokens)
        if verdict is None:
            return None
        param = (
            verdict.field
            if verdict.field == "max_tokens"
            else ("prompt" if call.kind == "completions" else "messages")
        )
        return _error(400, f"{param}: {verdict.reason}", code="infeasible_request", param=param)

    async def _relay(
        self, request: web.Request, lane_of: Callable[[], Lane | None], call: openai.Call, path: str,
        tenant: Tenant, started: float, lane: Lane, served: list[int], attempt: proxy.Attempt,
    ) -> web.StreamResponse:  # fmt: skip
        assert self.upstreams is not None
        m, labels = self.metrics, (tenant.name, call.model)
        stream = await self.upstreams.open_stream(lane_of, call, path, attempt)
        m.child(m.ttft, *labels).observe(time.monotonic() - started)
        out = web.StreamResponse(
            status=200, headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        )
        events = 0
        try:
            await out.prepare(request)
            await out.write(stream.first)
            events = 1
            upstream = aiter(stream.rest())
            while True:
                try:
                    event = await anext(upstream)
                except StopAsyncIteration:
                    break
                except (aiohttp.ClientError, OSError, TimeoutError) as exc:  # the replica went away
                    log.info(
                        "gateway.stream_cut", replica=stream.backend.replica_id, error=type(exc).__name__
                    )
                    break
                if not call.include_usage and event.startswith(b"data: {") and b'"choices":[]' in event:
                    continue  # the usage event the gateway asked for on its own behalf
                await out.write(event)  # a client that went away raises here: the finally cleans up
                events += 1
            if not stream.done:
                m.stream_cuts.inc()
                cut = openai.error_body(
                    f"replica {stream.backend.replica_id} stopped after {events} events: the answer is cut",
                    kind="server_error", code="stream_cut",
                )  # fmt: skip
                await out.write(b"data: " + json.dumps(cut).encode() + b"\n\n")
            await out.write_eof()
        finally:
            stream.close()
            m.child(m.responses, *labels, "200" if stream.done else "stream_cut").inc()
            m.child(m.latency, *labels).observe(time.monotonic() - started)
            usage = stream.usage
            reported = (call.prompt_tokens, usage.prompt_tokens) if usage.reported else None
            if not usage.reported:  # no usage event (a cut): count what was sent as an estimate
                usage.prompt_tokens, usage.completion_tokens = call.prompt_tokens, max(0, events - 1)
            self._meter(tenant, call, stream.backend.request_id, usage)
            attempt.metered = True
            served[0] = usage.completion_tokens
            if self.demand is not None:
                self.demand.finished(lane, usage.completion_tokens, reported)
        return out

    def _meter(self, tenant: Tenant, call: openai.Call, request_id: str, usage: proxy.Usage) -> None:
        assert self.meter is not None
        self.metrics.child(self.metrics.tokens, tenant.name, request_id, "prompt").inc(usage.prompt_tokens)
        self.metrics.child(self.metrics.tokens, tenant.name, request_id, "completion").inc(
            usage.completion_tokens
        )
        self.meter.record(tenant.name, request_id, call.model, usage.prompt_tokens, usage.completion_tokens)
