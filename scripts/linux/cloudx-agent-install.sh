#!/usr/bin/env bash
# Cloud-X agent installer for Linux hosts installed by hand (the cloudx_agent_linux role does the same
# for fleets, with the same settings and the same validation).
#
#   cloudx-agent-install.sh --manager ADDR [--name NAME] [--group GROUP] [--password-file FILE]
#       (--package FILE --sha256 HEX | --repo-url URL --repo-key FILE) [--version V]
#       [--manager-port 1514] [--enrollment-port 1515] [--safe-dir DIR ...]
#
# Run as root. Re-running it changes nothing once the agent is installed and enrolled.
set -euo pipefail

NAME_RE='^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$'
ADDRESS_RE='^[A-Za-z0-9.:-]{1,253}$'
HOME_DIR=/var/ossec
VERSION=4.9.2
MANAGER="" NAME="$(hostname)" GROUP=default PASSWORD_FILE="" PACKAGE="" SHA256="" REPO_URL="" REPO_KEY=""
MANAGER_PORT=1514 ENROLLMENT_PORT=1515
SAFE_DIRS=()
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

die() { echo "cloudx-agent-install: $*" >&2; exit 1; }
usage() { sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'; exit "${1:-0}"; }

while [ $# -gt 0 ]; do
  case "$1" in
    --manager) MANAGER="${2:-}"; shift 2 ;;
    --name) NAME="${2:-}"; shift 2 ;;
    --group) GROUP="${2:-}"; shift 2 ;;
    --password-file) PASSWORD_FILE="${2:-}"; shift 2 ;;
    --package) PACKAGE="${2:-}"; shift 2 ;;
    --sha256) SHA256="${2:-}"; shift 2 ;;
    --repo-url) REPO_URL="${2:-}"; shift 2 ;;
    --repo-key) REPO_KEY="${2:-}"; shift 2 ;;
    --version) VERSION="${2:-}"; shift 2 ;;
    --manager-port) MANAGER_PORT="${2:-}"; shift 2 ;;
    --enrollment-port) ENROLLMENT_PORT="${2:-}"; shift 2 ;;
    --safe-dir) SAFE_DIRS+=("${2:-}"); shift 2 ;;
    -h|--help) usage 0 ;;
    *) die "unknown option: $1 (see --help)" ;;
  esac
done

[ "$(id -u)" -eq 0 ] || die "run as root"
[[ "$MANAGER" =~ $ADDRESS_RE && "$MANAGER" != -* ]] || die "--manager must be a hostname or an IP address"
[[ "$NAME" =~ $NAME_RE ]] || die "--name must match $NAME_RE"
[[ "$GROUP" =~ $NAME_RE ]] || die "--group must match $NAME_RE"
for port in "$MANAGER_PORT" "$ENROLLMENT_PORT"; do
  if ! [[ "$port" =~ ^[0-9]{1,5}$ ]] || [ "$port" -lt 1 ] || [ "$port" -gt 65535 ]; then die "ports must be 1-65535"; fi
