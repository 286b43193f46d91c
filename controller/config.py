"""Settings: one typed object, read once (12-factor) from the environment and an optional `.env` file.

Every setting is a field of `Config`; its variable is `CLOUDX_<NAME>` unless the field names others (the
original backend's `DATABASE_URL`, `FLASK_DEBUG`, Celery's `CELERY_BROKER_URL`). The environment wins over
the `.env` file of the working directory, and both lose to keyword overrides (`Config.from_env(PORT=1)`).
A bad value ends the process with one line naming its variable (`SettingsError`). The README's
configuration table is `settings_table()` (`python -m controller.config`), which tests/test_settings.py
checks it against.
"""

from __future__ import annotations

import os
import re
from collections.abc import Collection
from pathlib import Path
from typing import Any, Literal

from dotenv import dotenv_values
from pydantic import AliasChoices, Field, ValidationError, ValidationInfo, field_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, SettingsConfigDict

ROOT = Path(__file__).resolve().parent.parent
ENV_PREFIX = "CLOUDX_"
# The variable that names the .env file (only the environment can set it; empty: no file).
ENV_FILE_VARIABLE = "CLOUDX_ENV_FILE"
DEFAULT_ENV_FILE = ".env"


class SettingsError(SystemExit):
    """A setting has a bad value. Uncaught, Python prints its one line on stderr and exits with status 1."""


def setting(default: Any, meaning: str, *, env: tuple[str, ...] = (), shown: str | None = None, secret: bool = False, **rules: Any) -> Any:
    """A field of Config: its default, its meaning (the README's column), its variables when not CLOUDX_<NAME>,
    its default as the README shows it when that is not the value itself, and whether its value is secret
    (kept out of repr and of error messages)."""
    return Field(
        default,
        description=meaning,
        validation_alias=AliasChoices(*env) if env else None,
        repr=not secret,
        json_schema_extra={"shown": shown} if shown is not None else None,
        **rules,
    )


