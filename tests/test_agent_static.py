"""The Windows and macOS agent roles and their standalone scripts: everything that can be checked without such a host.

Lint at the production profile, syntax, argument validation on the local host (it must stop in the validation step),
every template rendered with plain Jinja2 and parsed (XML, plist), the scripts' syntax, and the scripts and roles
agreeing on validation and on the files they write.
"""

from __future__ import annotations

import ipaddress
import json
import plistlib
import random
import re
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import jinja2
import pytest
import yaml

from tests.support.ansible import ansible

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
ROLES = {"windows": ROOT / "roles" / "cloudx_agent_windows", "mac": ROOT / "roles" / "cloudx_agent_mac"}
MAC_SCRIPTS = [ROOT / "scripts" / "mac" / "cloudx-agent-install.sh", ROOT / "scripts" / "mac" / "cloudx-agent-setup.sh"]
SETUP_SH = MAC_SCRIPTS[1]
PS_MODULES = [ROOT / "scripts" / "windows" / "cloudx-agent-installer.psm1", ROOT / "scripts" / "windows" / "cloudx-agent-uninstaller.psm1"]
SECRET = "CxTopSecret-9f3a&<x>"
PATTERNS = ["name", "hostname", "ipv4", "ipv6"]


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def role_vars(role: str) -> dict[str, Any]:
    return {**load_yaml(ROLES[role] / "defaults" / "main.yml"), **load_yaml(ROLES[role] / "vars" / "main.yml")}


def prefix(role: str) -> str:
    return ROLES[role].name


# --- Lint and syntax -------------------------------------------------------------------------------------------------


