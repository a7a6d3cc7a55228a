"""Configuration from the environment (SPEC §4). Built on demand, never at import."""

from __future__ import annotations

from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, ValidationError, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

Seconds = Annotated[float, Field(gt=0, le=3600)]
MIN_API_KEY_LENGTH = 16


class ConfigurationError(Exception):
    """A setting is missing or malformed. The message names the variable, never its value."""


class Settings(BaseSettings):
    """Every setting of the service. The variable is the field's name in upper case."""

    model_config = SettingsConfigDict(case_sensitive=False, extra="ignore", frozen=True)

    order_db_host: str = "order-db"
    order_db_port: int = Field(default=5432, ge=1, le=65535)
    order_db_name: str = "order_db"
    order_db_user: str = "order_user"
    order_db_password: SecretStr = SecretStr("order_pass")
    database_url: SecretStr | None = None

    payment_host: str = "0.0.0.0"  # noqa: S104 - a service in a container listens on all interfaces
    payment_port: int = Field(default=8004, ge=1, le=65535)
    payment_workers: int = Field(default=1, ge=1, le=64)
    payment_log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    payment_log_format: Literal["json", "console"] = "json"

    payment_db_pool_size: int = Field(default=10, ge=1, le=200)
    payment_db_pool_timeout_seconds: Seconds = 2.0
    payment_db_connect_timeout_seconds: int = Field(default=3, ge=1, le=60)
    payment_db_statement_timeout_ms: int = Field(default=5000, ge=1, le=600_000)
    payment_db_lock_timeout_ms: int = Field(default=2000, ge=1, le=600_000)
    payment_db_transaction_pooling: bool = False
    """True when a pooler in transaction mode (PgBouncer) stands before PostgreSQL."""

    payment_api_keys: SecretStr | None = None
    payment_shutdown_timeout_seconds: int = Field(default=20, ge=1, le=3600)

    payment_idempotency_retention_hours: int = Field(default=24, ge=24, le=24 * 366)

    # Bounds under abuse (SPEC §3.6): every wait of a request, and what a client may hold.
    payment_request_deadline_ms: int = Field(default=3000, ge=100, le=60_000)
    """A request that touches the database is answered within this, 503 past it."""
    payment_ready_timeout_ms: int = Field(default=1000, ge=50, le=10_000)
    """How long /readyz waits for its own check of the database."""
    payment_max_requests_in_flight: int = Field(default=200, ge=1, le=100_000)
    """Per worker: requests beyond this many in progress are answered 503 at once."""
    payment_max_connections: int = Field(default=2000, ge=1, le=100_000)
    """Per worker: open client connections beyond this many are closed at once."""
    payment_max_header_bytes: int = Field(default=16_384, ge=1024, le=1_048_576)
    """A request head larger than this is answered 431."""
    payment_header_timeout_seconds: Seconds = 10.0
    """The time a client has to send a whole request head, from its first byte."""
    payment_body_timeout_seconds: Seconds = 10.0
    """The time a client has to send a whole body, from the end of its head."""
    payment_idle_timeout_seconds: Seconds = 5.0
    """A connection that sends nothing for this long (before a request, or between two)
    is closed."""

    # Events (SPEC §3.8): where the relay delivers the outbox's events, and how it goes about it.
    payment_event_source: str = Field(
        default="/payment-service", min_length=1, max_length=255, pattern=r"^[!-~]+$"
    )
    """The CloudEvents ``source`` of the events this service writes (a URI-reference)."""
    payment_webhook_urls: str | None = None
    """Comma-separated subscriber URLs (http or https); unset: no webhooks."""
    payment_webhook_secret: SecretStr | None = Field(default=None, validate_default=True)
    """The HMAC-SHA256 key webhooks are signed with; required when there are webhook URLs."""
    payment_webhook_timeout_seconds: Seconds = 5.0
    """One webhook delivery's bound: connecting, sending and the subscriber's answer."""
    payment_rabbitmq_url: SecretStr | None = None
    """amqp:// or amqps:// (it carries a password); unset: no RabbitMQ."""
    payment_rabbitmq_exchange: str = Field(default="payment.events", min_length=1, max_length=255)
    """The durable topic exchange events are published to."""
    payment_relay_batch_size: int = Field(default=100, ge=1, le=10_000)
    """Events a relay claims at once."""
    payment_relay_poll_interval_ms: int = Field(default=500, ge=10, le=60_000)
    """How long a relay that found nothing to deliver waits before it looks again."""
    payment_relay_lease_seconds: int = Field(default=60, ge=1, le=3600)
    """How long a claimed event is a relay's own; past it, another relay may take it."""
    payment_relay_max_attempts: int = Field(default=25, ge=1, le=1000)
    """Failed deliveries after which an event is dead-lettered."""
    payment_relay_backoff_base_ms: int = Field(default=1000, ge=1, le=3_600_000)
    """The wait before the first retry; it doubles with each failure (with full jitter)."""
    payment_relay_backoff_max_seconds: int = Field(default=3600, ge=1, le=7 * 24 * 3600)
    """The longest wait between two tries of an event."""
    payment_outbox_retention_hours: int = Field(default=168, ge=1, le=24 * 366)
    """How long delivered events are kept (readable by GET /events) before they are purged."""
    payment_relay_port: int = Field(default=8005, ge=1, le=65535)
    """The relay's own port, for /livez, /readyz and /metrics."""

    @field_validator("payment_log_level", mode="before")
    @classmethod
    def _upper(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @field_validator("payment_log_format", mode="before")
    @classmethod
    def _lower(cls, value: object) -> object:
        return value.lower() if isinstance(value, str) else value

    @field_validator("database_url")
    @classmethod
    def _postgres_url(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None:
            return None
        try:
            url = make_url(value.get_secret_value())
        except (ArgumentError, ValueError):  # ValueError: a port that is not a number
            raise ValueError("is not a database URL") from None
        if url.get_backend_name() != "postgresql":
            raise ValueError("must be a postgresql:// URL")
        return value

    @field_validator("payment_api_keys")
    @classmethod
    def _api_keys(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None:
            return None
        keys = _split_keys(value.get_secret_value())
        if not keys:
            raise ValueError("is set but holds no key; unset it to turn authentication off")
        if any(len(key) < MIN_API_KEY_LENGTH for key in keys):
            raise ValueError(f"every key must be at least {MIN_API_KEY_LENGTH} characters long")
        return value

    @field_validator("payment_webhook_urls")
    @classmethod
    def _webhook_urls(cls, value: str | None) -> str | None:
        if value is None:
            return None
        urls = _split_keys(value)
        if not urls:
            raise ValueError("is set but holds no URL; unset it to send no webhooks")
        for position, url in enumerate(urls, start=1):
            problem = _webhook_url_problem(url)
            if problem:
                raise ValueError(f"URL number {position} {problem}")
        return ",".join(urls)

    @field_validator("payment_webhook_secret")
    @classmethod
    def _webhook_secret(cls, value: SecretStr | None, info: ValidationInfo) -> SecretStr | None:
        if value is not None and not value.get_secret_value().strip():
            raise ValueError("is empty")
        if value is None and info.data.get("payment_webhook_urls"):
            raise ValueError("is required when PAYMENT_WEBHOOK_URLS is set")
        return value

    @field_validator("payment_rabbitmq_url")
    @classmethod
    def _rabbitmq_url(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None:
            return None
        parts = urlsplit(value.get_secret_value().strip())
        if parts.scheme not in ("amqp", "amqps") or not parts.hostname:
            raise ValueError("must be an amqp:// or amqps:// URL with a host")
        return value

    def webhook_urls(self) -> list[str]:
        """The subscribers' URLs, in the order given; empty when webhooks are off."""
        return _split_keys(self.payment_webhook_urls) if self.payment_webhook_urls else []

    def api_keys(self) -> list[str] | None:
        """The API keys, each stripped of surrounding spaces; None when authentication is off."""
        if self.payment_api_keys is None:
            return None
        return _split_keys(self.payment_api_keys.get_secret_value())

    def sqlalchemy_url(self) -> URL:
        """The database to use, with the psycopg 3 driver: DATABASE_URL, else ORDER_DB_*."""
        if self.database_url is not None:
            return make_url(self.database_url.get_secret_value()).set(
                drivername="postgresql+psycopg"
            )
        return URL.create(
            "postgresql+psycopg",
            username=self.order_db_user,
            password=self.order_db_password.get_secret_value(),
            host=self.order_db_host,
            port=self.order_db_port,
            database=self.order_db_name,
        )


def _split_keys(text: str) -> list[str]:
    return [key.strip() for key in text.split(",") if key.strip()]


def _webhook_url_problem(url: str) -> str | None:
    """Why ``url`` cannot be a subscriber's, or None. The URL itself is never in the answer:
    it could carry a token."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises on a port that is not a number
    except ValueError:
        return "is not a URL"
    if parts.scheme not in ("http", "https"):
        return "must be http:// or https://"
    if not parts.hostname:
        return "has no host"
    if parts.username is not None or parts.password is not None:
        return "must not carry credentials: the signature authenticates the events"
    return None


def load_settings() -> Settings:
    """Settings from the environment; ConfigurationError naming each bad variable."""
    try:
        return Settings()
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in e['loc']).upper()}: {e['msg']}"
            for e in error.errors(include_input=False, include_url=False)
        )
        raise ConfigurationError(f"invalid configuration: {problems}") from None
