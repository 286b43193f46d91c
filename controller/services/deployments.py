"""Agent deployments: requests become deploy jobs; inventories, host keys and credentials are prepared where they run."""

from __future__ import annotations

import ipaddress
import json
import logging
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

from sqlalchemy import select
from sqlalchemy.orm import Session

from controller.config import Config
from controller.errors import Forbidden, ValidationError
from controller.principal import Principal
from controller.queue.jobs import create_job
from controller.schemas.deployments import (
    PASTED_SECRETS,
    PLAYBOOKS,
    AgentRequest,
    CoverageDeployment,
    DeployRequest,
    DeploySettings,
    PatternDeployment,
)
from controller.schemas.types import MAX_HOSTS, FieldError
from controller.schemas.types import host as one_host
from controller.services import hostkeys
from controller.services.coverage import uncovered_addresses
from controller.services.credentials import credential_ports, open_credential
from controller.services.hostkeys import Target
from controller.services.policy import check_targets, inside_scope, principal_for, quota_for
from controller.store.database import Database
from controller.store.models import Credential, Job

log = logging.getLogger("cloudx.deployments")

DEPLOY_TIMEOUT = 3600


def _host(value: str, field: str) -> str:
    try:
        return one_host(value, field)
    except FieldError as exc:
        raise ValidationError(exc.message, field=exc.field) from None


def _secrets(request: DeployRequest) -> dict[str, Any]:
    secrets: dict[str, Any] = {"extra_vars": {}}
    if request.ssh_key is not None:
        secrets["ssh_key"] = request.ssh_key
    elif request.password is not None:
        secrets["extra_vars"]["ansible_password"] = request.password
    elif request.credential is not None:
        secrets["credential"] = request.credential  # opened where the job is created (it needs the database and the key)
    if request.become_password is not None:
        secrets["extra_vars"]["ansible_become_password"] = request.become_password
    if request.enrollment_password is not None:
        secrets["extra_vars"]["cloudx_agent_enrollment_password"] = request.enrollment_password
    return secrets


def _extra_vars(request: DeployRequest) -> dict[str, Any]:
    given = {
        "cloudx_agent_manager_address": request.manager_ip,
        "cloudx_agent_group": request.group,
        "cloudx_agent_name": request.agent_name if isinstance(request, AgentRequest) else None,
    }
    extra_vars: dict[str, Any] = {name: value for name, value in given.items() if value is not None}
    if request.username not in (None, "root", "Administrator") and request.os_type != "windows":
        extra_vars["cloudx_become"] = True
    return extra_vars


def plan(request: DeployRequest) -> tuple[dict[str, Any], dict[str, Any]]:
    """A validated request as the job's parameters (its settings typed: DeploySettings) and its in-memory secrets."""
    secrets, extra_vars = _secrets(request), _extra_vars(request)
    settings = DeploySettings(
        os_type=request.os_type,
        auth=request.auth,  # type: ignore[arg-type]
        known_hosts=request.known_hosts_lines,
        hosts=list(request.hosts) if request.hosts is not None else None,
        username=request.username,
        port=request.port if isinstance(request, AgentRequest) else None,
        pasted=[name for name in PASTED_SECRETS if getattr(request, name) is not None] or None,
    )
    state = "present" if isinstance(request, AgentRequest) else request.state
    job = {
        "extra_vars": extra_vars,
        "settings": settings,
        "playbook": PLAYBOOKS[state],
        "limit": request.limit if isinstance(request, PatternDeployment) else None,
    }
    return job, secrets