def test_ansible_lint_production(tmp_path):
    result = ansible(
        "ansible-lint", "--offline", "--profile", "production", "roles/cloudx_agent_windows", "roles/cloudx_agent_mac", tmp_path=tmp_path
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_syntax_check(tmp_path):
    playbook = tmp_path / "agents.yml"
    playbook.write_text(
        yaml.safe_dump(
            [
                {"name": "Windows agents", "hosts": "windows", "gather_facts": False, "roles": ["cloudx_agent_windows"]},
                {"name": "Mac agents", "hosts": "mac", "gather_facts": False, "become": True, "roles": ["cloudx_agent_mac"]},
                {
                    "name": "Removal",
                    "hosts": "all",
                    "gather_facts": False,
                    "tasks": [
                        {
                            "name": "Remove the Windows agent",
                            "ansible.builtin.include_role": {"name": "cloudx_agent_windows"},
                            "vars": {"cloudx_agent_windows_state": "absent"},
                        },
                        {
                            "name": "Remove the mac agent",
                            "ansible.builtin.include_role": {"name": "cloudx_agent_mac"},
                            "vars": {"cloudx_agent_mac_state": "absent"},
                        },
                    ],
                },
            ],
            sort_keys=False,
        )
    )
    inventory = tmp_path / "hosts.yml"
    inventory.write_text("all:\n  children:\n    windows:\n      hosts: {win1: {}}\n    mac:\n      hosts: {mac1: {}}\n")
    result = ansible("ansible-playbook", "--syntax-check", "-i", str(inventory), str(playbook), tmp_path=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


# --- Argument validation on the local host ---------------------------------------------------------------------------

# host: (variables, the variable the failure must name)
BAD_CASES: dict[str, tuple[dict[str, Any], str]] = {
    "bad_state": ({"state": "maybe"}, "state"),
    "dash_name": ({"agent_name": "-x"}, "agent_name"),
    "space_name": ({"agent_name": "web 01"}, "agent_name"),
    "newline_name": ({"agent_name": "web01\n"}, "agent_name"),
    "comma_group": ({"agent_group": "a,b"}, "agent_group"),
    "no_manager": ({"manager_address": ""}, "manager_address"),
    "url_manager": ({"manager_address": "https://wazuh.example.com"}, "manager_address"),
    "bad_ipv4_manager": ({"manager_address": "10.0.0.256"}, "manager_address"),
    "bracket_ipv6_manager": ({"manager_address": "[2001:db8::1]"}, "manager_address"),
    "port_zero": ({"manager_port": 0}, "manager_port"),
    "port_text": ({"enrollment_port": "abc"}, "enrollment_port"),
    "port_high": ({"enrollment_port": 65536}, "enrollment_port"),
    "bad_source": ({"package_source": "ftp"}, "package_source"),
    "file_no_checksum": ({"package_source": "file", "package_file": "/tmp/agent.pkg"}, "package_checksum"),
    "url_bad_checksum": (
        {"package_source": "url", "package_url": "https://mirror.example/a", "package_checksum": "md5:0"},
        "package_checksum",
    ),
    "bad_version": ({"version": "4.9"}, "version"),
}
ROLE_BAD_CASES: dict[str, dict[str, tuple[dict[str, Any], str]]] = {
    "windows": {
        "system_install_dir": ({"install_dir": "C:\\Windows"}, "install_dir"),
        "sysmon_no_config": ({"sysmon_enabled": True}, "sysmon_config"),
    },
    "mac": {
        "bad_arch": ({"architecture": "sparc"}, "architecture"),
        "dotdot_download_dir": ({"download_dir": "/private/var/tmp/../.."}, "download_dir"),
    },
}
WRAPPER = "Include the role"
GOOD = {"manager_address": "2001:db8::10", "agent_group": "eu-west_1.servers", "agent_name": "host-01.corp.example"}


@pytest.fixture(scope="module")
def validation_runs(tmp_path_factory) -> dict[str, tuple[subprocess.CompletedProcess[str], dict[str, Any]]]:
    """One run per role: a host per case, all on this machine, in check mode. Windows through include_role, macOS roles:."""
    runs = {}
    for role in ROLES:
        tmp_path = tmp_path_factory.mktemp(role)
        p = prefix(role)
        hosts = {
            name: {f"{p}_{key}": value for key, value in values.items()}
            for name, (values, _) in {**BAD_CASES, **ROLE_BAD_CASES[role], "good": (GOOD, "")}.items()
        }
        inventory = {
            "all": {
                "vars": {
                    "ansible_connection": "local",
                    "ansible_python_interpreter": sys.executable,
                    f"{p}_manager_address": "wazuh.example.com",
                    f"{p}_enrollment_password": SECRET,
                    "cloudx_agent_vendor_site": "https://downloads.example",
                },
                "hosts": hosts,
            }
        }
        (tmp_path / "hosts.yml").write_text(yaml.safe_dump(inventory))
        play = {"tasks": [{"name": WRAPPER, "ansible.builtin.include_role": {"name": p}}]} if role == "windows" else {"roles": [p]}
        (tmp_path / "play.yml").write_text(yaml.safe_dump([{"name": "Validate", "hosts": "all", "gather_facts": False, **play}]))
        result = ansible(
            "ansible-playbook",
            "--check",
            "-i",
            str(tmp_path / "hosts.yml"),
            str(tmp_path / "play.yml"),
            tmp_path=tmp_path,
            ANSIBLE_STDOUT_CALLBACK="ansible.posix.json",
        )
        assert result.stdout.strip(), result.stderr
        runs[role] = (result, json.loads(result.stdout))
    return runs


def tasks_per_host(report: dict[str, Any]) -> dict[str, list[tuple[str, str, dict[str, Any]]]]:
    """host -> [(task name, task path, result)] in the order they ran, the playbook's include_role left out."""
    per_host: dict[str, list[tuple[str, str, dict[str, Any]]]] = {}
    for play in report["plays"]:
        for task in play["tasks"]:
            if task["task"]["name"] == WRAPPER:
                continue
            for host, result in task["hosts"].items():
                per_host.setdefault(host, []).append((task["task"]["name"], task["task"].get("path") or "", result))
    return per_host


def is_validation(role: str, name: str, path: str) -> bool:
    return "Validating arguments against arg spec" in name or path.startswith(str(ROLES[role] / "tasks" / "validate.yml"))


@pytest.mark.parametrize("role", list(ROLES))
def test_bad_variables_fail_in_the_validation_step(role, validation_runs):
    result, report = validation_runs[role]
    assert result.returncode != 0
    per_host = tasks_per_host(report)
    p = prefix(role)
    for host, (_, variable) in {**BAD_CASES, **ROLE_BAD_CASES[role]}.items():
        ran = per_host[host]
        assert all(is_validation(role, name, path) for name, path, _ in ran), (host, [name for name, _, _ in ran])
        failed = [(name, res) for name, _, res in ran if res.get("failed")]
        assert len(failed) == 1 and ran[-1][2].get("failed"), (host, ran)
        name, res = failed[0]
        messages = [res.get("msg", ""), res.get("argument_errors", ""), *(item.get("msg", "") for item in res.get("results", []))]
        text = name + json.dumps(messages)
        assert f"{p}_{variable}" in text, (host, text)
    assert report["stats"]["good"]["failures"] == 1


@pytest.mark.parametrize("role", list(ROLES))
def test_good_variables_pass_validation_and_stop_at_the_os_check(role, validation_runs):
    _, report = validation_runs[role]
    ran = tasks_per_host(report)["good"]
    validation = [res for name, path, res in ran if is_validation(role, name, path)]
    assert validation and not any(res.get("failed") for res in validation)
    rest = [(name, path, res) for name, path, res in ran if not is_validation(role, name, path)]
    # Only the facts and the OS check ran after validation, and the OS check refused this Linux machine.
    assert [Path(path.rsplit(":", 1)[0]).name for _, path, _ in rest] == ["main.yml", "main.yml"]
    assert rest[-1][2].get("failed") and "only manages" in rest[-1][2]["msg"]


@pytest.mark.parametrize("role", list(ROLES))
def test_the_password_never_reaches_the_output(role, validation_runs):
    result, _ = validation_runs[role]
    for fragment in (SECRET, "CxTopSecret"):
        assert fragment not in result.stdout and fragment not in result.stderr


def walk_tasks(tasks: list[dict[str, Any]]):
    for task in tasks or []:
        for key in ("block", "rescue", "always"):
            if key in task:
                yield from walk_tasks(task[key])
        if not any(key in task for key in ("block", "rescue", "always")):
            yield task


@pytest.mark.parametrize("role", list(ROLES))
def test_every_task_using_the_password_hides_its_output(role):
    """Tasks and handlers that pass the password anywhere (conditions aside) have no_log: true."""
    using = []
    for path in [*sorted((ROLES[role] / "tasks").glob("*.yml")), ROLES[role] / "handlers" / "main.yml"]:
        for task in walk_tasks(load_yaml(path)):
            body = {key: value for key, value in task.items() if key not in ("name", "when")}
            if "enrollment_password" in json.dumps(body):
                using.append(task["name"])
                assert task.get("no_log") is True, (path.name, task["name"])
    assert len(using) >= 2  # the validation and the task that writes authd.pass


def test_no_password_on_a_command_line_and_no_certificate_trust():
    files = [*MAC_SCRIPTS, *PS_MODULES, *[p for r in ROLES.values() for p in r.rglob("*") if p.is_file()]]
    for path in files:
        text = path.read_text()
        assert "WAZUH_REGISTRATION_PASSWORD" not in text, path
        assert not re.search(r"(?i)win_certificate_store|Import-Certificate|Cert:\\|certutil|add-trusted-cert|trustRoot", text), path
        assert not re.search(r"(^|[\s\"'])-P([\s\"']|$)", text, re.M), path  # agent-auth's password option
    msi = role_vars("windows")["cloudx_agent_windows__msi_arguments"]
    assert "password" not in msi.lower()


# --- Templates -------------------------------------------------------------------------------------------------------


def jinja_env(role: str) -> jinja2.Environment:
    # Ansible's template defaults: trim_blocks, keep the trailing newline. Only plain Jinja2 is available here.
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(ROLES[role] / "templates")),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        keep_trailing_newline=True,
        autoescape=False,
    )


