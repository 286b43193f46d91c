"""Settings, read from the environment once (12-factor), with defaults for one machine."""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def _int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise SystemExit(f"{name} must be an integer, not {value!r}") from None


@dataclass
class Config:
    DATABASE_URL: str = field(default="sqlite:///scans.db", repr=False)
    # Seconds one statement waits for a locked SQLite database before it fails.
    DB_BUSY_TIMEOUT: int = 30
    # Seconds a job worker keeps retrying a write that fails because the database is locked, full or
    # unreachable (events are held in memory meanwhile) before the job ends as "error".
    DB_RETRY_SECONDS: int = 120
    ARTIFACTS_DIR: str = "artifacts"
    PROJECT_DIR: str = str(ROOT)
    INVENTORY: str = str(ROOT / "inventory")
    # Ansible host pattern of the scanner a scan runs on.
    SCANNER_PATTERN: str = "scanners[0]"
    # "local": worker processes on this machine; "celery": Celery workers (`cloudx worker`) through Redis.
    EXECUTOR: str = "local"
    CELERY_BROKER_URL: str = field(default="redis://127.0.0.1:6379/0", repr=False)
    # Queue of deployments and other jobs, and queue of scans (pin scanner workers with `cloudx worker -Q scanners`).
    CELERY_QUEUE: str = "cloudx"
    CELERY_SCAN_QUEUE: str = "scanners"
    # A queued job sent to the broker this many seconds ago and still not taken is sent again (its message may
    # have been lost: a worker that died holding it, a broker restarted without persistence). Copies are dropped.
    CELERY_REDISPATCH_AFTER: int = 300
    # Redis hands an unacknowledged message out again after this long. Messages are acknowledged when their
    # job ends, so it must exceed the longest job (SCAN_MAX_TIMEOUT and more), or running jobs get copies.
    CELERY_VISIBILITY_TIMEOUT: int = 90000
    # Messages a worker reserves per job slot (Celery's worker_prefetch_multiplier).
    CELERY_PREFETCH_MULTIPLIER: int = 1
    # Key that seals a job's credentials inside its Celery message; the API and every worker share it
    # (32 bytes, URL-safe base64: `cloudx credential keygen`). Workers never get CREDENTIALS_KEY.
    JOB_SECRETS_KEY: str = field(default="", repr=False)
    # Off: this process serves the API and queues jobs, but runs none.
    EXECUTOR_ENABLED: bool = True
    MAX_CONCURRENT_JOBS: int = 4
    # Submissions beyond this many waiting jobs get 429 (0: no limit).
    MAX_QUEUED_JOBS: int = 100
    JOB_TIMEOUT: int = 3600
    IDLE_TIMEOUT: int = 600
    SCAN_TIMEOUT: int = 1800
    SCAN_MAX_TIMEOUT: int = 86400
    # The largest network a scan may cover (the scanner role's scanner_max_addresses, passed to every scan).
    SCAN_MAX_ADDRESSES: int = 65536
    SCAN_LEASE_SECONDS: int = 10
    SCAN_POLL_INTERVAL: int = 2
    # A running job whose worker has not reported for this long is ended as "error" (workers beat every sixth of it).
    WORKER_LOST_AFTER: int = 60
    # SSH host keys of deployment targets: "pin-on-first-use" records unknown keys (ssh-keyscan) in the
    # database with the job that pinned them; "strict" only trusts keys provided or pinned before.
    HOST_KEY_POLICY: str = "pin-on-first-use"
    KNOWN_HOSTS_FILE: str = ""
    # Variables every agent deployment gets (package source, repository, ...), a YAML or JSON file.
    AGENT_VARS_FILE: str = ""
    # CA certificates (a PEM file, or a directory of c_rehash'ed ones) that WinRM certificates of the hosts of
    # host-list deployments are verified against (the generated inventory's ansible_winrm_ca_trust_path).
    # Empty: the CA bundle of requests (certifi). Inventory hosts use their own ansible_winrm_ca_trust_path.
    WINRM_CA_TRUST_PATH: str = ""
    SYNC_HEARTBEAT_FILE: str = "sync_heartbeat.json"
    SYNC_MAX_AGE: int = 30
    MAX_CONTENT_LENGTH: int = 64 * 1024
    # Browser origins allowed to call the API (comma separated, e.g. https://dash.example.org); none by default.
    CORS_ORIGINS: str = ""
    # Key of stored credentials (AES-256-GCM), 32 bytes in URL-safe base64: `cloudx credential keygen`.
    CREDENTIALS_KEY: str = field(default="", repr=False)
    HOST: str = "127.0.0.1"
    PORT: int = 5001

    @classmethod
    def from_env(cls, **overrides: Any) -> Config:
        config = cls()
        for f in fields(cls):
            env_name = f.name if f.name.startswith(("DATABASE_", "CLOUDX_")) else f"CLOUDX_{f.name}"
            for name in (f.name, env_name):
                if name in os.environ:
                    raw = os.environ[name]
                    if f.type in ("int", int):
                        setattr(config, f.name, _int(name, getattr(config, f.name)))
                    elif f.type in ("bool", bool):
                        setattr(config, f.name, raw.lower() in ("1", "true", "yes", "on"))
                    else:
                        setattr(config, f.name, raw)
        for key, value in overrides.items():
            setattr(config, key, value)
        return config

    @property
    def database_shown(self) -> str:
        """DATABASE_URL for messages and logs: its password masked."""
        from sqlalchemy.engine import make_url

        return make_url(self.DATABASE_URL).render_as_string(hide_password=True)

    def as_env(self) -> dict[str, str]:
        """The settings a job process needs, as environment variables."""
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
        }