def create_deployment(
    session: Session, config: Config, principal: Principal, deploy: DeployRequest, holder: str
) -> tuple[Job, dict[str, Any]]:
    """A queued deploy job and its in-memory secrets, once every host it would reach (and the manager) is in the
    caller's scope, and a stored credential may be used on every one of them."""
    if isinstance(deploy, CoverageDeployment):
        deploy = deploy.to_hosts(uncovered_addresses(session, deploy.coverage.network, MAX_HOSTS))
    request, secrets = plan(deploy)
    settings: DeploySettings = request["settings"]
    if "credential" in secrets:
        _open_stored(session, config, secrets, request)
    if settings.hosts is not None:
        windows = settings.os_type == "windows"
        targets = list(settings.hosts)
    else:
        hosts = _inventory_for_request(config, request["limit"])
        windows = any(h.windows for h in hosts)
        targets = sorted({_host(address, "limit") for h in hosts for address in h.addresses})
    manager = request["extra_vars"].get("cloudx_agent_manager_address")
    checked = check_targets(session, principal, [*targets, *([manager] if manager else [])], windows=windows)
    if settings.hosts is not None:
        # The job connects to the addresses checked here, not to names resolved again later.
        settings.addresses = {host: checked[host][0] for host in settings.hosts}
        hosts = [_listed_host(settings, host) for host in settings.hosts]
    else:
        hosts = [_at_checked_address(h, checked) for h in hosts]
        settings.addresses = {h.name: h.address for h in hosts}  # where each inventory host was checked (coverage reads it)
    if manager:
        request["extra_vars"]["cloudx_agent_manager_address"] = checked[manager][0]
    known = set(targets) | {h.address for h in hosts}
    for line in settings.known_hosts:
        host = line.split(" ", 1)[0]
        if host.split("]:", 1)[0].lstrip("[") not in known:
            raise ValidationError(f"known_hosts line for {host!r}, which this deployment does not reach", field="known_hosts")
    if settings.credential is not None:
        check_credential_use(session, config, settings.credential, hosts)
    job = create_job(
        session,
        kind="deploy",
        playbook=request["playbook"],
        inventory="generated" if settings.hosts is not None else config.INVENTORY,
        limit=request["limit"],
        extra_vars=request["extra_vars"],
        timeout=DEPLOY_TIMEOUT,
        settings=settings.stored(),
        secrets_holder=holder if secrets.get("ssh_key") or secrets.get("extra_vars") else None,
        created_by=principal.name,
        quota=quota_for(session, principal),
        max_queued=config.MAX_QUEUED_JOBS,
    )
    return job, secrets


def _listed_host(settings: DeploySettings, host: str) -> InventoryHost:
    """A host of a host-list deployment as its generated inventory will have it."""
    windows = settings.os_type == "windows"
    port = settings.port if settings.port is not None else 5986 if windows else 22
    address = (settings.addresses or {})[host]
    return InventoryHost(host, address, port, "winrm" if windows else "ssh", windows, (address,))


def _at_checked_address(host: InventoryHost, checked: dict[str, list[str]]) -> InventoryHost:
    """The host with the addresses its names were checked at (a name is not resolved again by ssh)."""

    def at(value: str) -> list[str]:
        return checked.get(value) or checked.get(_normal(value)) or [value]

    return host._replace(address=at(host.address)[0], addresses=tuple(a for v in host.addresses for a in at(v)))


def _normal(value: str) -> str:
    try:
        return _host(value, "limit")
    except ValidationError:
        return value


def _inventory_for_request(config: Config, limit: str | None) -> list[InventoryHost]:
    try:
        hosts = inventory_hosts(config.INVENTORY, limit)
    except (subprocess.SubprocessError, OSError, ValueError) as exc:
        # ansible-inventory's message names this machine's paths and may quote inventory lines (passwords):
        # neither returned nor logged.
        log.warning("reading the inventory with limit %r failed (%s): see ansible-inventory --list --limit", limit, type(exc).__name__)
        raise ValidationError(f"limit {limit!r} is not a host pattern the inventory can use", field="limit") from None
    if not hosts:
        raise ValidationError(f"no inventory host matches {limit!r}", field="limit")
    return hosts


SSH_CONNECTIONS = ("ssh", "smart")
WINRM_CONNECTIONS = ("winrm", "psrp")