def resolve(env: jinja2.Environment, raw: dict[str, Any], context: dict[str, Any]) -> dict[str, Any]:
    """Renders templated variables until nothing changes; those that need Ansible-only plugins stay out."""
    values = {**context}
    pending = {key: value for key, value in raw.items() if key not in values}
    for _ in range(10):
        progress = False
        for key, value in list(pending.items()):
            if isinstance(value, str) and "{{" in value:
                try:
                    value = env.from_string(value).render(values)
                except (jinja2.UndefinedError, jinja2.TemplateError):
                    continue
            values[key] = value
            del pending[key]
            progress = True
        if not progress:
            break
    return values


def render(role: str, template: str, overrides: dict[str, Any]) -> str:
    env = jinja_env(role)
    values = resolve(
        env, role_vars(role), {"inventory_hostname": "agent-host.example", "ansible_facts": {"architecture": "arm64"}, **overrides}
    )
    return env.get_template(template).render(values)


def templates(role: str) -> list[str]:
    base = ROLES[role] / "templates"
    return sorted(str(p.relative_to(base)) for p in base.rglob("*.j2"))


def test_template_paths_mirror_their_destinations():
    assert templates("windows") == ["Program Files (x86)/ossec-agent/ossec.conf.j2"]
    assert templates("mac") == ["Library/LaunchDaemons/com.cloudx.agent.plist.j2", "Library/Ossec/etc/ossec.conf.j2"]
    defaults = role_vars("windows")
    assert defaults["cloudx_agent_windows_install_dir"] == "C:\\Program Files (x86)\\ossec-agent"
    mac = role_vars("mac")
    assert mac["cloudx_agent_mac__ossec_conf"] == "/Library/Ossec/etc/ossec.conf"
    assert mac["cloudx_agent_mac__plist"] == "/Library/LaunchDaemons/com.cloudx.agent.plist"


