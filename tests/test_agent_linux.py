"""The Linux agent role on real booted hosts, with plain ansible-playbook: converge, idempotence, verify, absent."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.agent import ENROLLMENT_PASSWORD, agent_inventory
from tests.support.ansible import ansible

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def playbook(name: str | Path, inventory: Path, *extra: str, check: bool = False) -> subprocess.CompletedProcess[str]:
    """ansible-playbook on playbooks/<name> (or a playbook's own path), with injected fact variables off: the
    roles read facts through ansible_facts only (injected facts are deprecated in ansible-core 2.20)."""
    path = str(name) if Path(name).is_absolute() else f"playbooks/{name}"
    checking = ["--check"] if check else []
    return ansible("ansible-playbook", "-i", str(inventory), path, *extra, *checking, timeout=600, ANSIBLE_INJECT_FACT_VARS="False")


def tasks_run(output: str) -> list[str]:
    """The names of the role's tasks that ran (TASK headers followed by a result that is not a skip)."""
    found, task = [], ""
    for line in output.splitlines():
        if line.startswith("TASK ["):
            task = re.sub(r"^TASK \[(?:cloudx_agent_linux : )?(.*?)\] \**$", r"\1", line)
        elif line.startswith(("RUNNING HANDLER [", "PLAY ")):
            task = ""
        elif task and re.match(r"^(ok|changed): \[", line):
            found.append(task)
            task = ""
    return found


def unit_reload_state(host) -> tuple[str, str]:
    """(NeedDaemonReload, `systemctl status` output) for the agent's unit."""
    need = host.shell("systemctl show -p NeedDaemonReload --value wazuh-agent", check=False).stdout.strip()
    status = host.shell("systemctl status --no-pager wazuh-agent 2>&1", check=False).stdout
    return need, status


def changed_tasks(output: str) -> list[str]:
    """TASK headers followed by a changed result, to say what was not idempotent."""
    found, task = [], ""
    for line in output.splitlines():
        if line.startswith("TASK ["):
            task = line
        elif line.startswith("changed: ["):
            found.append(f"{task} {line}")
    return found


def recap(output: str) -> dict[str, dict[str, int]]:
    result = {}
    for host, counts in re.findall(r"^(\S+)\s+: (ok=.*)$", output, re.M):
        result[host] = {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", counts)}
    return result


@pytest.fixture(scope="module")
def deploy_vars(agent_package, manager, tmp_path_factory) -> list[str]:
    package, sha256 = agent_package
    vars_file = tmp_path_factory.mktemp("vars") / "agent.json"
    vars_file.write_text(
        json.dumps(
            {
                "cloudx_agent_manager_address": manager.sock.getsockname()[0],
                "cloudx_agent_group": "linux-servers",
                "cloudx_agent_enrollment_password": ENROLLMENT_PASSWORD,
                "cloudx_agent_linux_package_source": "file",
                "cloudx_agent_linux_package_file": str(package),
                "cloudx_agent_linux_package_checksum": f"sha256:{sha256}",
            }
        )
    )
    vars_file.chmod(0o600)
    return ["-e", f"@{vars_file}"]


def test_converge_idempotence_verify_and_remove(booted_hosts, ssh_key, manager, deploy_vars, tmp_path):
    hosts = booted_hosts[:2]
    inventory = agent_inventory(tmp_path, hosts, ssh_key)

    first = playbook("deploy_agent.yml", inventory, *deploy_vars)
    assert first.returncode == 0, first.stdout[-4000:] + first.stderr[-2000:]
    assert ENROLLMENT_PASSWORD not in first.stdout
    second = playbook("deploy_agent.yml", inventory, *deploy_vars)
    assert second.returncode == 0, second.stdout[-3000:]
    assert all(counts["changed"] == 0 for counts in recap(second.stdout).values()), changed_tasks(second.stdout)
    checked = playbook("deploy_agent.yml", inventory, *deploy_vars, check=True)
    assert checked.returncode == 0, checked.stdout[-3000:]
    assert all(c["changed"] == 0 for c in recap(checked.stdout).values()), changed_tasks(checked.stdout)

    for host in hosts:
        status = host.shell("dpkg-query -W -f='${Status} ${Version}' wazuh-agent").stdout
        assert status == "hold ok installed 4.9.2-1"  # held at the pinned version
        conf = host.shell("cat /var/ossec/etc/ossec.conf").stdout
        assert f"<address>{manager.sock.getsockname()[0]}</address>" in conf
        assert f"<agent_name>{host.name}</agent_name>" in conf and "<groups>linux-servers</groups>" in conf
        assert host.shell("systemctl is-enabled wazuh-agent; systemctl is-active wazuh-agent").stdout.split() == ["enabled", "active"]
        assert host.shell("stat -c '%U %G %a' /var/ossec/active-response/bin/remove-threat.py").stdout.strip() == "root wazuh 750"
        assert host.shell("stat -c '%U %G %a' /var/ossec/etc/authd.pass").stdout.strip() == "root wazuh 640"
        assert host.shell("cat /var/ossec/etc/client.keys").stdout.split()[1] == host.name
    enrolled = [r for r in manager.requests if r.startswith(f"OSSEC PASS: {ENROLLMENT_PASSWORD} ")]
    assert sorted(re.search(r"A:'([^']+)'", r).group(1) for r in enrolled) == sorted(h.name for h in hosts)
    assert all("G:'linux-servers'" in r for r in enrolled)

    removed = playbook("remove_agent.yml", inventory)
    assert removed.returncode == 0, removed.stdout[-3000:]
    again = playbook("remove_agent.yml", inventory)
    assert again.returncode == 0, again.stdout[-3000:]
    assert all(c["changed"] == 0 for c in recap(again.stdout).values()), changed_tasks(again.stdout)
    for host in hosts:
        assert host.shell("dpkg-query -W -f='${Status}' wazuh-agent", check=False).stdout in ("", "deinstall ok config-files")
        assert host.shell("test -e /var/ossec || test -e /var/cache/cloudx-agent || echo gone").stdout.strip() == "gone"
        assert host.shell("systemctl cat wazuh-agent", check=False).returncode != 0
        assert host.shell("getent passwd wazuh", check=False).returncode != 0
        # systemd was reloaded after the package took its unit file away: no "changed on disk" warning.
        need_reload, status = unit_reload_state(host)
        assert need_reload != "yes" and "changed on disk" not in status, (need_reload, status)


def test_bad_settings_fail_before_touching_hosts(booted_hosts, ssh_key, deploy_vars, tmp_path):
    inventory = agent_inventory(tmp_path, booted_hosts[2:], ssh_key)
    bad_settings = [
        {"cloudx_agent_name": "-rf"},
        {"cloudx_agent_group": "a b"},
        {"cloudx_agent_manager_address": "x;id"},
        {"cloudx_agent_linux_state": "maybe"},
        {"cloudx_agent_linux_package_checksum": "md5:abc"},
    ]
    for bad in bad_settings:
        result = playbook("deploy_agent.yml", inventory, *deploy_vars, "-e", json.dumps(bad))
        assert result.returncode != 0 and "Install the agent package" not in result.stdout, (bad, result.stdout[-2000:])


def test_remove_threat_quarantines_on_a_host(booted_hosts, ssh_key, deploy_vars, tmp_path):
    host = booted_hosts[2]
    inventory = agent_inventory(tmp_path, [host], ssh_key)
    result = playbook("deploy_agent.yml", inventory, *deploy_vars)
    assert result.returncode == 0, result.stdout[-3000:]
    host.shell("printf 'X5O!P%%@AP[4\\\\PZX54(P^)7CC)7}$EICAR' > /tmp/evil.bin")
    alert = {
        "version": 1,
        "origin": {"name": "node01", "module": "wazuh-execd"},
        "command": "add",
        "parameters": {
            "extra_args": [],
            "program": "active-response/bin/remove-threat.py",
            "alert": {
                "rule": {"id": "87105", "description": "VirusTotal: malicious file"},
                "data": {"virustotal": {"source": {"file": "/tmp/evil.bin"}}},
            },
        },
    }
    run = host.shell("/var/ossec/active-response/bin/remove-threat.py --no-handshake", check=False, stdin=json.dumps(alert))
    assert run.returncode == 0, run.stdout + run.stderr
    assert host.shell("test -e /tmp/evil.bin || echo moved").stdout.strip() == "moved"
    listing = host.shell("stat -c '%a %n' /var/ossec/quarantine /var/ossec/quarantine/*").stdout.split("\n")
    assert listing[0].startswith("700 ") and any(line.startswith("600 ") and line.endswith(".json") for line in listing)
    log = host.shell("tail -1 /var/ossec/logs/active-responses.log").stdout
    assert json.loads(log)["action"] == "quarantined"


# What every tag selection runs too (tagged always): the argument spec, the validation, the facts, the package state.
ALWAYS = {
    "Check the agent settings",
    "Check what the agent needs to be installed",
    "Gather the facts the role reads",
    "Check the operating system",
    "Load the OS family's variables",
    "Read the installed agent package",
    "Note the installed agent version",
}


def test_tags_run_one_phase(booted_hosts, ssh_key, deploy_vars, tmp_path):
    """--tags configure rewrites the configuration and nothing else; --tags active-response restores remove-threat.py."""
    host = booted_hosts[2]
    inventory = agent_inventory(tmp_path, [host], ssh_key)
    # The role listed under roles: its own tasks carry the tags (playbooks/deploy_agent.yml includes it untagged).
    role_play = tmp_path / "agent.yml"
    role_play.write_text("- name: The Linux agent\n  hosts: linux\n  gather_facts: false\n  roles:\n    - cloudx_agent_linux\n")
    listed = playbook(role_play, inventory, "--list-tags")
    assert "TASK TAGS: [active-response, always, configure, enroll, install, remove, service]" in listed.stdout, listed.stdout
    deployed = playbook(role_play, inventory, *deploy_vars)
    assert deployed.returncode == 0, deployed.stdout[-3000:]

    host.shell("echo '<!-- edited by hand -->' >> /var/ossec/etc/ossec.conf; chmod 0644 /var/ossec/active-response/bin/remove-threat.py")
    configured = playbook(role_play, inventory, *deploy_vars, "--tags", "configure")
    assert configured.returncode == 0, configured.stdout[-3000:]
    ran = {t for t in tasks_run(configured.stdout) if not t.startswith("Validating arguments")}
    assert "Write the agent configuration" in ran, ran
    assert ran - ALWAYS <= {
        "Write the agent configuration",
        "Write the enrollment password",
        "Remove an enrollment password that is no longer set",
    }, ran
    assert "RUNNING HANDLER [cloudx_agent_linux : Restart the Cloud-X agent]" in configured.stdout
    assert "edited by hand" not in host.shell("cat /var/ossec/etc/ossec.conf").stdout
    assert host.shell("stat -c %a /var/ossec/active-response/bin/remove-threat.py").stdout.strip() == "644"  # not configure's

    responded = playbook(role_play, inventory, *deploy_vars, "--tags", "active-response")
    assert responded.returncode == 0, responded.stdout[-3000:]
    ran = {t for t in tasks_run(responded.stdout) if not t.startswith("Validating arguments")}
    assert ran - ALWAYS == {"Install the remove-threat active response", "Configure the remove-threat active response"}, ran
    assert host.shell("stat -c %a /var/ossec/active-response/bin/remove-threat.py").stdout.strip() == "750"


def test_standalone_scripts_install_and_uninstall(booted_hosts, agent_package, manager):
    host = booted_hosts[0]
    package, sha256 = agent_package
    work = host.root / "root/cloudx"
    work.mkdir(exist_ok=True)
    for path in [package, *sorted((ROOT / "scripts/linux").iterdir())]:
        (work / path.name).write_bytes(path.read_bytes())
        (work / path.name).chmod(0o755)
    (work / "enroll.pass").write_text(ENROLLMENT_PASSWORD + "\n")
    host.shell("/root/cloudx/cloudx-agent-setup.sh --uninstall --yes")
    install = (
        f"/root/cloudx/cloudx-agent-install.sh --manager {manager.sock.getsockname()[0]} --name hand-made --group by_hand"
        f" --password-file /root/cloudx/enroll.pass --package /root/cloudx/{package.name} --sha256 {sha256}"
    )
    result = host.shell(install, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    status = host.shell("/root/cloudx/cloudx-agent-setup.sh --status").stdout
    assert "4.9.2-1" in status and "service: active / enabled" in status and "enrolled: yes" in status
    conf = host.shell("cat /var/ossec/etc/ossec.conf").stdout
    assert "<agent_name>hand-made</agent_name>" in conf and "<groups>by_hand</groups>" in conf
    keys_before = host.shell("cat /var/ossec/etc/client.keys").stdout
    assert host.shell(install, check=False).returncode == 0  # a second run keeps the key
    assert host.shell("cat /var/ossec/etc/client.keys").stdout == keys_before
    bad = host.shell(install.replace("hand-made", "'-bad name'"), check=False)
    assert bad.returncode != 0 and "--name must match" in bad.stderr
    refused = host.shell("/root/cloudx/cloudx-agent-setup.sh --uninstall < /dev/null", check=False)
    assert refused.returncode != 0 and "--yes" in refused.stderr
    assert host.shell("/root/cloudx/cloudx-agent-setup.sh --uninstall --yes").returncode == 0
    assert host.shell("test -e /var/ossec || echo gone").stdout.strip() == "gone"


@pytest.fixture(scope="module")
def repository(agent_package, lab, tmp_path_factory):
    """The fixture package in a signed APT repository served to the test network, and a second, foreign key."""
    from tests.support.agent_fixture import serve_directory, signed_repository

    directory = tmp_path_factory.mktemp("repo")
    root, key = signed_repository(directory, agent_package[0])
    _, other_key = signed_repository(tmp_path_factory.mktemp("other"), agent_package[0], key_name="Someone else")
    server = serve_directory(root, lab.service_address())
    yield f"http://{lab.service_address()}:8000/", key, other_key
    server.shutdown()


def test_install_from_signed_repository(booted_hosts, ssh_key, manager, repository, deploy_vars, tmp_path):
    url, key, other_key = repository
    host = booted_hosts[0]
    inventory = agent_inventory(tmp_path, [host], ssh_key)
    repo_vars = [
        "-e",
        json.dumps(
            {
                "cloudx_agent_linux_package_source": "repo",
                "cloudx_agent_linux_repo_url": url,
                "cloudx_agent_linux_apt_update_retries": 1,
            }
        ),
    ]
    wrong = playbook("deploy_agent.yml", inventory, *deploy_vars, *repo_vars, "-e", f"cloudx_agent_linux_repo_key_file={other_key}")
    # apt refuses the repository's index when its signature does not verify: the package is not offered.
    refusals = ("No package matching 'wazuh-agent'", "can't be done securely", "NO_PUBKEY")
    assert wrong.returncode != 0 and any(r in wrong.stdout for r in refusals), wrong.stdout[-2000:]
    right = playbook("deploy_agent.yml", inventory, *deploy_vars, *repo_vars, "-e", f"cloudx_agent_linux_repo_key_file={key}")
    assert right.returncode == 0, right.stdout[-3000:]
    assert host.shell("dpkg-query -W -f='${Version}' wazuh-agent").stdout == "4.9.2-1"
    assert "Signed-By: /usr/share/keyrings/cloudx-wazuh.asc" in host.shell("cat /etc/apt/sources.list.d/cloudx-wazuh.sources").stdout
    again = playbook("deploy_agent.yml", inventory, *deploy_vars, *repo_vars, "-e", f"cloudx_agent_linux_repo_key_file={key}")
    assert all(c["changed"] == 0 for c in recap(again.stdout).values()), changed_tasks(again.stdout)
    assert playbook("remove_agent.yml", inventory).returncode == 0
    assert host.shell("test -e /etc/apt/sources.list.d/cloudx-wazuh.sources || echo gone").stdout.strip() == "gone"