def check_credential_use(session: Session, config: Config, name: str, hosts: list[InventoryHost]) -> None:
    """Forbidden unless stored credential `name` may be used on every host: inside its scope, on one of its
    ports, over a connection whose server identity is verified, and (SSH) with a host key established before."""
    credential = session.scalar(select(Credential).where(Credential.name == name))
    if credential is None:
        raise ValidationError(f"no stored credential {name!r}", field="credential")
    if credential.scope is not None and not inside_scope(credential.scope, [a for h in hosts for a in (h.address, *h.addresses)]):
        raise Forbidden(f"credential {name!r} may only be used for hosts in its scope: {', '.join(credential.scope)}")
    for host in hosts:
        if host.connection not in SSH_CONNECTIONS + WINRM_CONNECTIONS:
            raise Forbidden(f"credential {name!r} is not used over the {host.connection!r} connection of {host.name}: only ssh and winrm")
        if host.unverified:
            raise Forbidden(f"credential {name!r} is not sent to {host.name}: {host.unverified}")
        allowed = credential_ports(credential, "winrm" if host.connection in WINRM_CONNECTIONS else "ssh")
        if host.port not in allowed:
            raise Forbidden(
                f"credential {name!r} may only be used on port {', '.join(map(str, allowed))}; {host.name} is reached on port {host.port}"
            )
    ssh = [Target(h.name, h.address, h.port) for h in hosts if h.connection in SSH_CONNECTIONS]
    hostkeys.refuse_untrusted(session, config.KNOWN_HOSTS_FILE, name, ssh)


def _open_stored(session: Session, config: Config, secrets: dict[str, Any], request: dict[str, Any]) -> None:
    """Put a stored credential's secret where a given one would go (in memory only)."""
    settings: DeploySettings = request["settings"]
    credential, secret = open_credential(session, config, secrets.pop("credential"))
    if credential.kind == "ssh_key":
        if settings.os_type == "windows":
            raise ValidationError("Windows hosts are reached over WinRM: use a password credential", field="credential")
        secrets["ssh_key"] = secret
    else:
        secrets["extra_vars"]["ansible_password"] = secret
    settings.credential = credential.name
    if settings.username is None and credential.username:
        settings.username = credential.username
        if credential.username not in ("root", "Administrator") and settings.os_type != "windows":
            request["extra_vars"]["cloudx_become"] = True
    if settings.hosts is not None and settings.username is None:
        raise ValidationError(f"username is required: credential {credential.name!r} has none", field="username")


# --- where the job runs --------------------------------------------------------


def write_inventory(settings: DeploySettings, directory: Path, ca_trust_path: str = "") -> Path:
    """The inventory of a deployment to listed hosts: one group per os_type, connection settings per platform."""
    os_type = settings.os_type
    addresses = settings.addresses or {}
    hosts: dict[str, dict[str, Any]] = {}
    for host in settings.hosts or []:
        hosts[host] = {"ansible_port": settings.port} if settings.port is not None else {}
        if addresses.get(host, host) != host:
            hosts[host]["ansible_host"] = addresses[host]
    group_vars: dict[str, Any] = {}
    if settings.username is not None:
        group_vars["ansible_user"] = settings.username
    if os_type == "windows":
        group_vars.update(
            {
                "ansible_connection": "winrm",
                "ansible_winrm_transport": "ntlm",
                "ansible_winrm_scheme": "https",
                "ansible_winrm_server_cert_validation": "validate",
            }
        )
        if ca_trust_path:
            group_vars["ansible_winrm_ca_trust_path"] = ca_trust_path
    else:
        group_vars["ansible_python_interpreter"] = "auto_silent"
    inventory = {"all": {"children": {"agents": {"children": {os_type: {"hosts": hosts, "vars": group_vars}}}}}}
    path = directory / "inventory.json"
    path.write_text(json.dumps(inventory, indent=1))
    return path


class InventoryHost(NamedTuple):
    name: str
    address: str
    port: int
    connection: str
    windows: bool
    # Every address a host variable names (ansible_host, ansible_ssh_host, ...): all are checked.
    addresses: tuple[str, ...]
    # Why the server's identity would not be verified on this host's connection (None: it would be).
    unverified: str | None = None


