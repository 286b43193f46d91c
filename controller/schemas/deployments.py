"""Agent deployments: one host (the original endpoint), a host list or an inventory pattern; trusted host keys."""

from __future__ import annotations

import itertools
from typing import Annotated, Any, ClassVar, Literal, Self

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from controller.errors import ValidationError
from controller.schemas.base import Request, Response
from controller.schemas.types import (
    ANSIBLE_PATTERN,
    DEPLOY_STATES,
    MAX_HOSTS,
    OS_TYPES,
    AgentName,
    Cidr,
    CredentialName,
    Host,
    HostKeyLines,
    KnownHosts,
    PrivateKey,
    Secret,
    Timestamp,
    Username,
    matching,
)

# The playbook of each deployment state (a deploy job's state is its playbook).
PLAYBOOKS = {"present": "playbooks/deploy_agent.yml", "absent": "playbooks/remove_agent.yml"}
OsType = Literal["linux", "windows", "mac"]
assert OsType.__args__ == OS_TYPES  # type: ignore[attr-defined]
Limit = Annotated[
    matching(ANSIBLE_PATTERN, "limit must be an Ansible host pattern such as 'linux' or 'web*:&prod'"),
    Field(description="An inventory group or Ansible host pattern, e.g. linux or web*:&prod."),
]
HostList = Annotated[list[Host], Field(min_length=1, max_length=MAX_HOSTS), AfterValidator(lambda hosts: sorted(set(hosts)))]


LOGINS = ("password", "ssh_key", "credential")
# The fields that hold secrets pasted into a request: kept in memory for its job, never stored.
PASTED_SECRETS = ("password", "ssh_key", "become_password", "enrollment_password")


def _given(name: str) -> dict[str, Any]:
    return {"required": [name], "properties": {name: {"not": {"type": "null"}}}}


# The rules across fields that the validators below apply, as JSON Schema (the document must allow only what is
# accepted): at most one login; no SSH key for Windows (absent os_type is linux where it has a default).
RULES: list[dict[str, Any]] = [
    *({"not": {"allOf": [_given(a), _given(b)]}} for a, b in itertools.combinations(LOGINS, 2)),
    {
        "if": {"required": ["os_type"], "properties": {"os_type": {"const": "windows"}}},
        "then": {"properties": {"ssh_key": {"type": "null"}}},
    },
]
# One host needs a login, and a username unless the stored credential has one.
AGENT_RULES = [*RULES, {"anyOf": [_given(name) for name in LOGINS]}, {"anyOf": [_given("username"), _given("credential")]}]


class _Deployment(Request):
    """What every deployment request may give: the platform, the login and the agent's settings."""

    messages: ClassVar[dict[str, str]] = {
        "os_type": f"os_type must be one of: {', '.join(OS_TYPES)}",
        "username": "username may hold letters, digits, _ . - and \\ (1-64 characters)",
        "hosts": f"hosts must be a list of 1 to {MAX_HOSTS} addresses or hostnames",
        "limit": "limit must be an Ansible host pattern such as 'linux' or 'web*:&prod'",
        "state": "state must be present or absent",
        "port": "port must be an integer from 1 to 65535",
        "known_hosts": "known_hosts must be a string or a list of 'host keytype key' lines",
        **{f: f"{f} must be a non-empty string" for f in ("password", "ssh_key", "become_password", "enrollment_password", "secret")},
        **{f: f"{f} must be a string" for f in ("target", "manager_ip", "group", "agent_name", "credential")},
    }
    login_required: ClassVar[bool] = False
    model_config = ConfigDict(json_schema_extra={"allOf": RULES})

    os_type: OsType
    username: Username | None = None
    password: Secret | None = None
    ssh_key: PrivateKey | None = None
    credential: CredentialName | None = Field(default=None, description="The name of a stored credential.")
    become_password: Secret | None = None
    enrollment_password: Secret | None = None
    manager_ip: Host | None = Field(default=None, description="The manager's address.")
    group: AgentName | None = Field(default=None, description="The agent group.")
    known_hosts: KnownHosts | None = None

    @property
    def known_hosts_lines(self) -> list[str]:
        return list(self.known_hosts or [])

    @property
    def auth(self) -> str:
        """Which login the request uses: key, password, a stored credential, or the inventory's."""
        return "key" if self.ssh_key else "password" if self.password else "credential" if self.credential else "inventory"

    @model_validator(mode="after")
    def _one_login(self) -> Self:
        given = [v is not None for v in (self.password, self.ssh_key, self.credential)]
        if sum(given) > 1:
            raise ValidationError("give one of password, ssh_key or credential", field="credential" if given[2] else "ssh_key")
        if self.ssh_key is not None and self.os_type == "windows":
            raise ValidationError("Windows hosts are reached over WinRM: give a password", field="ssh_key")
        if self.login_required and not any(given):
            raise ValidationError("give a password or an ssh_key", field="password")
        return self