class Config(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_file=DEFAULT_ENV_FILE,
        env_file_encoding="utf-8",
        case_sensitive=True,
        # Other programs' variables may share the .env file.
        extra="ignore",
    )

    DATABASE_URL: str = setting(
        "sqlite:///scans.db", "SQLAlchemy URL; SQLite runs in WAL mode", env=("DATABASE_URL",), shown="`sqlite:///scans.db`", secret=True
    )
    DB_BUSY_TIMEOUT: int = setting(30, "seconds a statement waits for a locked SQLite database before it fails")
    DB_RETRY_SECONDS: int = setting(
        120,
        "seconds a job worker keeps retrying a write that fails because the database is locked, full or unreachable "
        "(events are held in memory meanwhile) before the job ends as `error`",
    )
    ARTIFACTS_DIR: str = setting("artifacts", "one directory per job: ansible-runner's private data dir, scan results")
    PROJECT_DIR: str = setting(
        str(ROOT), "the playbooks and roles the jobs run (the working directory of job processes)", shown="this repository"
    )
    INVENTORY: str = setting(str(ROOT / "inventory"), "inventory the jobs use", shown="`inventory/` of this repository")
    SCANNER_PATTERN: str = setting("scanners[0]", "Ansible host pattern of the scanner that runs API scans")
    EXECUTOR: Literal["local", "celery"] = setting(
        "local",
        "`local`: worker processes of `cloudx serve`; `celery`: `cloudx worker` processes through Redis "
        "([Scale-out](#scale-out-celery-workers-and-postgresql))",
    )
    EXECUTOR_ENABLED: bool = setting(True, "0: serve the API and queue jobs without running them")
    MAX_CONCURRENT_JOBS: int = setting(4, "jobs running at once; the rest wait as `queued`")
    MAX_QUEUED_JOBS: int = setting(100, "submissions beyond this many waiting jobs get 429 (0: no limit)")
    JOB_TIMEOUT: int = setting(3600, "ansible-runner's job timeout in seconds (scan jobs: their scan timeout + 300)")
    IDLE_TIMEOUT: int = setting(600, "no-output timeout in seconds: a job that prints nothing for this long ends as `timeout`")
    SCAN_TIMEOUT: int = setting(1800, "default `timeout` of a scan request")
    SCAN_MAX_TIMEOUT: int = setting(86400, "largest `timeout` of a scan request (the policy's `max_scan_timeout` lowers it per role)")
    SCAN_MAX_ADDRESSES: int = setting(
        65536, "the largest network a scan may cover (refused at the API; passed to the scanner as `scanner_max_addresses`)"
    )
    SCAN_LEASE_SECONDS: int = setting(10, "scanner lease of API scans")
    SCAN_POLL_INTERVAL: int = setting(2, "progress interval of API scans")
    WORKER_LOST_AFTER: int = setting(
        60, "a running job whose worker has not beaten for this long ends as `error` (workers beat every sixth of it)"
    )
    STREAM_MAX: int = setting(
        64, "live streams (SSE) one API process serves at once, each on a thread of its own beside the request threads", ge=1, le=4096
    )
    STREAM_POLL_SECONDS: float = setting(0.1, "how often the live streams look for new events and job changes", gt=0)
    STREAM_HEARTBEAT: float = setting(15.0, "seconds of silence after which a live stream sends a comment line", gt=0)
    WEB_SESSION_HOURS: float = setting(12.0, "hours a dashboard sign-in lasts (never past its token's expiry)", gt=0, le=24 * 30)
    WEB_SECURE_COOKIES: Literal["auto", "always"] = setting(
        "auto",
        "auto: the session cookie is Secure when the request came over HTTPS (from a TLS proxy named in CLOUDX_TRUSTED_PROXY, "
        "with X-Forwarded-Proto); always: in every case",
    )
    TRUSTED_PROXY: str = setting("", "the address of a TLS-terminating proxy whose X-Forwarded-Proto/-For headers waitress trusts")
    SCHEDULER_ENABLED: bool = setting(True, "0: this process starts no scheduled run (another `cloudx serve` does; runs are claimed once)")
    SCHEDULE_MIN_INTERVAL: int = setting(60, "the shortest time in seconds a schedule may leave between two runs", ge=1)
    SCHEDULE_POLL_SECONDS: float = setting(5.0, "how often the scheduler looks for due runs", gt=0)
    SCHEDULE_MISFIRE_GRACE: int = setting(
        120, "a due time not started within this many seconds (the controller was down) is recorded as missed", ge=1
    )
    RETENTION_DAYS: int = setting(
        30,
        "events and artifact folders of jobs finished more than this many days ago are pruned by `cloudx serve` (every "
        "`CLOUDX_PRUNE_INTERVAL`) and by `cloudx prune`; job rows, host summaries, scans and assets are kept (0: no automatic prune)",
        ge=0,
    )
    PRUNE_INTERVAL: float = setting(
        3600.0, "seconds between two automatic prunes (the first one within a minute of start)", gt=0, shown="3600"
    )
    WEBHOOK_ALLOW: str = setting(
        "",
        "comma-separated hosts (names as in the URL) and networks (CIDR) webhooks may reach besides public https addresses: "
        "plain http, and loopback, private or link-local addresses ([Webhooks](#webhooks))",
    )
    WEBHOOK_CONNECT_TIMEOUT: float = setting(5.0, "seconds a webhook delivery waits to connect", gt=0)
    WEBHOOK_READ_TIMEOUT: float = setting(10.0, "seconds a webhook delivery waits for the receiver's answer", gt=0)
    WEBHOOK_MAX_ATTEMPTS: int = setting(6, "attempts to deliver one event before it is given up (recorded as `failed`)", ge=1, le=100)
    WEBHOOK_BACKOFF_SECONDS: float = setting(
        10.0, "the wait before a webhook's second attempt; each later one waits three times longer (at most an hour)", ge=0
    )
    WEBHOOK_POLL_SECONDS: float = setting(2.0, "how often each `cloudx serve` process looks for ended jobs and webhook events due", gt=0)

    @field_validator("SCHEDULE_MISFIRE_GRACE")
    @classmethod
    def _grace_over_poll(cls, value: int, info: ValidationInfo) -> int:
        """A due time waits up to a poll interval to be seen: a shorter grace would call on-time runs missed."""
        poll = info.data.get("SCHEDULE_POLL_SECONDS")
        if poll is not None and value <= poll:
            raise ValueError(f"must be longer than CLOUDX_SCHEDULE_POLL_SECONDS ({poll} s)")
        return value

    @field_validator("SCAN_POLL_INTERVAL")
    @classmethod
    def _poll_under_idle(cls, value: int, info: ValidationInfo) -> int:
        """A running scan reports once per poll interval: an interval past the idle timeout would end it as idle."""
        idle = info.data.get("IDLE_TIMEOUT")
        if idle is not None and value >= idle:
            raise ValueError(f"must be shorter than CLOUDX_IDLE_TIMEOUT ({idle} s)")
        return value

    @field_validator("WEBHOOK_ALLOW")
    @classmethod
    def _webhook_allow(cls, value: str) -> str:
        """Each entry a network (CIDR or address) or a host name: a typo must not silently allow nothing."""
        for entry in (e.strip() for e in value.split(",")):
            if entry and not re.fullmatch(r"[0-9A-Fa-f:.]+(/[0-9]{1,3})?|[A-Za-z0-9]([A-Za-z0-9.-]{0,251}[A-Za-z0-9])?", entry):
                raise ValueError(f"entries must be host names or CIDR networks, separated by commas: {entry[:64]!r}")
        return value

    CELERY_BROKER_URL: str = setting(
        "redis://127.0.0.1:6379/0",
        "the Celery broker (API and workers); `CLOUDX_CELERY_BROKER_URL` wins over `CELERY_BROKER_URL`",
        env=("CLOUDX_CELERY_BROKER_URL", "CELERY_BROKER_URL"),
        shown="`redis://127.0.0.1:6379/0`",
        secret=True,
    )
    CELERY_QUEUE: str = setting("cloudx", "queue of deployments and other jobs")
    CELERY_SCAN_QUEUE: str = setting("scanners", "queue of scans (pin scanner workers with `cloudx worker -Q scanners`)")
    CELERY_REDISPATCH_AFTER: int = setting(
        300,
        "a queued job not taken by any worker this many seconds after it was sent is sent again (its message may have been "
        "lost: a worker that died holding it, a broker restarted without persistence); copies are dropped",
    )
    CELERY_VISIBILITY_TIMEOUT: int = setting(
        90000,
        "Redis hands an unacknowledged message out again after this long; messages are acknowledged when their job ends, "
        "so keep it above the longest job (`CLOUDX_SCAN_MAX_TIMEOUT` and more)",
    )
    CELERY_PREFETCH_MULTIPLIER: int = setting(1, "messages a worker reserves per job slot (Celery's `worker_prefetch_multiplier`)")
    JOB_SECRETS_KEY: str = setting(
        "",
        "with `celery`: the key (same on the API and every worker) that seals a job's credentials inside its message "
        "(`cloudx credential keygen`); workers never get `CLOUDX_CREDENTIALS_KEY`",
        secret=True,
    )
    HOST_KEY_POLICY: Literal["pin-on-first-use", "strict"] = setting(
        "pin-on-first-use",
        "unknown keys of a deployment with pasted credentials are scanned for that job (and pinned after its successful "
        "connection); `strict`: only keys trusted before",
    )
    KNOWN_HOSTS_FILE: str = setting("", "host keys the machine's owner trusts for deployments (plain or hashed known_hosts lines)")
    AGENT_VARS_FILE: str = setting("", "YAML/JSON variables every controller deployment gets (package source, ...)")
    WINRM_CA_TRUST_PATH: str = setting(
        "",
        "CA certificates (PEM file or c_rehash'ed directory) that WinRM certificates of host-list deployments are verified "
        "against (`ansible_winrm_ca_trust_path` of the generated inventory; inventory hosts use their own)",
        shown="(none: the CA bundle of requests)",
    )
    SYNC_HEARTBEAT_FILE: str = setting(
        "sync_heartbeat.json", "the sync heartbeat file that `cloudx heartbeat` writes and `/api/sync-status` reads"
    )
    SYNC_MAX_AGE: int = setting(30, "seconds after which `/api/sync-status` reports an old heartbeat as `inactive`")
    MAX_CONTENT_LENGTH: int = setting(64 * 1024, "larger request bodies get 413 (`POST /api/imports` has its own limit, below)")
    IMPORT_MAX_BYTES: int = setting(
        512 * 1024 * 1024,
        "larger files sent to `POST /api/imports` get 413, and `cloudx import` refuses them; a file is written to disk as it "
        "arrives, never held in memory",
        shown="536870912 (512 MiB)",
        ge=1,
    )
    CORS_ORIGINS: str = setting("", "comma-separated browser origins allowed to call the API (e.g. `https://dash.example.org`)")
    CREDENTIALS_KEY: str = setting(
        "", "key of stored credentials (AES-256-GCM): 32 bytes, URL-safe base64 (`cloudx credential keygen`)", secret=True
    )
    HOST: str = setting("127.0.0.1", "where `cloudx serve` listens")
    PORT: int = setting(5001, "the port `cloudx serve` listens on", ge=0, le=65535)
    FLASK_DEBUG: bool = setting(
        False,
        "development only: debug logging and the reloader for `cloudx serve` (Werkzeug's server, one process); the "
        "interactive debugger only on a loopback address",
        env=("FLASK_DEBUG",),
    )
    ENV_FILE: str = setting(
        DEFAULT_ENV_FILE, "the `.env` file read at start, from the working directory unless absolute (empty: none); set in the environment"
    )

    def __init__(self, **values: Any) -> None:
        # The .env file is chosen by the environment alone; job processes get theirs empty (see as_env).
        env_file = values.pop("ENV_FILE", os.environ.get(ENV_FILE_VARIABLE, DEFAULT_ENV_FILE))
        values.setdefault("_env_file", env_file or None)
        super().__init__(ENV_FILE=env_file, **values)

    @field_validator("*", mode="before")
    @classmethod
    def _empty_means_unset(cls, value: Any, info: ValidationInfo) -> Any:
        """An empty number means its default, an empty switch means off (as before the settings were typed)."""
        if value != "" or info.field_name is None:
            return value
        field = cls.model_fields[info.field_name]
        if field.annotation is int:
            return field.default
        return False if field.annotation is bool else value

    @classmethod
    def from_env(cls, **overrides: Any) -> Config:
        """The settings of this process; a bad value raises SettingsError (one line, naming the variable)."""
        unknown = sorted(set(overrides) - set(cls.model_fields))
        if unknown:
            raise TypeError(f"unknown settings: {', '.join(unknown)}")
        try:
            return cls(**overrides)
        except ValidationError as exc:
            raise SettingsError(explain(exc, set(overrides))) from None

    @property
    def database_shown(self) -> str:
        """DATABASE_URL for messages and logs: its password masked."""
        from sqlalchemy.engine import make_url

        return make_url(self.DATABASE_URL).render_as_string(hide_password=True)

    def as_env(self) -> dict[str, str]:
        """The settings a job process needs, as environment variables: all of them (it reads no .env file)."""
        return {
            "DATABASE_URL": self.DATABASE_URL,
            "CLOUDX_ARTIFACTS_DIR": str(Path(self.ARTIFACTS_DIR).resolve()),
            "CLOUDX_PROJECT_DIR": self.PROJECT_DIR,
            "CLOUDX_INVENTORY": self.INVENTORY,
            "CLOUDX_DB_BUSY_TIMEOUT": str(self.DB_BUSY_TIMEOUT),
            "CLOUDX_DB_RETRY_SECONDS": str(self.DB_RETRY_SECONDS),
            "CLOUDX_JOB_TIMEOUT": str(self.JOB_TIMEOUT),
            "CLOUDX_IDLE_TIMEOUT": str(self.IDLE_TIMEOUT),
            "CLOUDX_HOST_KEY_POLICY": self.HOST_KEY_POLICY,
            "CLOUDX_KNOWN_HOSTS_FILE": self.KNOWN_HOSTS_FILE,
            "CLOUDX_AGENT_VARS_FILE": self.AGENT_VARS_FILE,
            "CLOUDX_WINRM_CA_TRUST_PATH": str(Path(self.WINRM_CA_TRUST_PATH).resolve()) if self.WINRM_CA_TRUST_PATH else "",
            "CLOUDX_WORKER_LOST_AFTER": str(self.WORKER_LOST_AFTER),
            # A job process runs in PROJECT_DIR: a .env file there must not give it the keys kept from it.
            ENV_FILE_VARIABLE: "",
        }