ADDRESS_VARS = ("ansible_host", "ansible_ssh_host", "ansible_winrm_host", "ansible_psrp_host")
# Each connection's own variables win over the generic ones (as in ansible-core's connection plugins).
CONNECTION_VARS = {
    "winrm": ("ansible_winrm_host", "ansible_winrm_port", 5986),
    "psrp": ("ansible_psrp_host", "ansible_psrp_port", 5986),
}
# Host variables that can replace or extend the ssh options that enforce the job's known_hosts.
SSH_OVERRIDES = (
    "ansible_ssh_args",
    "ansible_ssh_common_args",
    "ansible_ssh_extra_args",
    "ansible_ssh_executable",
    "ansible_sftp_extra_args",
    "ansible_scp_extra_args",
)


def _unverified(hv: dict[str, Any], connection: str) -> str | None:
    """Why this host's connection would not verify the server it reaches (for a stored credential)."""
    if connection in ("winrm", "psrp"):
        if str(hv.get("ansible_winrm_server_cert_validation", hv.get("ansible_psrp_cert_validation", ""))).lower() == "ignore":
            return "its inventory switches off certificate validation"
        schemes = {str(hv.get("ansible_winrm_scheme", "https")).lower(), str(hv.get("ansible_psrp_protocol", "https")).lower()}
        if schemes != {"https"}:
            return "its inventory uses plain HTTP"
        return None
    overrides = [name for name in SSH_OVERRIDES if hv.get(name)]
    return f"its inventory sets {', '.join(overrides)}, which can change host key checking" if overrides else None


def inventory_hosts(inventory: str | list[str], limit: str | None) -> list[InventoryHost]:
    """Every host of an inventory (matching limit), as ansible-inventory sees it, with all its groups."""
    argv = [str(Path(sys.executable).parent / "ansible-inventory"), "--list"]
    for source in [inventory] if isinstance(inventory, str) else inventory:
        argv += ["-i", source]
    if limit:
        argv += ["--limit", limit]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=True).stdout
    data = json.loads(out)
    hostvars = data.get("_meta", {}).get("hostvars", {})
    parents: dict[str, set[str]] = {}
    direct: dict[str, set[str]] = {}
    for group, content in data.items():
        if group != "_meta" and isinstance(content, dict):
            for child in content.get("children", []):
                parents.setdefault(child, set()).add(group)
            for name in content.get("hosts", []):
                direct.setdefault(name, set()).add(group)
    found = []
    for name in sorted(direct):
        groups, todo = set(), list(direct[name])
        while todo:  # a host is in its groups' parent groups too (group_names)
            group = todo.pop()
            if group not in groups:
                groups.add(group)
                todo.extend(parents.get(group, ()))
        hv = hostvars.get(name, {})
        connection = str(hv.get("ansible_connection", "ssh"))
        windows = "windows" in groups or connection in ("winrm", "psrp")
        named = tuple(dict.fromkeys(str(hv[v]) for v in ADDRESS_VARS if hv.get(v))) or (name,)
        host_var, port_var, default_port = CONNECTION_VARS.get(connection, ("ansible_ssh_host", "ansible_ssh_port", 22))
        address = str(hv.get(host_var) or hv.get("ansible_host") or name)
        port = int(hv.get(port_var) or hv.get("ansible_port") or default_port)
        found.append(InventoryHost(name, address, port, connection, windows, named, _unverified(hv, connection)))
    return found