class AgentRequest(_Deployment):
    """POST /api/deploy/agent: one host, a login (password, ssh_key or a stored credential) and a username (or a
    credential that has one)."""

    login_required = True
    model_config = ConfigDict(json_schema_extra={"allOf": AGENT_RULES})

    target: Host
    agent_name: AgentName | None = None
    port: int | None = Field(default=None, ge=1, le=65535, description="The SSH (or WinRM) port.")

    @model_validator(mode="after")
    def _username(self) -> Self:
        if self.username is None and self.credential is None:
            raise ValidationError("username is required", field="username")
        return self

    @property
    def hosts(self) -> list[str]:
        return [self.target]


class HostsDeployment(_Deployment):
    """POST /api/deployments to a list of hosts (addresses or hostnames)."""

    hosts: HostList
    limit: None = None
    state: Literal["present", "absent"] = Field(default="present", description="present deploys, absent removes the agent.")


class PatternDeployment(_Deployment):
    """POST /api/deployments to the inventory's hosts matching a pattern; without a login the inventory's is used."""

    limit: Limit
    hosts: None = None
    os_type: OsType = "linux"
    state: Literal["present", "absent"] = Field(default="present", description="present deploys, absent removes the agent.")


class Coverage(Request):
    network: Cidr = Field(description="The assets in this network seen up without the agent (GET /api/coverage), at most 1000.")


class CoverageDeployment(_Deployment):
    """POST /api/deployments to the assets of a network that the scans saw up and that have no agent."""

    coverage: Coverage
    hosts: None = None
    limit: None = None
    state: Literal["present"] = Field(default="present", description="Deploys the agent (removal takes hosts or limit).")

    def to_hosts(self, hosts: list[str]) -> HostsDeployment:
        """The same deployment to the hosts the coverage names now (then checked as any host list is)."""
        fields = self.model_dump(exclude={"coverage", "hosts", "limit"}, exclude_unset=True)
        return HostsDeployment.parse({**fields, "hosts": hosts})


assert tuple(HostsDeployment.model_fields["state"].annotation.__args__) == DEPLOY_STATES  # type: ignore[union-attr]
DeployRequest = AgentRequest | HostsDeployment | PatternDeployment | CoverageDeployment


class DeploymentRequest:
    """POST /api/deployments: either hosts or limit, each its own request type (the key given picks it)."""

    variants = (HostsDeployment, PatternDeployment, CoverageDeployment)

    @classmethod
    def parse(cls, data: Any, **context: Any) -> HostsDeployment | PatternDeployment | CoverageDeployment:
        if not isinstance(data, dict):
            raise ValidationError("the request body must be a JSON object", field="body")
        given = [key for key in ("hosts", "limit", "coverage") if data.get(key) is not None]
        if len(given) != 1:
            raise ValidationError(
                "give one of hosts (a list of addresses), limit (an inventory group or pattern) or coverage ({network})", field="hosts"
            )
        variant = {"hosts": HostsDeployment, "limit": PatternDeployment, "coverage": CoverageDeployment}[given[0]]
        return variant.parse(data, **context)


class TrustHostKeys(Request):
    """PUT /api/host-keys."""

    messages = {"known_hosts": "give known_hosts: one or more 'host keytype base64key' lines"}

    known_hosts: HostKeyLines


class HostKey(Response):
    host: str
    key_type: str
    public_key: str
    source: str
    job_id: str | None
    credential: str | None
    added_by: str | None
    created_at: Timestamp


class HostKeys(Response):
    host_keys: list[HostKey]


class HostKeyDeleted(Response):
    host: str
    deleted: int = Field(ge=1)


class DeploySettings(BaseModel):
    """What a deploy job keeps for its worker (Job.settings): typed where the API writes it and where the worker
    reads it, a JSON object in the database between them (stored without its unset fields)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    os_type: OsType
    auth: Literal["key", "password", "credential", "inventory"] = "inventory"
    known_hosts: list[str] = []
    hosts: list[str] | None = None  # a host-list deployment's hosts (None: the inventory's, through the job's limit)
    username: str | None = None
    port: int | None = None
    addresses: dict[str, str] | None = None  # each listed host's address as the scope check resolved it
    credential: str | None = None  # the stored credential's name
    # The secrets the request pasted (never stored): a relaunch must be given them again.
    pasted: list[str] | None = None

    def stored(self) -> dict[str, Any]:
        return self.model_dump(exclude_none=True)