TEMPLATE_CASES = [
    pytest.param({"manager_address": "wazuh.example.com"}, id="defaults"),
    pytest.param(
        {
            "manager_address": "2001:db8::10",
            "manager_port": 11514,
            "enrollment_port": 11515,
            "agent_name": "host-01.corp_example",
            "agent_group": "eu-west_1.linux.servers",
            "enrollment_password": SECRET,
            "sysmon_enabled": True,
            "powershell_logging": False,
            "extra_localfiles": [
                {
                    "location": "Microsoft-Windows-TaskScheduler/Operational",
                    "query": 'Event/System[Level < 3 and Provider[@Name="x"]] & more',
                }
            ],
        },
        id="ipv6-password-sysmon",
    ),
    pytest.param(
        {"manager_address": "192.0.2.7", "enrollment_password": "", "sysmon_enabled": False, "extra_localfiles": []}, id="ipv4-no-password"
    ),
]


def expected(role: str, case: dict[str, Any]) -> dict[str, Any]:
    return {
        "manager": case["manager_address"],
        "port": str(case.get("manager_port", 1514)),
        "enrollment_port": str(case.get("enrollment_port", 1515)),
        "name": case.get("agent_name", "agent-host.example"),
        "group": case.get("agent_group", "default"),
        "password": bool(case.get("enrollment_password")),
    }


def check_ossec_conf(text: str, want: dict[str, Any], pass_path: str) -> ET.Element:
    root = ET.fromstring(text)
    assert root.tag == "ossec_config"
    assert root.findtext("client/server/address") == want["manager"]
    assert root.findtext("client/server/port") == want["port"]
    assert root.findtext("client/server/protocol") == "tcp"
    enrollment = root.find("client/enrollment")
    assert enrollment is not None
    assert enrollment.findtext("enabled") == "yes"
    assert enrollment.findtext("manager_address") == want["manager"]
    assert enrollment.findtext("port") == want["enrollment_port"]
    assert enrollment.findtext("agent_name") == want["name"]
    assert enrollment.findtext("groups") == want["group"]
    assert enrollment.findtext("authorization_pass_path") == (pass_path if want["password"] else None)
    assert "CxTopSecret" not in text
    return root


@pytest.mark.parametrize("case", TEMPLATE_CASES)
def test_windows_ossec_conf(case):
    overrides = {f"cloudx_agent_windows_{key}": value for key, value in case.items()}
    text = render("windows", "Program Files (x86)/ossec-agent/ossec.conf.j2", overrides)
    root = check_ossec_conf(text, expected("windows", case), "authd.pass")
    channels = {lf.findtext("location"): lf for lf in root.findall("localfile")}
    assert {"Application", "Security", "System"} <= set(channels)
    assert ("Microsoft-Windows-Sysmon/Operational" in channels) == case.get("sysmon_enabled", False)
    assert ("Microsoft-Windows-PowerShell/Operational" in channels) == case.get("powershell_logging", True)
    for extra in case.get("extra_localfiles", []):
        assert channels[extra["location"]].findtext("log_format") == "eventchannel"
        assert channels[extra["location"]].findtext("query") == extra["query"]
    assert root.find("syscheck/windows_registry") is not None