def env_names(name: str) -> list[str]:
    """The variables of a setting, the one that wins first."""
    alias = Config.model_fields[name].validation_alias
    if isinstance(alias, AliasChoices):
        return [choice for choice in alias.choices if isinstance(choice, str)]
    return [alias] if isinstance(alias, str) else [f"{ENV_PREFIX}{name}"]


def shown_default(field: FieldInfo) -> str:
    """A setting's default as the README shows it."""
    extra = field.json_schema_extra
    if isinstance(extra, dict) and isinstance(extra.get("shown"), str):
        return str(extra["shown"])
    if isinstance(field.default, bool):
        return "1" if field.default else "0"
    if isinstance(field.default, int):
        return str(field.default)
    return f"`{field.default}`" if field.default else "(none)"


def settings_table() -> str:
    """The README's configuration table."""
    rows = ["| variable | default | meaning |", "|---|---|---|"]
    for name, field in Config.model_fields.items():
        names = ", ".join(f"`{env}`" for env in env_names(name))
        rows.append(f"| {names} | {shown_default(field)} | {field.description} |")
    return "\n".join(rows) + "\n"


# What a bad value should have been, by pydantic's error type (an error's context fills the braces).
PROBLEMS = {
    "int_parsing": "must be an integer",
    "int_from_float": "must be an integer",
    "int_type": "must be an integer",
    "bool_parsing": "must be 1, true, yes or on, or 0, false, no or off",
    "bool_type": "must be 1, true, yes or on, or 0, false, no or off",
    "literal_error": "must be {expected}",
    "greater_than_equal": "must be at least {ge}",
    "less_than_equal": "must be at most {le}",
    "string_type": "must be a string",
    "value_error": "{error}",  # a validator's own words ("must be longer than ...")
}


