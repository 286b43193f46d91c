#!/usr/bin/env bash
# Cloud-X agent maintenance on Linux hosts installed by hand.
#
#   cloudx-agent-setup.sh --status          show the agent's package, service and enrollment
#   cloudx-agent-setup.sh --uninstall [--yes]
#                                           remove the agent and everything the installer added;
#                                           --yes runs unattended, without it the script asks first
set -euo pipefail

HOME_DIR=/var/ossec
ACTION="" YES=0
die() { echo "cloudx-agent-setup: $*" >&2; exit 1; }

while [ $# -gt 0 ]; do
  case "$1" in
    --status) ACTION=status; shift ;;
    --uninstall) ACTION=uninstall; shift ;;
    --yes|-y) YES=1; shift ;;
    -h|--help) sed -n '2,8p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown option: $1 (see --help)" ;;
  esac
done
[ -n "$ACTION" ] || die "give --status or --uninstall (see --help)"

if [ "$ACTION" = status ]; then
  if command -v dpkg-query >/dev/null 2>&1; then dpkg-query -W -f='package: ${Package} ${Version} (${Status})\n' wazuh-agent 2>/dev/null || echo "package: not installed"
  else rpm -q wazuh-agent 2>/dev/null || echo "package: not installed"; fi
  echo "service: $(systemctl is-active wazuh-agent 2>/dev/null || true) / $(systemctl is-enabled wazuh-agent 2>/dev/null || true)"
  if [ -s "$HOME_DIR/etc/client.keys" ]; then echo "enrolled: yes"; else echo "enrolled: no"; fi
  exit 0
fi

[ "$(id -u)" -eq 0 ] || die "run as root"
if [ "$YES" -ne 1 ]; then
  [ -t 0 ] || die "not a terminal: use --yes to uninstall unattended"
  read -r -p "Remove the Cloud-X agent and $HOME_DIR from $(hostname)? [y/N] " answer
  case "$answer" in y|Y|yes|YES) ;; *) echo "nothing removed"; exit 1 ;; esac
fi
systemctl disable --now wazuh-agent >/dev/null 2>&1 || true
if command -v apt-get >/dev/null 2>&1; then
  apt-mark unhold wazuh-agent >/dev/null 2>&1 || true
  DEBIAN_FRONTEND=noninteractive apt-get purge -y -q wazuh-agent >/dev/null 2>&1 || true
elif command -v dnf >/dev/null 2>&1; then
  dnf remove -y wazuh-agent >/dev/null 2>&1 || true
fi
rm -rf "$HOME_DIR" /etc/apt/sources.list.d/cloudx-wazuh.sources /usr/share/keyrings/cloudx-wazuh.asc \
  /etc/yum.repos.d/cloudx-wazuh.repo /etc/pki/rpm-gpg/RPM-GPG-KEY-cloudx-wazuh /var/cache/cloudx-agent
systemctl daemon-reload
echo "Cloud-X agent removed"