@pytest.mark.parametrize("case", TEMPLATE_CASES)
def test_mac_ossec_conf(case):
    case = {key: value for key, value in case.items() if key not in ("sysmon_enabled", "powershell_logging")}
    extras = [{"location": "/var/log/install.log"}] if "extra_localfiles" in case else []
    overrides = {f"cloudx_agent_mac_{key}": value for key, value in {**case, "extra_localfiles": extras}.items()}
    text = render("mac", "Library/Ossec/etc/ossec.conf.j2", overrides)
    root = check_ossec_conf(text, expected("mac", case), "etc/authd.pass")
    logs = {lf.findtext("location"): lf for lf in root.findall("localfile")}
    assert logs["macos"].findtext("query") == " ".join(role_vars("mac")["cloudx_agent_mac_unified_log_query"].split())
    for extra in extras:
        assert logs[extra["location"]].findtext("log_format") == "syslog"


def test_mac_ossec_conf_without_unified_log():
    text = render(
        "mac",
        "Library/Ossec/etc/ossec.conf.j2",
        {"cloudx_agent_mac_manager_address": "m.example", "cloudx_agent_mac_unified_log_query": ""},
    )
    assert "macos" not in [lf.findtext("location") for lf in ET.fromstring(text).findall("localfile")]


def test_shared_fleet_variables_are_the_defaults():
    """cloudx_agent_* (shared with the Linux role) fill in what the role-specific names leave unset."""
    shared = {"cloudx_agent_manager_address": "fleet.example", "cloudx_agent_group": "fleet_1", "cloudx_agent_name": "n1"}
    for role, template, pass_path in (
        ("windows", "Program Files (x86)/ossec-agent/ossec.conf.j2", "authd.pass"),
        ("mac", "Library/Ossec/etc/ossec.conf.j2", "etc/authd.pass"),
    ):
        text = render(role, template, {**shared, "cloudx_agent_enrollment_password": "x"})
        want = {"manager": "fleet.example", "port": "1514", "enrollment_port": "1515", "name": "n1", "group": "fleet_1", "password": True}
        check_ossec_conf(text, want, pass_path)


def test_package_locations_and_msi_arguments():
    def values(role: str, facts: dict[str, str], **overrides: Any) -> dict[str, Any]:
        context = {"inventory_hostname": "h1", "ansible_facts": facts, "cloudx_agent_vendor_site": "https://downloads.example", **overrides}
        return resolve(jinja_env(role), role_vars(role), context)

    win = values(
        "windows",
        {},
        cloudx_agent_windows_manager_address="2001:db8::10",
        cloudx_agent_windows_package_checksum="sha256:" + "AB" * 32,
        cloudx_agent_windows_enrollment_password=SECRET,
    )
    assert win["cloudx_agent_windows__vendor_url"] == "https://downloads.example/4.x/windows/wazuh-agent-4.9.2-1.msi"
    assert win["cloudx_agent_windows__checksum_hex"] == "ab" * 32
    msi = " ".join(win["cloudx_agent_windows__msi_arguments"].split())
    assert 'WAZUH_MANAGER="2001:db8::10"' in msi and 'WAZUH_REGISTRATION_PORT="1515"' in msi and 'WAZUH_AGENT_NAME="h1"' in msi
    assert "CxTopSecret" not in msi
    assert win["cloudx_agent_windows__installer"] == "C:\\Windows\\Temp\\cloudx-agent\\wazuh-agent-4.9.2.msi"
    for arch, flavour in (("arm64", "arm64"), ("x86_64", "intel64")):
        mac = values("mac", {"architecture": arch}, cloudx_agent_mac_version="4.10.1")
        assert mac["cloudx_agent_mac__vendor_url"] == f"https://downloads.example/4.x/macos/wazuh-agent-4.10.1-1.{flavour}.pkg"


