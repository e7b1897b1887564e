"""Hub settings: the one place that reads ETP_* environment variables (pydantic-settings)."""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Any, Literal
from urllib.parse import unquote, urlsplit, urlunsplit

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["MasterSecretError", "Settings", "load_master_secret"]


class MasterSecretError(RuntimeError):
    """The site master secret file exists but cannot be used."""


class Settings(BaseSettings):
    """Typed configuration of one hub process; flags override ETP_* env vars override defaults."""

    model_config = SettingsConfigDict(env_prefix="ETP_", extra="ignore")

    data_dir: Path = Field(default=Path(".etp"), description="where the database and keys live")
    database_url: str | None = Field(default=None, description="None = SQLite in data_dir")
    mqtt_url: str | None = Field(
        default=None,
        description="external broker mqtt://HOST[:1883] or mqtts://HOST[:8883] (TLS); "
        "None = embedded. USER:PASSWORD@ in it is moved to mqtt_username / mqtt_password",
    )
    mqtt_host: str = "127.0.0.1"
    mqtt_port: int = 1883
    mqtt_username: str | None = Field(default=None, description="user name sent in CONNECT")
    mqtt_password: SecretStr | None = Field(default=None, description="sent with the user name")
    mqtt_ca_file: Path | None = Field(
        default=None, description="mqtts://: CA (PEM) the broker's certificate must chain to; "
        "None = the system's trusted CAs"
    )
    mqtt_cert_file: Path | None = Field(
        default=None, description="mqtts://: client certificate (PEM) for brokers that ask"
    )
    mqtt_key_file: Path | None = Field(
        default=None, description="its private key (PEM), unless it is in mqtt_cert_file"
    )
    http_host: str = "127.0.0.1"
    http_port: int = 8000
    http_enabled: bool = True
    dashboard_dir: Path | None = Field(
        default=None, description="the dashboard's build served at / (default: the "
        "project's dashboard/dist)"
    )
    # Bounds of the HTTP server (hub/gateway/server.py): what one client may cost the hub.
    http_max_header_bytes: int = Field(
        default=16 * 1024, ge=1024, description="request line + headers; more = 431, closed"
    )
    http_max_header_count: int = Field(
        default=100, ge=8, description="header fields per request; more = 431, closed"
    )
    http_max_body_bytes: int = Field(
        default=1024 * 1024, ge=0, description="request body (and WebSocket message); "
        "larger = 413, closed"
    )
    http_request_timeout_s: float = Field(
        default=10.0, gt=0, description="from a request's first byte to its last (head and "
        "body), however slowly it drips; slower = 408, closed. Also how long a response may "
        "stay unread"
    )
    http_keep_alive_timeout_s: int = Field(
        default=5, ge=1, description="a connection with no request in progress is closed then"
    )
    http_max_connections: int = Field(
        default=100, ge=1, description="open connections; at the cap a new one closes the "
        "longest idle, or is answered 503 when none is idle"
    )
    http_backlog: int = Field(default=128, ge=1, description="connections waiting to be accepted")
    http_rate_limit_per_address: int = Field(
        default=6000, ge=0, description="API requests per minute from one client address (the "
        "socket's peer; 0 = no limit); more = 429"
    )
    http_rate_limit_per_key: int = Field(
        default=3000, ge=0, description="API requests per minute with one API key (0 = no "
        "limit); more = 429"
    )
    http_trusted_proxies: str = Field(
        default="", description="comma-separated addresses of reverse proxies whose "
        "X-Forwarded-For names the client (none: the socket's peer is the client)"
    )
    http_cors_origins: list[str] = Field(
        default_factory=list, description="origins a browser may call the API from (CORS); "
        "none by default (the dashboard is served by the hub itself)"
    )
    api_key_cache_ttl_s: float = Field(
        default=5.0,
        ge=0,
        le=60,
        description="how long the gateway trusts a cached API key; a key revoked by another "
        "process (etp apikey revoke) is refused at most this long after (0 = read every time)",
    )
    ws_ticket_ttl_s: float = Field(
        default=30.0, gt=0, le=300, description="WebSocket tickets are valid this long"
    )
    ws_max_clients: int = Field(
        default=200, ge=1, description="WebSocket clients at once (they also count against "
        "ETP_HTTP_MAX_CONNECTIONS: raise it too); beyond, refused with close code 4429. "
        "The fan-out shares the hub's event loop with trading (~25 us per event per client: "
        "`etp bench gateway`): more clients take CPU from the market"
    )
    ws_max_clients_per_key: int = Field(
        default=20, ge=1, description="WebSocket clients at once per API key; beyond: 4429"
    )
    ws_auth_timeout_s: float = Field(
        default=5.0, gt=0, le=60, description="a WebSocket without a ticket or key header must "
        'send {"type": "auth", "key": ...} within this long (else closed with 4401)'
    )
    ws_client_backlog: int = Field(
        default=1000, ge=1, description="events waiting for one WebSocket client; a client "
        'that falls this far behind gets {"type": "resync"} and is closed (4409)'
    )
    ws_send_timeout_s: float = Field(
        default=10.0, gt=0, description="a WebSocket client that takes no data for this long "
        "while events wait for it is closed"
    )
    ws_max_resume_events: int = Field(
        default=10_000, ge=0, description="a client resuming (after_seq) more than this many "
        'events behind gets {"type": "resync"} and a fresh snapshot instead of a replay'
    )
    site: str = "site1"
    mechanism: Literal["ascending", "second_price"] = "ascending"
    aggregators: int = Field(default=3, ge=0, le=1000)
    seed: int = 1
    aggregator_demand_scale: int = Field(
        default=1, ge=1, description="multiplies aggregator budgets and requirements (benches)"
    )
    master_secret_file: Path | None = Field(default=None, description="default data_dir/master.key")
    log_level: str = "info"
    log_format: Literal["console", "json"] = "console"
    auction_interval_ms: int = Field(default=1500, ge=10, description="per-device auction cadence")
    max_parallel_auctions: int = Field(default=100, ge=1, description="auctions in flight")
    round_ms: int = Field(default=0, ge=0, description="pause between auction rounds")
    max_rounds: int = Field(default=12, ge=1)
    response_timeout_ms: int = Field(default=1000, ge=10, description="wait for a battery reply")
    hold_timeout_ms: int = Field(default=3000, ge=100)
    status_period_ms: int = Field(default=5000, ge=100, description="battery BESSStatus period")
    liveness_factor: float = Field(default=3.0, ge=1.0, description="silence x period = dead")
    lot_wh: int = Field(default=1000, ge=1, description="largest lot per auction, Wh")
    min_lot_wh: int = Field(default=100, ge=1)
    notice_interval_ms: int = Field(default=2000, ge=100)
    micropython: Path | None = Field(
        default=None, description="MicroPython unix port binary; None = the venv's, else PATH"
    )
    trading_period_ms: int = Field(
        default=60_000, ge=0, description="aggregator budgets and requirements renew; 0 = never"
    )
    flood_status_per_s: float = Field(
        default=20.0, gt=0, description="status frames a second one battery may send; more "
        "are dropped (rate_limited)"
    )
    flood_response_per_s: float = Field(
        default=200.0, gt=0, description="response frames a second one battery may send"
    )
    flood_quarantine_after: int = Field(
        default=500, ge=1, description="a battery with more frames dropped within 10 s is "
        "quarantined: its frames dropped, no auctions, an alert"
    )
    flood_quarantine_s: float = Field(
        default=60.0, gt=0, description="how long a quarantine lasts"
    )
    alert_offline_delay_s: float = Field(
        default=60.0, ge=0, description="a battery offline this long raises an alert"
    )
    alert_deadline_misses_per_min: int = Field(
        default=10, ge=0, description="more deadline misses in a minute raise an alert (0: off)"
    )
    alert_rejected_frames_per_min: int = Field(
        default=100, ge=0, description="more rejected frames in a minute raise an alert (0: off)"
    )
    alert_check_interval_s: float = Field(
        default=5.0, gt=0, le=60, description="how often the offline and rate alerts are checked"
    )
    metrics_snapshot_interval_s: float = Field(
        default=10.0, ge=0, description="period of metrics_snapshot events; 0 = none"
    )
    battery_status_soc_step_pct: int = Field(
        default=10,
        ge=1,
        le=100,
        description="a battery_status event when a battery's charge crosses a step of this size",
    )

    settlement_network: Literal["embedded", "localnet", "devnet", "mainnet", "off"] = Field(
        default="embedded", description="where verified trades are paid: embedded = a Solana "
        "ledger inside the hub (LiteSVM with the etp_settlement program; in memory, a restart "
        "starts a new one), localnet = a development cluster over JSON-RPC where the hub makes "
        "a test market itself, devnet / mainnet = a market its authority made "
        "(ETP_SETTLEMENT_MARKET) with parties registered by public key (`etp wallet`), "
        "off = not at all (the outbox only fills); hub/settlement/README.md"
    )
    settlement_rpc_url: str | None = Field(
        default=None, description="JSON-RPC endpoint of the cluster (default: localnet "
        "http://127.0.0.1:8899, devnet and mainnet their public endpoints); may hold an API "
        "key: only its scheme and host are ever logged"
    )
    settlement_program_id: str | None = Field(
        default=None, description="address of the etp_settlement program on the cluster "
        "(default: the IDL's, anchor/idl/etp_settlement.json)"
    )
    settlement_market: str | None = Field(
        default=None, description="address of the market to settle in (devnet, mainnet, or "
        "localnet run like them); `etp settle market init` prints it. Required on devnet and "
        "mainnet; on localnet it makes the hub use registered wallets instead of its own"
    )
    settlement_program_file: Path | None = Field(
        default=None, description="the built program (default: the project's "
        "anchor/target/etp_settlement.so, made by scripts/setup.sh)"
    )
    settlement_settler_key_file: Path | None = Field(
        default=None, description="the settler's keypair (default data_dir/settler-keypair.json, "
        "created 0600 on first run)"
    )
    settlement_authority_key_file: Path | None = Field(
        default=None, description="the market authority's keypair (default "
        "data_dir/market-authority-keypair.json, created 0600 on first run)"
    )
    settlement_max_priority_fee_micro_lamports: int = Field(
        default=1_000_000, ge=0, description="cap on the compute-unit price paid for priority"
    )
    settlement_compute_unit_margin_pct: int = Field(
        default=10, ge=0, le=100, description="compute-unit limit = simulated units + this %"
    )
    settlement_max_in_flight: int = Field(
        default=64, ge=1, description="settlement transactions awaiting confirmation at once"
    )
    settlement_linger_ms: int = Field(
        default=1000, ge=0, description="a batch of fewer than 4 trades waits this long for "
        "more before it is sent (fewer transactions, fees per trade)"
    )
    settlement_backoff_max_s: float = Field(
        default=30.0, gt=0, description="longest wait between tries while the ledger is away"
    )
    settlement_block_ms: float = Field(
        default=400.0, gt=0, description="embedded ledger: one block per this many ms"
    )
    # device provisioning (hub/security/devices.py, `etp device`)
    require_provisioning: bool = Field(
        default=False, description="refuse frames from batteries never provisioned with "
        "`etp device add` (off: they use their generation-0 key, as before provisioning)"
    )
    rotation_grace_s: float = Field(
        default=300.0, ge=0, description="after `etp device rotate`, the previous key is "
        "still accepted this long (a battery not yet given its new bundle keeps trading)"
    )
    credentials_refresh_s: float = Field(
        default=1.0, gt=0, le=5, description="how often the running hub re-reads the device "
        "credentials (a revocation applies within this)"
    )
    # disputes and reputation read back from the ledger (hub/settlement/disputes.py, reputation.py)
    settlement_dispute_window_s: int = Field(
        default=7 * 24 * 3600, ge=1, le=30 * 24 * 3600, description="how long after its "
        "settlement a trade may be disputed (set when the hub makes the market on a new ledger)"
    )
    settlement_reputation_interval_s: float = Field(
        default=3.0, gt=0, description="how often the aggregators' Reputation accounts are read "
        "from the ledger for the published reputation notice"
    )

    # TLS and certificates (hub/security/pki.py, hub/security/tls.py, docs/security-tls.md)
    tls: Literal["auto", "on"] = Field(
        default="auto", description="auto = the embedded broker (mqtts://, port 8883 unless "
        "mqtt_port is set) and the gateway (https://) use the site's certificates (`etp pki "
        "init`) when they bind a non-loopback address, plain TCP on loopback; on = TLS on "
        "loopback too"
    )
    allow_plaintext: bool = Field(
        default=False, description="accept plain MQTT / HTTP on a non-loopback address (no "
        "certificates, or mqtt:// to a remote broker), with a warning; without it the hub "
        "refuses to start so"
    )
    gateway_tls_cert: Path | None = Field(
        default=None, description="the operator's certificate (PEM, chain included) the "
        "gateway serves HTTPS with, instead of the site PKI's gateway certificate"
    )
    gateway_tls_key: Path | None = Field(
        default=None, description="its private key (PEM)"
    )

    # Broker lockdown (hub/security/broker.py): who may log in to the broker and use which topics.
    broker_locked: bool | None = Field(
        default=None, description="embedded broker refuses anonymous clients and applies the "
        "topic ACL; None = locked once the site has broker accounts (data_dir/broker/passwords)"
    )
    broker_config_dir: Path | None = Field(
        default=None, description="broker password, ACL and mosquitto.conf files (default "
        "data_dir/broker); rewritten after etp device add/revoke/rotate"
    )
    mosquitto_pid_file: Path | None = Field(
        default=None, description="pid file of an external Mosquitto the hub manages: sent "
        "SIGHUP after the access files change"
    )
    broker_max_message_bytes: int = Field(
        default=8192, ge=1024, description="largest message payload the broker passes on "
        "(frames are at most 512 bytes, market notices 4096)"
    )
    # scale-out: hub workers sharing one site (hub/cluster, docs/scaling.md)
    worker: bool = Field(
        default=False, description="run as one of several hub workers of the site: needs an "
        "external MQTT broker (ETP_MQTT_URL) and PostgreSQL (ETP_DATABASE_URL) shared by all"
    )
    worker_id: str | None = Field(
        default=None, description="this worker's name (default host-pid-random)"
    )
    worker_lease_ms: int = Field(
        default=4000, ge=500, description="a worker silent this long loses its batteries"
    )
    worker_renew_ms: int = Field(
        default=1000, ge=100, description="how often a worker renews its leases"
    )

    @model_validator(mode="after")
    def _hub_broker_login(self) -> Settings:
        """With no mqtt_username given, the hub logs in as `hub` with the password kept in
        data_dir/broker-hub.password once the site has broker accounts."""
        if self.mqtt_username is None and self.mqtt_password is None:
            from hub.security.broker import hub_broker_password

            password = hub_broker_password(self.data_dir)
            if password is not None:
                self.mqtt_username = "hub"
                self.mqtt_password = SecretStr(password)
        return self

    @model_validator(mode="before")
    @classmethod
    def _credentials_out_of_url(cls, values: Any) -> Any:
        """mqtt(s)://USER:PASSWORD@HOST: the credentials leave the URL (so it can be logged and
        shown), explicit mqtt_username / mqtt_password taking precedence."""
        if not isinstance(values, dict) or not isinstance(values.get("mqtt_url"), str):
            return values
        parts = urlsplit(values["mqtt_url"])
        if parts.username is None and parts.password is None:
            return values
        values = dict(values)
        host = parts.netloc.rpartition("@")[2]
        values["mqtt_url"] = urlunsplit(parts._replace(netloc=host))
        if values.get("mqtt_username") is None and parts.username:
            values["mqtt_username"] = unquote(parts.username)
        if values.get("mqtt_password") is None and parts.password is not None:
            values["mqtt_password"] = unquote(parts.password)
        return values

    def resolved_database_url(self) -> str:
        """The SQLAlchemy URL of the store: database_url, else SQLite in the data dir."""
        from hub.store.urls import resolve_database_url  # the rule lives with the store

        return resolve_database_url(self.database_url, self.data_dir)

    def resolved_mqtt_url(self) -> str:
        """The URL clients connect to: mqtt_url, else the embedded broker's address."""
        return self.mqtt_url or f"mqtt://{self.mqtt_host}:{self.mqtt_port}"

    def worker_problem(self) -> str | None:
        """Why this configuration cannot run as a hub worker (None: it can)."""
        if self.mqtt_url is None:
            return ("a hub worker needs the site's external broker: set ETP_MQTT_URL (e.g. "
                    "mqtt://broker:1883; Mosquitto or any MQTT broker), the same for every worker")
        if not self.resolved_database_url().startswith("postgresql"):
            return ("a hub worker needs the site's PostgreSQL: set ETP_DATABASE_URL (e.g. "
                    "postgresql+psycopg://etp@db:5432/etp), the same for every worker")
        if self.worker_renew_ms * 2 > self.worker_lease_ms:
            return "ETP_WORKER_RENEW_MS must be at most half of ETP_WORKER_LEASE_MS"
        return None

    @property
    def embedded_broker(self) -> bool:
        """True when the hub runs its own amqtt broker."""
        return self.mqtt_url is None

    def dashboard_path(self) -> Path:
        """The dashboard build the gateway serves at /."""
        return self.dashboard_dir or Path(__file__).resolve().parents[1] / "dashboard" / "dist"

    def settlement_rpc_endpoint(self) -> str:
        """The JSON-RPC URL of the settlement network (the setting, else its default)."""
        from hub.settlement.wiring import DEFAULT_RPC_URLS

        return self.settlement_rpc_url or DEFAULT_RPC_URLS.get(self.settlement_network, "")

    def settlement_program_path(self) -> Path:
        """The built etp_settlement program the embedded ledger deploys."""
        from hub.settlement.program import PROGRAM_SO_PATH  # the rule lives with the client

        return self.settlement_program_file or PROGRAM_SO_PATH

    def settler_key_path(self) -> Path:
        """The settler's keypair file (0600; the key that signs settlements)."""
        return self.settlement_settler_key_file or self.data_dir / "settler-keypair.json"

    def authority_key_path(self) -> Path:
        """The market authority's keypair file (0600)."""
        return self.settlement_authority_key_file or self.data_dir / "market-authority-keypair.json"

    def master_secret_path(self) -> Path:
        """Path of the site master secret (created 0600 on first run)."""
        return self.master_secret_file or self.data_dir / "master.key"


def load_master_secret(path: Path) -> bytes:
    """Read the site master secret (hex); create a random one with mode 0600 if absent."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        secret = secrets.token_bytes(32)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(secret.hex() + "\n")
        return secret
    text = path.read_text().strip()
    try:
        secret = bytes.fromhex(text)
    except ValueError:
        raise MasterSecretError(f"{path} must hold the master secret as hex; fix or delete it")
    if len(secret) < 16:
        raise MasterSecretError(f"{path} holds {len(secret)} bytes; at least 16 are required")
    return secret
