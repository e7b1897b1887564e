"""HubRuntime: wires broker, MQTT link, registry, auction driver, store, event log, gateway."""

# Over ~400 lines: the one place where every component is wired together (lifecycle, frame
# dispatch, device glue, status views). Next split: frame dispatch.

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import sys
import time
from pathlib import Path
from typing import Any

import structlog

from hub.alerts import AlertRules, Alerts
from hub.auctions.config import AuctionConfig
from hub.auctions.control import Operator
from hub.auctions.driver import AuctionDriver
from hub.auth import ApiKeyAuthenticator, WsTickets
from hub.buyers.aggregator import Aggregator, AggregatorConfig, default_aggregators
from hub.buyers.bidding import Buyers
from hub.devices import Device, DeviceKeyring, DeviceReceiver, Registry, SenderPool
from hub.devices.flood import FloodLimits, FrameGate
from hub.events import EventKind, EventLog
from hub.events.sources import BatteryStatusChanges, emit_metrics_snapshots
from hub.metrics import Metrics
from hub.security.audit import SecurityAudit
from hub.security.tls import SiteTls, plan_site_tls
from hub.settings import Settings, load_master_secret
from hub.settlement.wiring import settlement_status
from hub.store import Store
from hub.transport import codec
from hub.transport.broker import EmbeddedBroker, ListenerTls
from hub.transport.link import LinkConfig, LinkDownError, MqttLink
from shared_etp.compat import now_ms, ticks_ms
from shared_etp.errors import ProtocolError
from shared_etp.frame import derive_key
from shared_etp.replay import next_epoch
from shared_etp.schema import (
    BESS_STATUS,
    DEVICE_FAILURE,
    REASON_DEVICE_FAULT,
    REGISTER,
    TERMINATE,
    TYPE_NAMES,
)
from shared_etp.topics import (
    BIRTH,
    DEATH,
    HUB_STATE,
    RESPONSE,
    STATUS,
    device_topic,
    device_wildcard,
    market_topic,
    parse_device_topic,
)

__all__ = ["HubRuntime", "configure_logging"]

log = structlog.get_logger(__name__)