def test_mac_launch_daemon():
    plist = plistlib.loads(render("mac", "Library/LaunchDaemons/com.cloudx.agent.plist.j2", {}).encode())
    launcher = role_vars("mac")["cloudx_agent_mac__launcher"]
    assert plist["Label"] == "com.cloudx.agent"
    assert plist["ProgramArguments"] == ["/bin/sh", "-c", launcher]
    assert plist["RunAtLoad"] is True
    assert plist["KeepAlive"] == {"SuccessfulExit": False}
    assert "wazuh-control stop" in launcher and "trap" in launcher
    assert not re.search(r"[<>&]", launcher)  # carried as is by the setup script


def test_mac_launcher_is_valid_sh(tmp_path):
    script = tmp_path / "launcher.sh"
    script.write_text("#!/bin/sh\n" + role_vars("mac")["cloudx_agent_mac__launcher"] + "\n")
    subprocess.run(["sh", "-n", str(script)], check=True)
    if shutil.which("shellcheck"):
        result = subprocess.run(["shellcheck", "-s", "sh", str(script)], capture_output=True, text=True)
        assert result.returncode == 0, result.stdout


# --- Validation expressions: one set for roles and scripts -------------------------------------------------------------


def role_patterns(role: str) -> dict[str, str]:
    values = role_vars(role)
    return {kind: values[f"{prefix(role)}__{kind}_pattern"] for kind in PATTERNS}


def test_roles_and_scripts_share_the_validation_expressions():
    windows, mac = role_patterns("windows"), role_patterns("mac")
    assert windows == mac
    for path in [SETUP_SH, PS_MODULES[0]]:
        text = path.read_text()
        for kind, pattern in windows.items():
            assert f"'{pattern}'" in text, (path.name, kind)


def address_ok(value: str) -> bool:
    p = role_patterns("mac")
    if not value or len(value) > 253 or re.search(r"\s", value):
        return False
    return any(re.match(p[kind], value) for kind in ("hostname", "ipv4", "ipv6"))


def name_ok(value: str) -> bool:
    return not re.search(r"\s", value) and bool(re.match(role_patterns("mac")["name"], value))


def test_address_expressions_agree_with_the_ipaddress_module():
    rng = random.Random(1234)
    for _ in range(300):
        address = ipaddress.IPv6Address(rng.getrandbits(128) & rng.choice([2**128 - 1, (2**128 - 1) ^ (2**64 - 1), 2**64 - 1, 0xFFFF]))
        assert address_ok(address.compressed) and address_ok(address.exploded), address
        v4 = ipaddress.IPv4Address(rng.getrandbits(32))
        assert address_ok(str(v4)), v4
    for value in [
        "::",
        "::1",
        "1::",
        "fe80::1",
        "2001:DB8::A",
        "1:2:3:4:5:6:7::",
        "::2:3:4:5:6:7:8",
        "wazuh",
        "m-1.example.com",
        "0.0.0.0",
    ]:
        assert address_ok(value), value
    for value in [
        "1:::2",
        "2001:db8::1::2",
        ":1",
        "gggg::1",
        "1:2:3:4:5:6:7:8:9",
        "[::1]",
        "fe80::1%eth0",
        "256.1.1.1",
        "1.2.3",
        "1.2.3.4.5",
        "-host.example",
        "host-.example",
        "host..example",
        "h_st.example",
        "a" * 64 + ".example",
        "x" * 254,
        "host.example.",
        "1.2.3.999",
        "wazuh.example.com:1514",
        "wazuh.example.com\n",
        " wazuh",
        "ex\u0430mple.com",
        "",
    ]:
        assert not address_ok(value), value