def explain(exc: ValidationError, overridden: Collection[str] = ()) -> str:
    """The one line that says which variable is bad and why (the first bad one, and how many others)."""
    errors = exc.errors(include_url=False)
    error = errors[0]
    name = _field_of(str(error["loc"][0]) if error["loc"] else "")
    variable = name if name in overridden else _variable(name)
    problem = PROBLEMS.get(error["type"], "is not valid ({msg})").format(msg=error["msg"], **error.get("ctx", {}))
    field = Config.model_fields.get(name)
    shown = f", got {error['input']!r}" if field is not None and field.repr else ""
    more = f" (and {len(errors) - 1} more bad setting{'s' if len(errors) > 2 else ''})" if len(errors) > 1 else ""
    return f"cloudx: {variable} {problem}{shown}{more}"


def _field_of(key: str) -> str:
    """The field an error's location names (a field's name or one of its variables)."""
    for name in Config.model_fields:
        if key == name or key in env_names(name):
            return name
    return key


def _variable(name: str) -> str:
    """The variable a field's value came from: the environment's winner, else the .env file's (said so), else its first."""
    if name not in Config.model_fields:
        return name
    names = env_names(name)
    in_env = [env for env in names if env in os.environ]
    if in_env:
        return in_env[0]
    path = os.environ.get(ENV_FILE_VARIABLE, DEFAULT_ENV_FILE)
    in_file = set(dotenv_values(path)) if path and Path(path).is_file() else set()
    return next((f"{env} (in {path})" for env in names if env in in_file), names[0])


if __name__ == "__main__":
    print(settings_table(), end="")
