"""Settings: environment (prefix ``BRIDGE_``), then an optional TOML file, then defaults.

Names are part of the contract (ARCHITECTURE.md, "Configuration and command line").
"""

from __future__ import annotations

import ipaddress
import os
from datetime import timedelta
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from ingest import names


def default_state_dir() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "telemetry-bridge"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="BRIDGE_", extra="ignore")
    toml_path: ClassVar[Path | None] = None

    database_url: str | None = Field(
        default=None, description="postgresql://user@host:port/db; unset = embedded PostgreSQL"
    )
    mqtt_url: str | None = Field(
        default=None, description="mqtt://user:pass@host:port; unset = embedded mosquitto"
    )
    mqtt_topic_prefix: str = ""
    state_dir: Path = Field(default_factory=default_state_dir)
    log_level: str = "INFO"
    log_format: Literal["text", "json"] = Field(
        default="text", description="json: one JSON object per log line on stderr"
    )

    ws_host: str = "127.0.0.1"
    ws_port: int = Field(default=8765, ge=0, le=65535)
    jwt_secret: str | None = None
    jwt_public_key: str | None = Field(default=None, description="PEM text or a path to a PEM file")
    jwt_algorithm: str = "HS256"
    jwt_audience: str | None = None
    jwt_issuer: str | None = None
    auth_required: bool = True
    allowed_origins: str = Field(default="", description="comma-separated; empty = any origin")
    ws_max_connections: int = Field(default=10_000, ge=1)
    ws_max_connections_per_sub: int = Field(default=100, ge=1)
    ws_new_connections_per_ip_per_min: int = Field(default=10, ge=1)
    ws_messages_per_s: float = Field(default=100.0, gt=0)
    ws_burst: float = Field(default=200.0, ge=1)
    ws_max_subscriptions: int = Field(default=100, ge=1)
    ws_queue_size: int = Field(default=1000, ge=10)
    ws_max_behind_s: float = Field(default=10.0, gt=0, description="then close with 4008")
    ws_max_frame_bytes: int = Field(default=64 * 1024, ge=1024)
    ws_queue_max_bytes: int = Field(
        default=1 << 20,
        ge=64 * 1024,
        description="bytes queued for one client; past it live frames are dropped",
    )
    ws_queue_budget_bytes: int = Field(
        default=256 << 20,
        ge=1 << 20,
        description="bytes queued for all clients of one front process together",
    )
    ws_frames_per_s: float = Field(
        default=400.0, gt=0, description="frames of any kind (incl. pings) read per connection"
    )
    ws_auth_timeout_s: float = Field(
        default=10.0, gt=0, description="a connection not authenticated by then closes (1008)"
    )
    ws_compression: bool = True
    ws_tls_cert: Path | None = Field(
        default=None, description="PEM certificate (chain): with ws_tls_key the front serves wss://"
    )
    ws_tls_key: Path | None = Field(default=None, description="PEM private key of ws_tls_cert")
    trusted_proxies: str = Field(
        default="",
        description="comma-separated addresses/networks of reverse proxies (e.g. 127.0.0.1) whose "
        "X-Forwarded-For is believed for the per-IP connection limit",
    )
    ws_reuse_port: bool = Field(
        default=False,
        description="SO_REUSEPORT: several `serve` processes share BRIDGE_WS_PORT, the kernel "
        "spreads new connections over them (serve --processes N sets it)",
    )
    ws_heartbeat_s: float = Field(
        default=20.0, gt=0, description="ping interval; no pong within it closes with 1011"
    )
    db_pool_size: int = Field(
        default=8, ge=2, le=1000, description="database connections of each front process"
    )
    # A CSV export holds one pool connection for as long as its client keeps reading; these
    # keep exports from taking the connections REST, snapshots and replays need.
    export_max_concurrent: int = Field(
        default=2, ge=1, description="CSV exports streaming at once per front process; then 503"
    )
    export_max_per_subject: int = Field(
        default=1, ge=1, description="CSV exports streaming at once per token subject; then 429"
    )
    export_write_timeout_s: float = Field(
        default=30.0,
        gt=0,
        description="an export whose client takes no data for this long is aborted",
    )
    export_max_duration_s: float = Field(
        default=900.0,
        gt=0,
        description="an export still streaming after this long is aborted (a client that "
        "takes a little before each write timeout would otherwise hold its slot for ever)",
    )

    metrics_port: int | None = Field(
        default=None,
        ge=1,
        le=65535,
        description="`ingest`, `scheduler` and `up` serve Prometheus /metrics on this port; "
        "unset = off (several ingests may share a host: give each its own port)",
    )
    metrics_host: str = Field(
        default="127.0.0.1", description="address of the BRIDGE_METRICS_PORT listener"
    )

    ingest_client_id: str = Field(
        default="telemetry-bridge-ingest",
        description="MQTT client id of the ingest's persistent session (bridge/identities.py)",
    )
    front_client_id: str | None = Field(
        default=None,
        description="MQTT client id of a front's connections (bridge/identities.py); unset: "
        "telemetry-bridge-front with ?username=client-id, else a random one",
    )
    scheduler_client_id: str | None = Field(
        default=None,
        description="MQTT client id of the scheduler's connection; unset: "
        "telemetry-bridge-scheduler with ?username=client-id, else a random one",
    )
    ingest_scheduler: bool = Field(
        default=True,
        description="run the periodic database jobs in the ingest too; false when "
        "`telemetry-bridge scheduler` runs them (each job holds an advisory lock either way)",
    )
    ingest_shared: bool = False
    ingest_batch_max_messages: int = Field(default=5000, ge=1, le=65535)
    ingest_batch_max_wait_ms: int = Field(default=20, ge=0, le=10_000)
    ingest_writers: int = Field(
        default=2,
        ge=1,
        le=4,
        description="batches written at once, each on its own database connection (1: one at "
        "a time); acknowledgements still follow each batch's commit in receive order",
    )
    ingest_max_payload_bytes: int = Field(default=64 * 1024, ge=256, le=1024 * 1024)
    ingest_max_future_s: int = Field(default=3600, ge=0)
    ingest_max_past_days: int = Field(default=30, ge=1, le=3650)
    ingest_publish_stream: bool = True
    dead_letter_per_device_per_min: float = Field(
        default=60.0,
        gt=0,
        description="dead letters stored per device id and minute (a minute's worth may come at "
        "once); beyond it they are counted and acknowledged, not stored",
    )
    dead_letter_max_payload_bytes: int = Field(
        default=4096, ge=0, le=1024 * 1024, description="payload bytes a dead letter keeps"
    )
    ingest_stats_file: Path | None = None
    mappings: str = Field(
        default="",
        description="built-in mapping profiles the ingest enables by name, comma-separated "
        "(tasmota, shelly_gen2, zigbee2mqtt, esphome, sparkplug_b, influx_line); more come from "
        "BRIDGE_MAPPINGS_FILE and `telemetry-bridge mappings`",
    )
    mappings_file: Path | None = Field(
        default=None,
        description="TOML file of mappings ([mappings.<name>] tables); reloaded when it changes",
    )
    device_offline_after_s: int = Field(
        default=300, ge=1, description="silence after which a device is marked offline"
    )
    device_check_interval_s: float = Field(default=10.0, gt=0)
    system_status_interval_s: float = Field(default=10.0, gt=0)
    # Each run recomputes every minute touched since the last one, so a longer interval does
    # less total work (a busy minute is recomputed once or twice, not six times); queries stay
    # exact meanwhile because they read not-yet-folded minutes from raw rows.
    rollup_interval_s: float = Field(
        default=60.0, gt=0, description="how often new readings are folded into 1m/1h rollups"
    )
    retention_raw_days: int = Field(default=30, ge=0, description="raw readings; 0 = forever")
    retention_1m_days: int = Field(default=365, ge=0, description="1m rollups; 0 = forever")
    retention_1h_days: int = Field(default=0, ge=0, description="1h rollups; 0 = forever")
    retention_dead_letter_days: int = Field(
        default=7, ge=0, description="dead letters; 0 = forever"
    )
    retention_interval_s: float = Field(default=3600.0, gt=0)
    replay_max_messages: int = Field(
        default=10_000,
        ge=1,
        description="stored messages one `since` replays (or one `snapshot` sends) at most",
    )

    @model_validator(mode="after")
    def _exports_leave_connections(self) -> Settings:
        if self.export_max_concurrent >= self.db_pool_size:
            raise ValueError(
                f"export_max_concurrent ({self.export_max_concurrent}) must be below "
                f"db_pool_size ({self.db_pool_size}): exports would take every connection"
            )
        return self

    def retention(self) -> dict[str, timedelta | None]:
        days = {"raw": self.retention_raw_days, "1m": self.retention_1m_days,
                "1h": self.retention_1h_days}  # fmt: skip
        return {tier: timedelta(days=n) if n else None for tier, n in days.items()}

    def dead_letter_retention(self) -> timedelta | None:
        days = self.retention_dead_letter_days
        return timedelta(days=days) if days else None

    @field_validator("database_url")
    @classmethod
    def _database_url(cls, value: str | None) -> str | None:
        if value and not value.startswith(("postgresql://", "postgres://")):
            raise ValueError("must look like postgresql://user:password@host:5432/dbname")
        return value

    @field_validator("mqtt_url")
    @classmethod
    def _mqtt_url(cls, value: str | None) -> str | None:
        if value:
            from ingest.mqtt import MqttEndpoint

            try:
                MqttEndpoint.from_url(value)
            except ValueError as exc:
                raise ValueError(str(exc)) from None
        return value

    @field_validator("trusted_proxies")
    @classmethod
    def _trusted(cls, value: str) -> str:
        for item in filter(None, (v.strip() for v in value.split(","))):
            try:
                ipaddress.ip_network(item, strict=False)
            except ValueError:
                raise ValueError(f"{item!r} is not an IP address or network") from None
        return value

    def trusted_networks(self) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
        items = filter(None, (v.strip() for v in self.trusted_proxies.split(",")))
        return tuple(ipaddress.ip_network(item, strict=False) for item in items)

    @field_validator("log_format", mode="before")
    @classmethod
    def _log_format(cls, value: Any) -> Any:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("mqtt_topic_prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        return names.topic_prefix(value.strip("/"))

    @field_validator("ingest_client_id", "front_client_id", "scheduler_client_id")
    @classmethod
    def _client_id(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None or (info.field_name != "ingest_client_id" and not value.strip()):
            return None  # unset, or set empty: bridge/identities.py chooses
        return names.device_id(value)  # same safe alphabet; it shows up in broker logs

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if cls.toml_path is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=cls.toml_path))
        return tuple(sources)


def load_settings(config_file: Path | None = None, **overrides: Any) -> Settings:
    """Load settings; ``config_file`` is a TOML file whose keys are the names without prefix."""
    if config_file is not None and not config_file.is_file():
        raise FileNotFoundError(f"config file not found: {config_file}")
    Settings.toml_path = config_file
    try:
        return Settings(**{k: v for k, v in overrides.items() if v is not None})
    finally:
        Settings.toml_path = None