def test_scripts_validate_like_the_roles():
    cases = [
        ("--manager", "wazuh.example.com"),
        ("--manager", "2001:db8::10"),
        ("--manager", "192.0.2.1"),
        ("--manager", "10.0.0.256"),
        ("--manager", "-x"),
        ("--manager", "a b"),
        ("--manager", "host.example."),
        ("--manager", "[::1]"),
        ("--manager", "x" * 254),
        ("--name", "host-01.corp_example"),
        ("--name", "-x"),
        ("--name", "web 01"),
        ("--name", "a" * 128),
        ("--name", "a" * 129),
        ("--group", "eu-west_1.servers"),
        ("--group", "a,b"),
        ("--group", ".hidden"),
        ("--group", "grp\n"),
    ]
    for option, value in cases:
        args = ["--manager", "wazuh.example.com", "--name", "n1", option, value]
        result = subprocess.run(["bash", str(SETUP_SH), "--validate-only", *args], capture_output=True, text=True)
        want = address_ok(value) if option == "--manager" else name_ok(value)
        assert (result.returncode == 0) == want, (option, value, result.stderr)
        if not want:
            assert result.returncode == 2 and option in result.stderr
    for port, want in [("1", True), ("65535", True), ("0", False), ("65536", False), ("x", False), ("-1", False)]:
        result = subprocess.run(
            ["bash", str(SETUP_SH), "--validate-only", "--manager", "m.example", "--manager-port", port], capture_output=True, text=True
        )
        assert (result.returncode == 0) == want, (port, result.stderr)


def test_install_script_checks_package_and_settings_first():
    install = MAC_SCRIPTS[0]
    base = ["bash", str(install), "--validate-only", "--manager", "m.example"]
    assert subprocess.run(base, capture_output=True).returncode == 0
    for extra in (["--package", "/nonexistent.pkg"], ["--version", "4.9"], ["--sha256", "abc"], ["--name", "-x"]):
        result = subprocess.run(base + extra, capture_output=True, text=True)
        assert result.returncode == 2, (extra, result.stderr)


def normalized(element: ET.Element) -> Any:
    return (element.tag, sorted(element.attrib.items()), (element.text or "").strip(), [normalized(child) for child in element])


@pytest.mark.parametrize("with_password", [False, True])
def test_setup_script_writes_what_the_role_writes(tmp_path, with_password):
    settings = {
        "manager_address": "2001:db8::10",
        "manager_port": 11514,
        "enrollment_port": 11515,
        "agent_name": "mac-01",
        "agent_group": "mac_fleet.eu",
    }
    argv = [
        "--manager",
        "2001:db8::10",
        "--manager-port",
        "11514",
        "--enrollment-port",
        "11515",
        "--name",
        "mac-01",
        "--group",
        "mac_fleet.eu",
    ]
    if with_password:
        secret = tmp_path / "secret"
        secret.write_text(SECRET + "\n")
        argv += ["--password-file", str(secret)]
        settings["enrollment_password"] = SECRET
    out = tmp_path / "rendered"
    subprocess.run(["bash", str(SETUP_SH), "--render", str(out), *argv], check=True, capture_output=True)
    overrides = {f"cloudx_agent_mac_{key}": value for key, value in settings.items()}
    role_conf = render("mac", "Library/Ossec/etc/ossec.conf.j2", overrides)
    script_conf = (out / "ossec.conf").read_text()
    assert normalized(ET.fromstring(script_conf)) == normalized(ET.fromstring(role_conf))
    assert "CxTopSecret" not in script_conf
    role_plist = plistlib.loads(render("mac", "Library/LaunchDaemons/com.cloudx.agent.plist.j2", overrides).encode())
    assert plistlib.loads((out / "com.cloudx.agent.plist").read_bytes()) == role_plist


def expand_powershell(text: str, variables: dict[str, str]) -> str:
    """PowerShell's expansion of a double-quoted string: backtick escapes and $name / ${name} variables."""
    escapes = {"r": "\r", "n": "\n", "t": "\t", '"': '"', "$": "$", "`": "`"}

    def variable(match: re.Match[str]) -> str:
        if match.group(1):
            return escapes[match.group(1)]
        return variables[match.group(2) or match.group(3)]

    return re.sub(r"`(.)|\$\{(\w+)\}|\$(\w+)", variable, text)