def configure_logging(level: str = "info", fmt: str = "console") -> None:
    """Structured logs on stderr: JSON lines with fmt="json", human-readable console otherwise.
    Standard-library loggers (amqtt, alembic, uvicorn, the store) go through the same renderer."""
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        numeric = logging.INFO
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name],
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(numeric)
    for noisy in ("amqtt", "transitions", "uvicorn.access", "aiosqlite", "sqlalchemy", "alembic"):
        logging.getLogger(noisy).setLevel(max(numeric, logging.WARNING))
    structlog.configure(
        processors=[*shared, structlog.processors.format_exc_info, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=False,
    )


def _read_epoch(data_dir: Path) -> int:
    """This run's boot epoch for the hub's senders: grows across restarts (stored on disk)."""
    path = data_dir / "hub.epoch"
    stored = 0
    with contextlib.suppress(OSError, ValueError):
        stored = int(path.read_text().strip())
    epoch = next_epoch(stored, int(time.time()))
    tmp = path.with_suffix(".tmp")
    tmp.write_text(f"{epoch}\n")
    tmp.replace(path)
    return epoch


class HubRuntime:
    """One hub process: start() brings everything up, stop() shuts it down cleanly."""

    def __init__(
        self,
        settings: Settings,
        *,
        aggregator_configs: list[AggregatorConfig] | None = None,
        store: Store | None = None,
    ) -> None:
        self.settings = settings
        self.metrics = Metrics()
        self.broker: EmbeddedBroker | None = None
        self.link: MqttLink | None = None
        self.store = store
        self.events: EventLog | None = None
        self.auctions: AuctionDriver | None = None
        self.registry: Registry | None = None
        self.receiver: DeviceReceiver | None = None
        self.keyring: DeviceKeyring | None = None
        self.alerts: Alerts | None = None
        self.gate: FrameGate | None = None
        self._aggregator_configs = aggregator_configs
        self._http: Any = None
        self._http_pool: Any = None  # hub.gateway.server.ConnectionPool: refusals, evictions
        self._http_task: asyncio.Task[None] | None = None
        self.store_started = False
        self.started_ms = 0
        self._last_epoch: dict[int, int] = {}
        self._dirty_devices: set[int] = set()
        self._device_task: asyncio.Task[None] | None = None
        self._credentials_task: asyncio.Task[None] | None = None
        self._credentials_seen: tuple[int, ...] | None = None
        self._lag_task: asyncio.Task[None] | None = None
        self._snapshot_task: asyncio.Task[None] | None = None
        self._battery_changes = BatteryStatusChanges(settings.battery_status_soc_step_pct)
        self.senders: SenderPool | None = None
        self._api_keys: ApiKeyAuthenticator | None = None
        self.ws_tickets = WsTickets(settings.ws_ticket_ttl_s)
        from hub.gateway.ws import WsClients, WsLimits  # the gateway (Litestar) loads lazily

        self.ws_clients = WsClients(WsLimits.from_settings(settings))
        self._own_death_frames: set[bytes] = set()  # our deadline DeviceFailures echoed back
        self.settlement: Any = None  # hub.settlement.service.SettlementService once started
        self.security_audit: SecurityAudit | None = None
        self._audit_task: asyncio.Task[None] | None = None
        self._settlement_error: str | None = None
        self.tls: SiteTls | None = None  # TLS of broker, link and gateway (set by start())
        self.worker: Any = None  # hub.cluster.worker.WorkerGlue with ETP_WORKER
        self._aggregator_ids: list[int] = []
        self._singletons_on = False  # alerts and settlement running here

    # ---- lifecycle -------------------------------------------------------------------------

    @property
    def mqtt_url(self) -> str:
        """Broker URL in use (mqtts:// when the embedded broker speaks TLS)."""
        return self.tls.link_url if self.tls else self.settings.resolved_mqtt_url()

    async def start(self) -> None:
        """Bring the hub up: broker, store, registry, MQTT link, auctions, HTTP gateway."""
        settings = self.settings
        self.tls = plan_site_tls(settings)  # refuses plain text on the network (ETP_TLS)
        for warning in self.tls.warnings:
            log.warning(warning)
        if settings.worker and (problem := settings.worker_problem()) is not None:
            raise RuntimeError(problem)
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        master = load_master_secret(settings.master_secret_path())
        epoch = _read_epoch(settings.data_dir)
        self.keyring = DeviceKeyring(
            master,
            require_provisioning=settings.require_provisioning,
            grace_ms=round(settings.rotation_grace_s * 1000),
        )
        self.receiver = DeviceReceiver(self.keyring)
        if settings.embedded_broker:
            from hub.security.broker import embedded_lock  # logs whether the broker is open

            files = self.tls.broker_tls
            self.broker = EmbeddedBroker(
                settings.mqtt_host,
                self.tls.broker_port,
                tls=ListenerTls(files.cert, files.key, files.ca_cert) if files else None,
                lock=embedded_lock(settings),
                max_message_bytes=settings.broker_max_message_bytes,
            )
            await self.broker.start()
        if self.store is None:
            # workers number events when they are stored, in one order for the whole site
            self.store = Store(settings.resolved_database_url(), shared_event_seq=settings.worker)
        await self.store.start()
        self.store_started = True
        self._api_keys = ApiKeyAuthenticator(
            self.store, cache_ttl_s=settings.api_key_cache_ttl_s
        )
        self._api_keys.on_revoke.append(self.ws_tickets.forget_key)
        self._api_keys.on_revoke.append(self.ws_clients.forget_key)  # its open sockets: 4401
        self.events = EventLog(self.store)
        await self.events.start()
        # security audit: rejected frames, failed logins, API keys (hub.security.audit)
        self.security_audit = SecurityAudit(self._emit, keys=self.store)
        self.metrics.on_reject = self.security_audit.frame_rejected
        self._api_keys.on_refused.append(self.security_audit.login_failed)
        self._api_keys.on_change.append(self.security_audit.api_key_changed)
        self._audit_task = asyncio.create_task(self.security_audit.run(), name="security-audit")
        await self._refresh_credentials()  # provisioned batteries known before any frame
        self.registry = Registry(
            settings.status_period_ms,
            settings.liveness_factor,
            on_failure=self._on_device_failure,
            on_change=self._on_device_change,
        )
        hub_state = market_topic(settings.site, HUB_STATE)
        worker_id = None
        if settings.worker:
            from hub.cluster.membership import new_worker_id

            worker_id = settings.worker_id or new_worker_id()
            settings = self.settings = settings.model_copy(update={"worker_id": worker_id})
        self.gate = FrameGate(
            FloodLimits(
                status_per_s=settings.flood_status_per_s,
                response_per_s=settings.flood_response_per_s,
                quarantine_after=settings.flood_quarantine_after,
                quarantine_s=settings.flood_quarantine_s,
            ),
            ticks_ms,
            self.metrics.reject_frame,
            self._on_quarantine,
        )
        self.link = MqttLink(
            LinkConfig(
                url=self.mqtt_url,
                client_id=f"etp-hub-{settings.site}-{worker_id or epoch}",
                username=settings.mqtt_username,
                password=(
                    settings.mqtt_password.get_secret_value()
                    if settings.mqtt_password is not None
                    else None
                ),
                ca_file=self.tls.link_ca_file,
                cert_file=settings.mqtt_cert_file,
                key_file=settings.mqtt_key_file,
                subscriptions=[
                    (device_wildcard(settings.site, leaf), 1 if leaf != STATUS else 0)
                    # a hub worker: the rest per battery it owns (hub.cluster.worker)
                    for leaf in ((BIRTH,) if settings.worker else (BIRTH, DEATH, STATUS, RESPONSE))
                ],
                # workers: one leaving is not the site's hub going offline
                will=None if settings.worker else (hub_state, b"offline", 1, True),
                on_connect=((hub_state, b"online", 1, True),),
            ),
            self.on_message,
            admit=self.gate.admit,
        )
        configs = self._aggregator_configs
        if configs is None:
            configs = default_aggregators(
                settings.aggregators, settings.seed, settings.aggregator_demand_scale
            )
        aggregators = [Aggregator(cfg) for cfg in configs]
        self.senders = SenderPool(self.keyring, epoch)
        self.auctions = AuctionDriver(
            AuctionConfig.from_settings(settings),
            link=self,  # publishes go through self.publish (link may reconnect)
            registry=self.registry,
            senders=self.senders,
            notice_key=derive_key(master, 0),
            store=self.store,
            metrics=self.metrics,
            events=self.events,
            buyers=Buyers(aggregators),
            link_up=lambda: self.link is not None and self.link.connected.is_set(),
            shared=settings.worker,
        )
        self.auctions.controls.quarantined = self.gate.quarantined  # the scheduler skips them
        self.auctions.provisioned = self.keyring.provisioned  # they get the hub's time
        if settings.worker:  # before the link: retained births must find it
            from hub.cluster.worker import WorkerGlue

            self.worker = WorkerGlue(self)
        if settings.http_enabled:
            # serving before the broker is reached: /health/live answers at once and
            # /health/ready says not ready until the link is up (a service manager's view)
            await self._start_http()
        try:
            await self.link.start()
        except LinkDownError as exc:
            # Not fatal: the link keeps retrying (the reason is logged) and the hub reports
            # not ready on /health/ready until the broker accepts it.
            log.warning(
                "hub starting without its MQTT broker; not ready until it connects", error=str(exc)
            )
        await self.registry.start()
        await self.auctions.start()
        self._device_task = asyncio.create_task(self._device_writer(), name="device-writer")
        self._credentials_task = asyncio.create_task(
            self._credentials_watcher(), name="credentials-watcher"
        )
        self._aggregator_ids = [cfg.aggregator_id for cfg in configs]
        if self.worker is not None:
            await self.worker.start()  # the site's leader starts the singletons
        else:
            await self.start_singletons()
        self.started_ms = now_ms()
        # Everything built so far lives as long as the hub: keep it out of the cyclic garbage
        # collector's full passes (they stall the event loop for tens of ms with big fleets).
        gc.collect()
        gc.freeze()
        self._lag_task = asyncio.create_task(self._watch_loop_lag(), name="loop-lag")
        if settings.metrics_snapshot_interval_s > 0:
            self._snapshot_task = asyncio.create_task(
                emit_metrics_snapshots(
                    self.events, settings.metrics_snapshot_interval_s, self._metrics_snapshot
                ),
                name="metrics-snapshots",
            )
        log.info(
            "hub started",
            site=settings.site,
            mqtt=self.mqtt_url,
            broker="embedded" if self.broker else "external",
            database=getattr(self.store, "safe_url", "?"),
            http=self.http_url if settings.http_enabled else None,
            mechanism=settings.mechanism,
            aggregators=len(aggregators),
        )

    async def start_singletons(self) -> None:
        """What runs once per site: alerts and settlement (a hub worker: the leader's)."""
        settings, store, events = self.settings, self.store, self.events
        if self._singletons_on or store is None or events is None:
            return
        self._singletons_on = True
        self.alerts = Alerts(
            store,
            events,
            AlertRules(
                round(settings.alert_offline_delay_s * 1000),
                settings.alert_deadline_misses_per_min,
                settings.alert_rejected_frames_per_min,
            ),
            lambda: (self.metrics.deadline_misses, self.metrics.rejected_frames),
            check_interval_s=settings.alert_check_interval_s,
        )
        await self.alerts.start()
        await self._start_settlement(self._aggregator_ids)

    async def stop_singletons(self) -> None:
        """Stop alerts and settlement (a worker no longer the leader, or stopping); their last
        figures stay readable (the demo's summary after stop)."""
        if not self._singletons_on:
            return
        self._singletons_on = False
        if self.settlement is not None:
            # the market has stopped: settle what it traded (the embedded ledger lives only
            # as long as this process), a few seconds at most
            await self.settlement.drain(5.0)
            await self.settlement.stop()
            if self.auctions is not None:
                self.auctions.reputation_view = None  # the hub's own figures again
        if self.alerts is not None:
            await self.alerts.stop()

    @property
    def settlement_elsewhere(self) -> str | None:
        """Hub workers: why disputes are not taken here (settlement runs on the leader)."""
        if self.worker is None or self._singletons_on:
            return None
        url = self.worker.cluster.leader_url()
        return ("settlement runs on the site's leader worker"
                + (f": send this to {url}" if url else "; try again in a few seconds"))

    async def _start_settlement(self, aggregator_ids: list[int]) -> None:
        """The settlement service (hub/settlement): a missing program or key file is logged
        and shown in the status; trading goes on and the outbox keeps the trades."""
        if self.settings.settlement_network == "off" or self.store is None:
            return
        from hub.settlement.wiring import create_settlement

        try:
            self.settlement = create_settlement(
                self.settings, self.store, aggregator_ids=aggregator_ids, emit=self._emit
            )
        except Exception as exc:
            self._settlement_error = str(exc)
            log.error("settlement not running", error=str(exc))
            return
        await self.settlement.start()
        if self.auctions is not None:  # the reputation notice reads the ledger's accounts
            self.auctions.reputation_view = self.settlement.reputation.published

    @property
    def api_keys(self) -> ApiKeyAuthenticator:
        """The gateway's API key checks (cached) and key management; exists once started."""
        if self._api_keys is None:
            raise RuntimeError("HubRuntime.start() has not opened the store yet")
        return self._api_keys

    @property
    def operator(self) -> Operator | None:
        """The market's operator controls (None before start)."""
        return self.auctions.operator if self.auctions else None

    @property
    def http_url(self) -> str:
        """Base URL of the HTTP gateway (https:// when it serves TLS)."""
        scheme = "https" if self.tls is not None and self.tls.gateway_https else "http"
        return f"{scheme}://{self.settings.http_host}:{self.settings.http_port}"

    async def _start_http(self) -> None:
        import uvicorn

        from hub.gateway import create_app
        from hub.gateway.server import HttpLimits, bounded_protocol_class, https_options

        class _Server(uvicorn.Server):
            @contextlib.contextmanager
            def capture_signals(self):  # type: ignore[no-untyped-def]
                yield  # the hub's own signal handling stops everything, uvicorn included

        protocol_class = bounded_protocol_class(HttpLimits.from_settings(self.settings))
        self._http_pool = protocol_class.pool
        config = uvicorn.Config(
            create_app(self.settings, self),
            host=self.settings.http_host,
            port=self.settings.http_port,
            log_level="warning",
            access_log=False,
            lifespan="on",
            log_config=None,  # uvicorn logs through the hub's handler (JSON lines with json)
            # h11 rather than httptools: it can bound a request head (hub/gateway/server.py)
            http=protocol_class,
            timeout_keep_alive=self.settings.http_keep_alive_timeout_s,
            ws_max_size=self.settings.http_max_body_bytes,  # a WebSocket message is a body too
            # No permessage-deflate: it compressed every event once per client (20 % of the
            # hub's CPU at 200 clients; fan-out p99 311 ms with it, 135 ms without:
            # `etp bench gateway`); events are a few hundred bytes of JSON.
            ws_per_message_deflate=False,
            backlog=self.settings.http_backlog,
            # the client is the socket's peer unless a trusted proxy says otherwise
            proxy_headers=bool(self.settings.http_trusted_proxies),
            forwarded_allow_ips=self.settings.http_trusted_proxies or None,
            **(https_options(self.tls) if self.tls is not None else {}),
        )
        self._http = _Server(config)
        server = self._http

        async def serve() -> None:
            try:
                await server.serve()
            except SystemExit as exc:
                # uvicorn exits the process when it cannot bind; a SystemExit out of a task
                # would also escape the event loop and stop whatever runs it
                raise OSError(f"it could not listen (uvicorn exit code {exc.code}: the "
                              "address is taken, or not this machine's)") from None

        self._http_task = asyncio.create_task(serve(), name="http-gateway")
        for _ in range(200):
            if self._http.started or self._http_task.done():
                break
            await asyncio.sleep(0.025)
        if self._http_task.done():
            exc = self._http_task.exception()
            raise RuntimeError(
                f"HTTP gateway could not start on {self.http_url}: {exc}; "
                "pick another port with --http-port"
            )

    async def stop(self) -> None:
        """Terminate open auctions, flush the store, disconnect, stop the broker and gateway."""
        for task in (self._lag_task, self._snapshot_task, self._audit_task):
            if task is not None:
                task.cancel()
        if self.auctions is not None:
            with contextlib.suppress(Exception):
                await self.auctions.stop()
        if self.registry is not None:
            await self.registry.stop()
        if self.worker is not None:
            with contextlib.suppress(Exception):
                await self.worker.stop()  # leases given up: the others take the batteries
        await self.stop_singletons()
        if self._credentials_task is not None:
            self._credentials_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._credentials_task
        if self._device_task is not None:
            self._device_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._device_task
        with contextlib.suppress(Exception):
            await self._flush_devices()
        if self.security_audit is not None:
            self.security_audit.tick(everything=True)  # the counts of unfinished windows
        if self.events is not None:
            try:
                await self.events.stop()  # ends subscriptions, writes the events still queued
            except Exception as exc:  # the store's close() tries the write once more
                log.warning("could not write queued events", error=str(exc))
        if self.link is not None and self.worker is None:
            with contextlib.suppress(Exception):
                await self.link.publish_wait(
                    market_topic(self.settings.site, HUB_STATE), b"offline", 1, True
                )
            await self.link.stop()
        if self._http is not None:
            self._http.should_exit = True
            if self._http_task is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(self._http_task, 5)
        if self._api_keys is not None:
            await self._api_keys.close()
        if self.store is not None and self.store_started:
            await self.store.close()
            self.store_started = False
        if self.broker is not None:
            await self.broker.stop()
        log.info("hub stopped")

    def _metrics_snapshot(self) -> dict[str, Any]:
        """Payload of metrics_snapshot events: /api/v1/status plus the store's write counters
        (~2 KB per event: ~17 MB a day at the 10 s default)."""
        snapshot = self.status()
        snapshot["store"] = dict(getattr(self.store, "stats", {}))
        return snapshot

    def _emit(
        self,
        kind: EventKind,
        *,
        device_id: int | None = None,
        auction_id: int | None = None,
        **payload: Any,
    ) -> None:
        """Emit an event if the log is running (not before start nor after stop); a value the
        log refuses is a bug to log, never a reason to drop the frame being handled."""
        if self.events is None or not self.events.started:
            return
        try:
            self.events.emit(kind, device_id=device_id, auction_id=auction_id, **payload)
        except ValueError as exc:
            log.error("event refused by the log", kind=str(kind), error=str(exc))

    async def _watch_loop_lag(self, interval_s: float = 0.05) -> None:
        """Measure how late the event loop wakes up (a stalled loop delays every response)."""
        loop = asyncio.get_running_loop()
        while True:
            due = loop.time() + interval_s
            await asyncio.sleep(interval_s)
            self.metrics.observe_loop_lag((loop.time() - due) * 1000.0)

    # ---- transport glue --------------------------------------------------------------------

    def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> None:
        """Publish through the current MQTT link (raises LinkDownError while disconnected)."""
        assert self.link is not None
        self.link.publish(topic, payload, qos, retain)

    @property
    def ready(self) -> bool:
        """Broker connected and store started."""
        return bool(self.link and self.link.connected.is_set() and self.store_started)

    def on_message(self, topic: str, payload: bytes) -> None:
        """Every frame from a device topic: authenticate, count, dispatch. Bad ones are dropped."""
        parsed = parse_device_topic(topic)
        if parsed is None:
            self.metrics.reject_frame("bad_topic", topic)
            return
        _site, device_id, leaf = parsed
        assert self.receiver is not None and self.registry is not None
        assert self.keyring is not None
        if self.worker is not None and not self.worker.admit(device_id, leaf, payload):
            return  # another worker's battery
        if leaf == DEATH and payload in self._own_death_frames:
            self._own_death_frames.discard(payload)  # the hub's own deadline notice
            return
        generation = 0
        try:
            if leaf in (BIRTH, DEATH):
                # Retained births and last wills were signed long before delivery: authenticate
                # them, but their age and sequence number cannot be judged by the replay window.
                msg, generation = self.keyring.verify(payload)
            else:
                msg = self.receiver.open(payload)
        except ProtocolError as exc:
            self.metrics.reject_frame(exc.code, topic)
            return
        if msg["src"] != device_id:
            self.metrics.reject_frame("wrong_device", topic)
            return
        msg_type = msg["t"]
        self.metrics.messages_in[TYPE_NAMES[msg_type]] += 1
        known_epoch = self._last_epoch.get(device_id, 0)
        if msg["ep"] < known_epoch:
            self.metrics.reject_frame("stale_epoch", topic)
            return
        self._last_epoch[device_id] = msg["ep"]
        if leaf == BIRTH and msg_type == REGISTER:
            born = codec.birth(msg)
            if now_ms() - born.sent_ms > self.registry.silence_limit_ms:
                self.registry.on_stale_birth(born)  # a retained birth: facts, not liveness
                if self.auctions is not None:
                    self.auctions.probe(device_id)  # alive? its answer says so at once
            else:
                self.keyring.note_in_use(device_id, generation)  # a fresh birth: its key now
                self.registry.on_register(born)
        elif leaf == DEATH and msg_type == DEVICE_FAILURE:
            self.registry.on_failure_frame(codec.failure_notice(msg))
        elif leaf == STATUS and msg_type == BESS_STATUS:
            self._note_battery_status(self.registry.on_state(codec.battery_state(msg)))
        elif leaf == RESPONSE:
            self.registry.seen(device_id, msg["ts"])
            if msg_type != TERMINATE and self.auctions is not None:
                self.auctions.on_response(device_id, msg, payload)
        else:
            self.metrics.reject_frame("unexpected_type", topic)

    def _note_battery_status(self, device: Device) -> None:
        """A battery_status event when the battery's online flag, health or charge step
        changed (see BatteryStatusChanges); other statuses only update the registry."""
        payload = self._battery_changes.payload(device)
        if payload is not None:
            self._emit(EventKind.BATTERY_STATUS, device_id=device.device_id, **payload)

    def _on_device_failure(self, device: Device, reason: int, source: str) -> None:
        if self.auctions is not None:
            self.auctions.on_device_failure(device, reason, source)
        planned = {"planned": True} if self.registry and self.registry.expect_departures else {}
        self._emit(
            EventKind.DEVICE_FAILURE,
            device_id=device.device_id,
            reason=reason,
            source=source,
            health=device.health,
            **planned,  # a fleet shut down on purpose (etp demo's end): no alert
        )
        if source == "deadline":
            self._publish_loss(device, reason)

    def _on_quarantine(self, device_id: int, _until_ticks: int, dropped: int) -> None:
        """A battery flooded the hub: its frames are dropped and it gets no auction for a
        while (hub.devices.flood); an event says so (and raises an alert)."""
        quarantine_s = self.settings.flood_quarantine_s
        log.warning("battery quarantined for flooding", device=device_id, dropped=dropped,
                    quarantine_s=quarantine_s)
        self._emit(EventKind.DEVICE_QUARANTINED, device_id=device_id, dropped=dropped,
                   quarantine_s=quarantine_s, until_ms=now_ms() + round(quarantine_s * 1000))

    def _publish_loss(self, device: Device, reason: int) -> None:
        """A battery lost by silence: the hub says so with a signed DeviceFailure (src 0, the
        device's key) on the battery's death topic, not retained, for every subscriber."""
        if self.senders is None or self.link is None:
            return
        frame, _msg = self.senders.get(0, device.device_id).frame(
            DEVICE_FAILURE, health=device.health, reason=reason
        )
        if len(self._own_death_frames) > 10000:
            self._own_death_frames.clear()
        self._own_death_frames.add(frame)
        try:
            self.link.publish(
                device_topic(self.settings.site, device.device_id, DEATH), frame, 1, False
            )
        except LinkDownError as exc:
            self._own_death_frames.discard(frame)
            log.warning("could not publish device loss", device=device.device_id, error=str(exc))
            return
        self.metrics.messages_out[TYPE_NAMES[DEVICE_FAILURE]] += 1

    def _on_device_change(self, device: Device) -> None:
        """Queue the device's new state for the store (written in the background, coalesced)
        and emit device_online / device_offline."""
        if self.store is None or not self.store_started:
            return
        self._dirty_devices.add(device.device_id)
        self._emit(
            EventKind.DEVICE_ONLINE if device.online else EventKind.DEVICE_OFFLINE,
            device_id=device.device_id,
            health=device.health,
        )

    async def _credentials_watcher(self) -> None:
        """Re-read the device credentials when they change (`etp device` in another process):
        one cheap query every ETP_CREDENTIALS_REFRESH_S."""
        while True:
            await asyncio.sleep(self.settings.credentials_refresh_s)
            try:
                await self._refresh_credentials()
            except Exception as exc:  # the database away for a moment: the last table stands
                log.warning("could not read device credentials", error=str(exc))

    async def _refresh_credentials(self) -> None:
        """Load the site's credentials into the keyring if they changed; a battery newly
        revoked fails at once (its auctions end as on a device failure, none opens for it:
        its frames are refused from now on)."""
        if self.store is None or self.keyring is None:
            return
        site = self.settings.site
        fingerprint = await self.store.device_credentials_fingerprint(site)
        if fingerprint == self._credentials_seen:
            return
        rows = await self.store.list_device_credentials(site)
        change = self.keyring.load(rows)
        self._credentials_seen = fingerprint
        if self.security_audit is not None:  # `etp device` changes, as audit events
            await self.security_audit.check_devices(rows)
        for device_id in change.rotated:
            log.info("device key rotated", device=device_id,
                     key_generation=self.keyring.generation(device_id))
        for device_id in change.revoked:
            device = self.registry.devices.get(device_id) if self.registry else None
            log.warning("device revoked: its frames are refused", device=device_id)
            if device is not None and device.online and self.registry is not None:
                self.registry.fail(device, REASON_DEVICE_FAULT, "revoked")

    async def _device_writer(self, interval_s: float = 1.0) -> None:
        """Write changed devices to the store, one at a time, so a fleet coming online does
        not crowd out the auctions' own writes."""
        while True:
            await asyncio.sleep(interval_s)
            await self._flush_devices()

    async def _flush_devices(self) -> None:
        if self.registry is None or self.store is None or not self._dirty_devices:
            return
        dirty, self._dirty_devices = self._dirty_devices, set()
        for device_id in sorted(dirty):
            device = self.registry.devices.get(device_id)
            if device is None:
                continue
            try:
                await self.store.upsert_device(
                    device.device_id,
                    self.settings.site,
                    online=device.online,
                    health=device.health,
                    energy_total_wh=device.energy_total_wh,
                    energy_remaining_wh=device.energy_remaining_wh,
                    reserve_mc=device.reserve_mc,
                    pct_for_sale=device.pct_for_sale,
                    soc=device.soc,
                    voltage_mv=device.voltage_mv,
                    seen_ms=device.last_seen_ms or now_ms(),
                )
            except Exception as exc:
                log.warning("could not store device state", device=device_id, error=str(exc))

    # ---- status ----------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """Counts for /api/v1/status, the demo line and the benchmark."""
        registry = self.registry
        devices = list(registry.devices.values()) if registry else []
        link = self.link
        return {
            "site": self.settings.site,
            "mechanism": self.settings.mechanism,
            "ready": self.ready,
            "uptime_s": round((now_ms() - self.started_ms) / 1000, 1) if self.started_ms else 0,
            # with the broker out of reach the hub cannot know who is online: it says so
            "devices": {
                "known": len(devices),
                "online": sum(1 for d in devices if d.online) if self.broker_reachable else None,
                "state": "known" if self.broker_reachable else "unknown",
            },
            "mqtt": {
                "url": self.mqtt_url,  # never holds the password (settings take it out)
                "username": self.settings.mqtt_username,
                "connected": bool(link and link.connected.is_set()),
                "last_error": link.last_error if link else None,
                "received": link.received if link else 0,
                "published": link.published if link else 0,
                "publish_errors": link.publish_errors if link else 0,
                "reconnects": link.reconnects if link else 0,
                "dropped_status": link.intake.dropped_status if link else 0,
                "dropped_trade_path": link.intake.dropped_trade_path if link else 0,
                "queue_high_water": link.intake.high_water if link else 0,
            },
            "market": self.auctions.summary() if self.auctions else {},
            "cluster": self.worker.status() if self.worker is not None else None,
            "trading": (
                self.auctions.controls.view()
                if self.auctions
                else {"paused": False, "by": None, "since_ms": None}
            ),
            "metrics": self.metrics.snapshot(),
            "http": self._http_pool.summary() if self._http_pool else {},
            "ws": self.ws_clients.summary(),
            "flood": {
                "quarantines": self.gate.quarantines if self.gate else 0,
                "quarantined": sorted(
                    d for d in (self.gate.quarantined if self.gate else {})
                    if self.gate and self.gate.in_quarantine(d, ticks_ms())
                ),
            },
            "settlement": settlement_status(
                self.settings.settlement_network, self.settlement, self._settlement_error
            ),
            "alerts": (
                self.alerts.summary() if self.alerts else {"open": 0, "raised": 0,
                                                            "write_errors": 0}
            ),
        }

    @property
    def broker_reachable(self) -> bool:
        """True while the hub's MQTT link is connected (else devices' state is unknown)."""
        return bool(self.link and self.link.connected.is_set())

    def devices(self) -> list[dict[str, Any]]:
        """Every known battery's last state (for /api/v1/devices); `online` is None while the
        broker is out of reach (their last known state, not a live one)."""
        if self.registry is None:
            return []
        out_of_service = self.auctions.controls.out_of_service if self.auctions else {}
        rows = [d.as_dict() for _, d in sorted(self.registry.devices.items())]
        if self.worker is not None:  # hub workers: every worker's batteries, with the owner
            rows = self.worker.devices(rows)
        rows = [row | {"in_service": row["device_id"] not in out_of_service} for row in rows]
        if not self.broker_reachable:
            for row in rows:
                row["online"] = None
        return rows

    def aggregators(self) -> list[dict[str, Any]]:
        """The site's aggregators for /api/v1/aggregators: configuration and standing."""
        if self.auctions is None:
            return []
        return [self.auctions.operator.aggregator_view(agg) for agg in self.auctions.aggregators]

    async def read_events(
        self, after_seq: int = 0, limit: int = 100, kinds: list[str] | None = None
    ) -> list[dict[str, Any]]:
        """Stored events after `after_seq` as JSON-ready dicts (for /api/v1/events)."""
        if self.events is None:
            return []
        return [
            event.as_dict() for event in await self.events.read(after_seq, limit=limit, kinds=kinds)
        ]

    def summary_line(self) -> str:
        """One line: auctions, trades, mean price vs reserve, deadline misses."""
        market = self.auctions.summary() if self.auctions else {}
        status_devices = self.status()["devices"]
        price = market.get("mean_price_mc")
        reserve = market.get("mean_reserve_mc")
        price_text = (
            f"avg {price / 1000:.2f} c/kWh vs reserve {reserve / 1000:.2f} "
            f"(+{market.get('mean_premium_pct')}%)"
            if price is not None and reserve is not None
            else "avg price -"
        )
        return (
            f"batteries {status_devices['online'] if status_devices['online'] is not None else '?'}"
            f"/{status_devices['known']} | "
            f"auctions {market.get('auctions_opened', 0)} "
            f"(open {market.get('auctions_open', 0)}, no sale {market.get('auctions_no_sale', 0)}) "
            f"| trades {market.get('trades', 0)}"
            + (
                f" (+{market['trades_unverified']} unverified)"
                if market.get("trades_unverified")
                else ""
            )
            + f" | {price_text} | "
            + (
                f"settled {self.settlement.counts['settled']} | "
                if self.settlement is not None
                else ""
            )
            + f"deadline misses {self.metrics.total_deadline_misses} | "
            f"rejected frames {sum(self.metrics.rejected_frames.values())}"
        )
