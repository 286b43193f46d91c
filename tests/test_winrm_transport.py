"""Windows deployments reach a WinRM listener over HTTPS (issue 14): pywinrm is installed, the server's
certificate is verified against the CA the controller is told to trust, and NTLM starts only after that.

No Windows here: tests/support/winrm_server.py plays the listener on <127.0.0.N>:5986 with a certificate from a
throwaway CA and records what it receives. It refuses every login, so a deployment that got through ends
unreachable with an authentication error; one that does not trust the CA ends unreachable with a
certificate verification error, and the listener records no request at all. Both through the API (the
generated inventory, CLOUDX_WINRM_CA_TRUST_PATH) and with plain ansible-playbook on an inventory.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from controller.config import ROOT, Config
from tests.support.app import running_app
from tests.support.waiting import wait_job
from tests.support.winrm_server import RecordingWinrm

pytestmark = pytest.mark.integration
PASSWORD = "Win-Pa55-3c9e41d7"
# What the Windows role needs before it connects (nothing is downloaded: the login fails first).
ROLE_VARS = {"cloudx_agent_manager_address": "127.0.0.1", "cloudx_agent_vendor_site": "https://packages.cloudx.test"}
# pywinrm's error for a 401 after the NTLM exchange, as ansible-core's winrm connection reports it.
AUTH_FAILED = "ntlm: the specified credentials were rejected by the server"
CERT_FAILED = "CERTIFICATE_VERIFY_FAILED"


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[RecordingWinrm]:
    server = RecordingWinrm(tmp_path / "winrm")
    yield server
    server.close()


@pytest.fixture
def agent_vars(tmp_path: Path) -> Path:
    path = tmp_path / "agent-vars.json"
    path.write_text(json.dumps({"cloudx_agent_vendor_site": ROLE_VARS["cloudx_agent_vendor_site"]}))
    return path


def assert_authenticated_exchange(listener: RecordingWinrm) -> None:
    """The client trusted the certificate and ran NTLM against POST /wsman: negotiate, then authenticate."""
    posts = listener.wsman_posts()
    schemes = {p["scheme"] for p in posts if p["scheme"]}
    assert posts and schemes and schemes <= {"Negotiate", "NTLM"}, listener.requests
    assert listener.ntlm_types()[:2] == [1, 3], listener.requests
    assert all(p["body_length"] > 0 for p in posts), listener.requests  # a WS-Management envelope each time
    names = [p["ntlm_names"] for p in posts if p["ntlm_type"] == 3]
    assert names and names[0]["user"] == "Administrator", names
    # NTLM sends a response computed from the password, never the password itself.
    assert not listener.saw(PASSWORD)


def assert_refused_at_tls(listener: RecordingWinrm) -> None:
    """The client connected and gave up in the handshake (unknown CA): no request, so no credential."""
    assert listener.connections >= 1 and listener.handshake_failures, (listener.connections, listener.handshake_failures)
    assert any("unknown ca" in reason.lower() for reason in listener.handshake_failures), listener.handshake_failures
    assert listener.handshakes == 0 and listener.requests == [], listener.requests


# --- the generated inventory ---------------------------------------------------------------------------


def test_the_generated_inventory_trusts_the_configured_ca_for_winrm(tmp_path: Path) -> None:
    from controller.schemas.deployments import DeploySettings
    from controller.services.deployments import write_inventory

    settings = DeploySettings(os_type="windows", hosts=["win-01"], addresses={"win-01": "127.0.0.9"}, username="Administrator")
    ca = tmp_path / "ca.pem"
    env = Config.from_env(WINRM_CA_TRUST_PATH="ca.pem").as_env()
    assert env["CLOUDX_WINRM_CA_TRUST_PATH"] == str(Path("ca.pem").resolve())  # workers run elsewhere
    group = json.loads(write_inventory(settings, tmp_path, str(ca)).read_text())["all"]["children"]["agents"]["children"]["windows"]
    assert group["vars"]["ansible_winrm_ca_trust_path"] == str(ca)
    assert group["vars"]["ansible_winrm_server_cert_validation"] == "validate"
    linux = json.loads(write_inventory(settings.model_copy(update={"os_type": "linux"}), tmp_path, str(ca)).read_text())
    assert "ansible_winrm_ca_trust_path" not in json.dumps(linux)
    group = json.loads(write_inventory(settings, tmp_path).read_text())["all"]["children"]["agents"]["children"]["windows"]
    assert "ansible_winrm_ca_trust_path" not in group["vars"]  # requests' own CA bundle
    assert group["vars"]["ansible_winrm_server_cert_validation"] == "validate"


# --- through the API -------------------------------------------------------------------------------------


def deploy(app, listener: RecordingWinrm) -> tuple[dict, list[dict]]:
    client = app.test_client()
    body = {
        "target": listener.address,
        "os_type": "windows",
        "username": "Administrator",
        "password": PASSWORD,
        "manager_ip": "127.0.0.1",
    }
    response = client.post("/api/deploy/agent", json=body)
    assert response.status_code == 202, response.get_json()
    job = wait_job(client, response.get_json()["job_id"], timeout=600)
    events = client.get(f"/api/jobs/{job['id']}/events?limit=500").get_json()["events"]
    hosts = client.get(f"/api/jobs/{job['id']}/hosts").get_json()["hosts"]
    assert [(h["host"], h["unreachable"]) for h in hosts] == [(listener.address, 1)], (hosts, [e["stdout"] for e in events][-8:])
    return job, [e for e in events if e["event"] == "runner_on_unreachable"]


def unreachable_message(events: list[dict]) -> str:
    assert len(events) == 1, events
    return str(events[0]["event_data"]["res"]["msg"])


def test_the_api_reaches_a_trusted_winrm_listener_and_fails_authentication(
    request, tmp_path: Path, executor_kind: str, listener: RecordingWinrm, agent_vars: Path
) -> None:
    with running_app(request, tmp_path, executor_kind, AGENT_VARS_FILE=str(agent_vars), WINRM_CA_TRUST_PATH=str(listener.ca_path)) as app:
        job, unreachable = deploy(app, listener)
    assert job["status"] == "failed", job
    message = unreachable_message(unreachable)
    assert AUTH_FAILED in message and CERT_FAILED not in message, message
    assert unreachable[0]["task"] == "Gather the Windows facts the role needs", unreachable[0]
    assert_authenticated_exchange(listener)


def test_the_api_refuses_an_untrusted_winrm_certificate_before_any_credential(
    request, tmp_path: Path, executor_kind: str, listener: RecordingWinrm, agent_vars: Path
) -> None:
    with running_app(request, tmp_path, executor_kind, AGENT_VARS_FILE=str(agent_vars)) as app:
        job, unreachable = deploy(app, listener)
    assert job["status"] == "failed", job
    message = unreachable_message(unreachable)
    assert CERT_FAILED in message and "certificate verify failed" in message, message
    assert "credentials were rejected" not in message
    assert_refused_at_tls(listener)


# --- plain ansible-playbook ---------------------------------------------------------------------------------


def run_playbook(tmp_path: Path, listener: RecordingWinrm, ca_trust_path: Path | None) -> subprocess.CompletedProcess[str]:
    group_vars = {
        "ansible_connection": "winrm",
        "ansible_winrm_transport": "ntlm",
        "ansible_winrm_scheme": "https",
        "ansible_port": 5986,
        "ansible_winrm_server_cert_validation": "validate",
        "ansible_user": "Administrator",
        "ansible_password": PASSWORD,
        **({"ansible_winrm_ca_trust_path": str(ca_trust_path)} if ca_trust_path else {}),
    }
    inventory = {"all": {"children": {"agents": {"children": {"windows": {"hosts": {listener.address: {}}, "vars": group_vars}}}}}}
    path = tmp_path / "windows.json"
    path.write_text(json.dumps(inventory))
    path.chmod(0o600)
    venv = str(Path(sys.executable).parent)
    # No proxy and no CA bundle from the caller's environment: the inventory alone decides what is trusted.
    dropped = {"REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "SSL_CERT_FILE", "SSL_CERT_DIR"}
    env = {k: v for k, v in os.environ.items() if k not in dropped and not k.lower().endswith("_proxy")}
    env.update(PATH=os.pathsep.join([venv, env.get("PATH", os.defpath)]), ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"), ANSIBLE_NOCOLOR="1")
    command = [os.path.join(venv, "ansible-playbook"), "-i", str(path), "playbooks/deploy_agent.yml", "-e", json.dumps(ROLE_VARS)]
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600, check=False)


def test_ansible_playbook_reaches_a_trusted_winrm_listener_and_fails_authentication(tmp_path: Path, listener: RecordingWinrm) -> None:
    result = run_playbook(tmp_path, listener, listener.ca_path)
    output = result.stdout + result.stderr
    assert result.returncode == 4, output  # 4: a host was unreachable
    assert "UNREACHABLE!" in output and AUTH_FAILED in output, output
    assert "winrm or requests is not installed" not in output and CERT_FAILED not in output
    assert_authenticated_exchange(listener)


def test_ansible_playbook_refuses_an_untrusted_winrm_certificate_before_any_credential(tmp_path: Path, listener: RecordingWinrm) -> None:
    result = run_playbook(tmp_path, listener, None)
    output = result.stdout + result.stderr
    assert result.returncode == 4, output
    assert "UNREACHABLE!" in output and CERT_FAILED in output, output
    assert "credentials were rejected" not in output
    assert_refused_at_tls(listener)