def powershell_ossec_conf(manager: str, port: int, enrollment_port: int, name: str, group: str, with_password: bool) -> str:
    """New-CloudXOssecConf's result, from the module's source (strings only, no PowerShell needed)."""
    source = PS_MODULES[0].read_text()
    body = source[source.index("function New-CloudXOssecConf") : source.index("function Set-CloudXSecretAcl")]
    values = dict(re.findall(r"\$(\w+) = '([^']*)'\n", body))
    registry = re.findall(r"'([^']+)'", body[body.index("$registry = @(") : body.index("$registryLines =")])
    line = re.search(r'"(    <windows_registry.*?)"\n', body).group(1)
    values.update(manager=manager, name=name, group=group, ManagerPort=str(port), EnrollmentPort=str(enrollment_port), passPath="")
    if with_password:
        values["passPath"] = expand_powershell(re.search(r'\$passPath = "(.*)"\n', body).group(1), {})
    values["registryLines"] = "\r\n".join(expand_powershell(line, {"_": key}) for key in registry)
    here = body[body.index('$lines = @"\n') + len('$lines = @"\n') : body.index('\n"@')]
    return expand_powershell(here, values)


@pytest.mark.parametrize("with_password", [False, True])
def test_powershell_installer_writes_what_the_role_writes(with_password):
    settings = {
        "manager_address": "2001:db8::10",
        "manager_port": 11514,
        "enrollment_port": 11515,
        "agent_name": "WIN-01",
        "agent_group": "win_fleet.eu",
    }
    if with_password:
        settings["enrollment_password"] = SECRET
    script_conf = powershell_ossec_conf("2001:db8::10", 11514, 11515, "WIN-01", "win_fleet.eu", with_password)
    role_conf = render(
        "windows", "Program Files (x86)/ossec-agent/ossec.conf.j2", {f"cloudx_agent_windows_{k}": v for k, v in settings.items()}
    )
    assert normalized(ET.fromstring(script_conf)) == normalized(ET.fromstring(role_conf))


# --- Script syntax ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("script", MAC_SCRIPTS, ids=lambda p: p.name)
def test_mac_script_syntax(script):
    assert script.read_text().startswith("#!/bin/bash\n")
    subprocess.run(["bash", "-n", str(script)], check=True)


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck is not installed (apt-get install shellcheck)")
@pytest.mark.parametrize("script", MAC_SCRIPTS, ids=lambda p: p.name)
def test_mac_script_shellcheck(script):
    result = subprocess.run(["shellcheck", "--shell=bash", str(script)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout


def powershell_errors(source: bytes) -> list[str]:
    tree_sitter = pytest.importorskip("tree_sitter", reason="tree-sitter is not installed (pip install tree-sitter tree-sitter-powershell)")
    grammar = pytest.importorskip(
        "tree_sitter_powershell", reason="tree-sitter-powershell is not installed (pip install tree-sitter-powershell)"
    )
    parser = tree_sitter.Parser(tree_sitter.Language(grammar.language()))
    errors = []
    stack = [parser.parse(source).root_node]
    while stack:
        node = stack.pop()
        if node.is_error or node.is_missing:
            errors.append(f"{node.type} at {node.start_point}: {source[node.start_byte : node.end_byte][:60]!r}")
        stack.extend(node.children)
    return errors


@pytest.mark.parametrize("module", PS_MODULES, ids=lambda p: p.name)
def test_powershell_syntax(module):
    source = module.read_bytes()
    assert powershell_errors(source) == []
    # The check can fail: the same module with its last closing brace removed does not parse.
    broken = source[: source.rindex(b"}")] + source[source.rindex(b"}") + 1 :]
    assert powershell_errors(broken)


def test_powershell_modules_define_their_commands():
    installer, uninstaller = (path.read_text() for path in PS_MODULES)
    assert re.search(r"function Install-CloudXAgent \{\s+<#", installer)
    for parameter in ("ManagerAddress", "AgentName", "AgentGroup", "EnrollmentPasswordFile", "Version", "PackagePath", "Sha256"):
        assert re.search(rf"\[String\]\${parameter}\b", installer), parameter
    assert "Get-FileHash" in installer and "/qn" in installer
    assert "SupportsShouldProcess = $true, ConfirmImpact = 'High'" in uninstaller
    assert "[switch]$Force" in uninstaller and "$ConfirmPreference = 'None'" in uninstaller