done
[ -z "$PASSWORD_FILE" ] || [ -r "$PASSWORD_FILE" ] || die "cannot read --password-file $PASSWORD_FILE"
[ ${#SAFE_DIRS[@]} -gt 0 ] || SAFE_DIRS=(/tmp /var/tmp /dev/shm /home)

if command -v dpkg >/dev/null 2>&1; then FAMILY=debian; elif command -v rpm >/dev/null 2>&1; then FAMILY=redhat
else die "neither dpkg nor rpm found: unsupported distribution"; fi

installed_version() {
  if [ "$FAMILY" = debian ]; then dpkg-query -W -f='${Status} ${Version}' wazuh-agent 2>/dev/null | awk '$3=="installed"{print $4}'
  else rpm -q --qf '%{VERSION}-%{RELEASE}' wazuh-agent 2>/dev/null || true; fi
}

if [[ "$(installed_version)" != "$VERSION"-* ]]; then
  if [ -n "$PACKAGE" ]; then
    [[ "$SHA256" =~ ^[0-9a-fA-F]{64}$ ]] || die "--package needs --sha256 with the package's SHA-256"
    echo "${SHA256,,}  $PACKAGE" | sha256sum --check --quiet - || die "checksum mismatch for $PACKAGE"
    if [ "$FAMILY" = debian ]; then DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$(realpath "$PACKAGE")"
    else dnf install -y "$(realpath "$PACKAGE")"; fi
  elif [ -n "$REPO_URL" ]; then
    [[ "$REPO_URL" =~ ^(https?|file):// ]] || die "--repo-url must be an http(s) or file URL"
    [ -r "$REPO_KEY" ] || die "--repo-url needs --repo-key FILE (the repository's ASCII-armoured signing key)"
    if [ "$FAMILY" = debian ]; then
      install -m 0644 "$REPO_KEY" /usr/share/keyrings/cloudx-wazuh.asc
      printf 'Types: deb\nURIs: %s\nSuites: stable\nComponents: main\nSigned-By: /usr/share/keyrings/cloudx-wazuh.asc\n' \
        "$REPO_URL" > /etc/apt/sources.list.d/cloudx-wazuh.sources
      apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "wazuh-agent=$VERSION-*"
    else
      install -m 0644 "$REPO_KEY" /etc/pki/rpm-gpg/RPM-GPG-KEY-cloudx-wazuh
      printf '[cloudx-wazuh]\nname=Wazuh agent (Cloud-X)\nbaseurl=%s\ngpgcheck=1\ngpgkey=file:///etc/pki/rpm-gpg/RPM-GPG-KEY-cloudx-wazuh\nenabled=1\n' \
        "$REPO_URL" > /etc/yum.repos.d/cloudx-wazuh.repo
      dnf install -y "wazuh-agent-$VERSION"
    fi
  else
    die "give --package FILE --sha256 HEX, or --repo-url URL --repo-key FILE"
  fi
fi
[ "$FAMILY" != debian ] || apt-mark hold wazuh-agent >/dev/null

xml() { sed -e 's/&/\&amp;/g' -e 's/</\&lt;/g' -e 's/>/\&gt;/g' <<<"$1"; }
conf="$(mktemp)"
trap 'rm -f "$conf"' EXIT
cat > "$conf" <<CONF
<!-- Written by cloudx-agent-install.sh -->
<ossec_config>
  <client>
    <server>
      <address>$(xml "$MANAGER")</address>
      <port>$MANAGER_PORT</port>
      <protocol>tcp</protocol>
    </server>
    <enrollment>
      <enabled>yes</enabled>
      <manager_address>$(xml "$MANAGER")</manager_address>
      <port>$ENROLLMENT_PORT</port>
      <agent_name>$NAME</agent_name>
      <groups>$GROUP</groups>$( [ -n "$PASSWORD_FILE" ] && printf '\n      <authorization_pass_path>etc/authd.pass</authorization_pass_path>' )
    </enrollment>
  </client>
  <syscheck>
    <disabled>no</disabled>
    <directories realtime="yes">$(IFS=,; echo "${SAFE_DIRS[*]}")</directories>
  </syscheck>
  <active-response>
    <disabled>no</disabled>
  </active-response>
</ossec_config>
CONF
install -o root -g wazuh -m 0640 "$conf" "$HOME_DIR/etc/ossec.conf"

if [ -n "$PASSWORD_FILE" ]; then
  install -o root -g wazuh -m 0640 /dev/null "$HOME_DIR/etc/authd.pass"
  tr -d '\n' < "$PASSWORD_FILE" > "$HOME_DIR/etc/authd.pass"
else
  rm -f "$HOME_DIR/etc/authd.pass"
fi

install -o root -g wazuh -m 0750 "$HERE/remove-threat.py" "$HOME_DIR/active-response/bin/remove-threat.py"
safe_json=$(printf '"%s",' "${SAFE_DIRS[@]}")
printf '{"safe_dirs": [%s], "quarantine_dir": "%s/quarantine", "log_file": "%s/logs/active-responses.log"}\n' \
  "${safe_json%,}" "$HOME_DIR" "$HOME_DIR" > "$HOME_DIR/etc/cloudx-remove-threat.json"
chown root:wazuh "$HOME_DIR/etc/cloudx-remove-threat.json"
chmod 0640 "$HOME_DIR/etc/cloudx-remove-threat.json"

# Enroll once: an agent that already has a key keeps it.
if [ ! -s "$HOME_DIR/etc/client.keys" ]; then
  "$HOME_DIR/bin/agent-auth" -m "$MANAGER" -p "$ENROLLMENT_PORT" -A "$NAME" -G "$GROUP"
fi
systemctl daemon-reload
systemctl enable wazuh-agent >/dev/null 2>&1
systemctl restart wazuh-agent
echo "Cloud-X agent $VERSION installed, enrolled as $NAME (group $GROUP) with manager $MANAGER"