def _is_address(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def write_checked_addresses(hosts: list[InventoryHost], directory: Path) -> Path | None:
    """An inventory source, read after the job's own, that connects SSH hosts named by a hostname to the address
    that name was checked at: ssh would otherwise resolve it again (another answer, outside the scope).
    The addresses are host_vars of that source: they win over the job inventory's own host_vars (a later
    source's), which plain host variables would not. WinRM and PSRP hosts keep their names: the server's
    certificate is checked against the name."""
    named = {h.name: h.address for h in hosts if _is_address(h.address) and h.connection in (*SSH_CONNECTIONS, "paramiko")}
    if not named:
        return None
    root = directory / "checked_addresses"
    (root / "host_vars").mkdir(parents=True, exist_ok=True)
    (root / "hosts.json").write_text(json.dumps({"all": {"hosts": {name: None for name in named}}}, indent=1))
    for name, address in named.items():
        (root / "host_vars" / f"{name}.json").write_text(json.dumps({"ansible_host": address, "ansible_ssh_host": address}))
    return root


def prepare(
    db: Database, config: Config, job: dict[str, Any], private_dir: Path, should_stop: Callable[[], bool] = lambda: False
) -> dict[str, Any]:
    """Runner settings of a deploy job: its inventory, its known_hosts and strict host key checking.

    Everything is checked again here, where the job runs (the inventory, the policy, the submitter's token or
    a trusted key may have changed), before any connection or login.
    """
    settings = DeploySettings.model_validate(job["settings"])
    listed = settings.hosts is not None
    inventory = str(write_inventory(settings, private_dir, config.WINRM_CA_TRUST_PATH)) if listed else job["inventory"]
    try:
        everything = inventory_hosts(inventory, job["limit"])
    except (subprocess.SubprocessError, OSError, ValueError) as exc:
        log.warning("job %s: reading the inventory failed (%s)", job["id"], type(exc).__name__)
        raise ValidationError(f"limit {job['limit']!r} is not a host pattern the inventory can use", field="limit") from None
    with db.session() as session:
        targets = sorted({a for h in everything for a in h.addresses})
        manager = job["extra_vars"].get("cloudx_agent_manager_address")
        principal = principal_for(session, job["created_by"])
        checked = check_targets(session, principal, [*targets, *([manager] if manager else [])], windows=any(h.windows for h in everything))
        hosts = [_at_checked_address(h, checked) for h in everything]
        if settings.credential:
            check_credential_use(session, config, settings.credential, hosts)
    sources: list[str] = [inventory]
    overrides = write_checked_addresses([h for h, o in zip(hosts, everything, strict=True) if h.address != o.address], private_dir)
    if overrides is not None:
        sources.append(str(overrides))
    ssh = [Target(h.name, h.address, h.port) for h in hosts if h.connection in (*SSH_CONNECTIONS, "paramiko")]
    keys = hostkeys.write_job_known_hosts(db, config, settings, ssh, private_dir, should_stop)
    ssh_args = f"-C -o ControlMaster=auto -o ControlPersist=60s -o UserKnownHostsFile={keys.known_hosts} -o StrictHostKeyChecking=yes"
    extra_files = [config.AGENT_VARS_FILE] if config.AGENT_VARS_FILE else []
    # The job's own ssh master connections: a master another job opened (and checked against its own
    # known_hosts) is never reused. Short, outside the artifacts: a socket path has at most 108 bytes.
    control_dir = tempfile.mkdtemp(prefix="cx-ssh-")
    return {
        "inventory": sources if len(sources) > 1 else inventory,
        "envvars": {"ANSIBLE_SSH_ARGS": ssh_args, "ANSIBLE_HOST_KEY_CHECKING": "True", "ANSIBLE_SSH_CONTROL_PATH_DIR": control_dir},
        "cmdline_files": extra_files,
        "pending_pins": keys.pending,
        "control_dir": control_dir,
    }


def finish(db: Database, job: dict[str, Any], plan: dict[str, Any], status: str, reason: str | None) -> tuple[str, str | None]:
    """After the playbook: pin the keys first used on the hosts the job really reached."""
    if plan.get("control_dir"):
        shutil.rmtree(plan["control_dir"], ignore_errors=True)
    pinned = hostkeys.record_pins(
        db, job["id"], plan.get("pending_pins", {}), job["created_by"], DeploySettings.model_validate(job["settings"]).credential
    )
    if pinned:
        log.info("job %s pinned the host keys of %s", job["id"], ", ".join(pinned))
    return status, reason
