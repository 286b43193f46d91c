#!/bin/bash
# Configure, enroll and run the Cloud-X agent (the Wazuh agent) on a Mac whose vendor package is installed
# (cloudx-agent-install.sh installs it and then runs this script), or remove the agent.
# For hosts set up by hand: it does what the Ansible role cloudx_agent_mac does, with the same settings,
# the same validation and the same ossec.conf and LaunchDaemon.
#
#   sudo ./cloudx-agent-setup.sh --manager wazuh.example.com [--name NAME] [--group GROUP] [--password-file FILE]
#                                [--manager-port 1514] [--enrollment-port 1515]
#   sudo ./cloudx-agent-setup.sh --uninstall [--yes]
#   ./cloudx-agent-setup.sh --render DIR --manager ...   write ossec.conf and the plist to DIR, change nothing
#   ./cloudx-agent-setup.sh --validate-only --manager ...  check the settings, change nothing
#
# The enrollment password is read from a file and written to /Library/Ossec/etc/authd.pass (root:wazuh 0640);
# it is never put on a command line. Without --password-file an existing authd.pass is removed (as the role does).
set -euo pipefail
umask 077
export PATH=/usr/bin:/bin:/usr/sbin:/sbin

readonly OSSEC_HOME=/Library/Ossec
readonly CONTROL=$OSSEC_HOME/bin/wazuh-control
readonly AGENT_AUTH=$OSSEC_HOME/bin/agent-auth
readonly OSSEC_CONF=$OSSEC_HOME/etc/ossec.conf
readonly CLIENT_KEYS=$OSSEC_HOME/etc/client.keys
readonly AUTHD_PASS=$OSSEC_HOME/etc/authd.pass
readonly AGENT_GROUP_NAME=wazuh
readonly LABEL=com.cloudx.agent
readonly PLIST=/Library/LaunchDaemons/$LABEL.plist
VENDOR_LABELS=(com.wazuh.agent com.Wazuh.agent)
RECEIPTS=(com.wazuh.pkg.wazuh-agent com.wazuh.pkg.wazuh-agent-etc)

# Validation: the same expressions as roles/cloudx_agent_mac/vars/main.yml (POSIX ERE).
readonly NAME_RE='^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$'
readonly HOSTNAME_RE='^([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)*[A-Za-z]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$'
readonly IPV4_RE='^((25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])\.){3}(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])$'
readonly IPV6_RE='^(([0-9A-Fa-f]{1,4}:){7}[0-9A-Fa-f]{1,4}|([0-9A-Fa-f]{1,4}:){1,7}:|([0-9A-Fa-f]{1,4}:){1,6}:[0-9A-Fa-f]{1,4}|([0-9A-Fa-f]{1,4}:){1,5}(:[0-9A-Fa-f]{1,4}){1,2}|([0-9A-Fa-f]{1,4}:){1,4}(:[0-9A-Fa-f]{1,4}){1,3}|([0-9A-Fa-f]{1,4}:){1,3}(:[0-9A-Fa-f]{1,4}){1,4}|([0-9A-Fa-f]{1,4}:){1,2}(:[0-9A-Fa-f]{1,4}){1,5}|[0-9A-Fa-f]{1,4}:(:[0-9A-Fa-f]{1,4}){1,6}|:((:[0-9A-Fa-f]{1,4}){1,7}|:))$'
readonly PORT_RE='^[0-9]{1,5}$'

# The LaunchDaemon's program and the unified log query: the same as the role's (vars/main.yml, defaults/main.yml).
readonly LAUNCHER="trap '/Library/Ossec/bin/wazuh-control stop; exit 0' TERM INT; /Library/Ossec/bin/wazuh-control start || { /Library/Ossec/bin/wazuh-control stop; exit 1; }; while :; do sleep 3; done"
readonly UNIFIED_LOG_QUERY='process == "sudo" or process == "sshd" or process == "loginwindow" or process == "authd" or process == "opendirectoryd" or (process == "securityd" and eventMessage CONTAINS "session" and subsystem == "com.apple.securityd")'

manager=""
manager_port=1514
enrollment_port=1515
agent_name=""
agent_group=default
password_file=""
mode=setup
render_dir=""
assume_yes=false

usage() {
  sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'
}

die() {
  printf 'cloudx-agent-setup: %s\n' "$*" >&2
  exit "${2:-1}"
}

invalid() {
  printf 'cloudx-agent-setup: %s\n' "$*" >&2
  exit 2
}

need_value() {
  if [ "$#" -lt 2 ] || [ -z "$2" ]; then
    invalid "$1 needs a value"
  fi
}

parse_args() {
  while [ "$#" -gt 0 ]; do
    case "$1" in
      --manager) need_value "$@"; manager=$2; shift 2 ;;
      --manager-port) need_value "$@"; manager_port=$2; shift 2 ;;
      --enrollment-port) need_value "$@"; enrollment_port=$2; shift 2 ;;
      --name) need_value "$@"; agent_name=$2; shift 2 ;;
      --group) need_value "$@"; agent_group=$2; shift 2 ;;
      --password-file) need_value "$@"; password_file=$2; shift 2 ;;
      --render) need_value "$@"; render_dir=$2; mode=render; shift 2 ;;
      --validate-only) mode=validate; shift ;;
      --uninstall) mode=uninstall; shift ;;
      --yes | -y) assume_yes=true; shift ;;
      -h | --help) usage; exit 0 ;;
      *) invalid "unknown option: $1 (see --help)" ;;
    esac
  done
}

default_name() {
  local name
  name=$(scutil --get LocalHostName 2>/dev/null || hostname -s 2>/dev/null || true)
  printf '%s' "${name:-cloudx-agent}"
}

valid_address() {
  local address=$1
  if [ -z "$address" ] || [ "${#address}" -gt 253 ]; then
    return 1
  fi
  [[ ! $address =~ [[:space:]] ]] || return 1
  [[ $address =~ $HOSTNAME_RE ]] || [[ $address =~ $IPV4_RE ]] || [[ $address =~ $IPV6_RE ]]
}

valid_name() {
  [[ ! $1 =~ [[:space:]] ]] && [[ $1 =~ $NAME_RE ]]
}

valid_port() {
  [[ $1 =~ $PORT_RE ]] && [ "$((10#$1))" -ge 1 ] && [ "$((10#$1))" -le 65535 ]
}

validate() {
  valid_address "$manager" ||
    invalid "--manager is required and must be a hostname, an IPv4 address or an IPv6 address (no brackets, no port, no whitespace); got '${manager:0:64}'"
  valid_name "$agent_name" ||
    invalid "--name must match $NAME_RE; got '${agent_name:0:64}'"
  valid_name "$agent_group" ||
    invalid "--group must match $NAME_RE (one group); got '${agent_group:0:64}'"
  valid_port "$manager_port" || invalid "--manager-port must be 1-65535; got '${manager_port:0:16}'"
  valid_port "$enrollment_port" || invalid "--enrollment-port must be 1-65535; got '${enrollment_port:0:16}'"
  manager_port=$((10#$manager_port))
  enrollment_port=$((10#$enrollment_port))
  if [ -n "$password_file" ]; then
    if [ ! -f "$password_file" ] || [ ! -r "$password_file" ]; then
      invalid "--password-file $password_file is not a readable file"
    fi
    [ -s "$password_file" ] || invalid "--password-file $password_file is empty"
    [ "$(grep -c '' "$password_file")" -le 1 ] || invalid "--password-file must hold the password on a single line"
  fi
}

# The same document as roles/cloudx_agent_mac/templates/Library/Ossec/etc/ossec.conf.j2 with the role's defaults.
# Every value in it has been validated: none holds an XML special character.
write_ossec_conf() {
  local pass_path=""
  if [ -n "$password_file" ]; then
    pass_path="
      <authorization_pass_path>etc/authd.pass</authorization_pass_path>"
  fi
  cat >"$1" <<EOF
<!--
  Wazuh agent configuration for the Cloud-X agent on macOS.
  Written by scripts/mac/cloudx-agent-setup.sh (the same as the Ansible role cloudx_agent_mac).
-->
<ossec_config>
  <client>
    <server>
      <address>$manager</address>
      <port>$manager_port</port>
      <protocol>tcp</protocol>
    </server>
    <config-profile>darwin</config-profile>
    <crypto_method>aes</crypto_method>
    <notify_time>10</notify_time>
    <time-reconnect>60</time-reconnect>
    <auto_restart>yes</auto_restart>
    <enrollment>
      <enabled>yes</enabled>
      <manager_address>$manager</manager_address>
      <port>$enrollment_port</port>
      <agent_name>$agent_name</agent_name>
      <groups>$agent_group</groups>$pass_path
    </enrollment>
  </client>

  <client_buffer>
    <disabled>no</disabled>
    <queue_size>5000</queue_size>
    <events_per_second>500</events_per_second>
  </client_buffer>

  <!-- Policy monitoring -->
  <rootcheck>
    <disabled>no</disabled>
    <check_files>yes</check_files>
    <check_trojans>yes</check_trojans>
    <check_dev>yes</check_dev>
    <check_sys>yes</check_sys>
    <check_pids>yes</check_pids>
    <check_ports>yes</check_ports>
    <check_if>yes</check_if>
    <frequency>43200</frequency>
    <rootkit_files>etc/shared/rootkit_files.txt</rootkit_files>
    <rootkit_trojans>etc/shared/rootkit_trojans.txt</rootkit_trojans>
    <skip_nfs>yes</skip_nfs>
  </rootcheck>

  <sca>
    <enabled>yes</enabled>
    <scan_on_start>yes</scan_on_start>
    <interval>12h</interval>
    <skip_nfs>yes</skip_nfs>
  </sca>

  <!-- System inventory -->
  <wodle name="syscollector">
    <disabled>no</disabled>
    <interval>1h</interval>
    <scan_on_start>yes</scan_on_start>
    <hardware>yes</hardware>
    <os>yes</os>
    <network>yes</network>
    <packages>yes</packages>
    <ports all="no">yes</ports>
    <processes>yes</processes>
    <synchronization>
      <max_eps>10</max_eps>
    </synchronization>
  </wodle>

  <!-- File integrity monitoring -->
  <syscheck>
    <disabled>no</disabled>
    <frequency>43200</frequency>
    <scan_on_start>yes</scan_on_start>
    <directories>/etc,/usr/bin,/usr/sbin</directories>
    <directories>/bin,/sbin</directories>
    <directories realtime="yes">/Library/LaunchDaemons,/Library/LaunchAgents</directories>
    <ignore>/etc/mtab</ignore>
    <ignore>/etc/hosts.deny</ignore>
    <ignore>/etc/mail/statistics</ignore>
    <ignore>/etc/random-seed</ignore>
    <ignore>/etc/random.seed</ignore>
    <ignore>/etc/adjtime</ignore>
    <ignore>/etc/httpd/logs</ignore>
    <ignore>/etc/utmpx</ignore>
    <ignore>/etc/wtmpx</ignore>
    <ignore>/etc/cups/certs</ignore>
    <ignore>/etc/dumpdates</ignore>
    <ignore>/etc/svc/volatile</ignore>
    <ignore type="sregex">.log\$|.swp\$</ignore>
    <nodiff>/etc/ssl/private.key</nodiff>
    <skip_nfs>yes</skip_nfs>
    <skip_dev>yes</skip_dev>
    <skip_proc>yes</skip_proc>
    <skip_sys>yes</skip_sys>
    <process_priority>10</process_priority>
    <max_eps>50</max_eps>
    <synchronization>
      <enabled>yes</enabled>
      <interval>5m</interval>
      <max_eps>10</max_eps>
    </synchronization>
  </syscheck>

  <!-- Log analysis -->
  <localfile>
    <location>macos</location>
    <log_format>macos</log_format>
    <query type="trace,log,activity" level="info">$UNIFIED_LOG_QUERY</query>
  </localfile>

  <localfile>
    <log_format>full_command</log_format>
    <command>netstat -an -p tcp | grep LISTEN</command>
    <alias>netstat listening ports</alias>
    <frequency>360</frequency>
  </localfile>

  <localfile>
    <log_format>syslog</log_format>
    <location>/Library/Ossec/logs/active-responses.log</location>
  </localfile>

  <active-response>
    <disabled>no</disabled>
  </active-response>

  <logging>
    <log_format>plain</log_format>
  </logging>
</ossec_config>
EOF
}

# The same document as roles/cloudx_agent_mac/templates/Library/LaunchDaemons/com.cloudx.agent.plist.j2.
write_plist() {
  cat >"$1" <<EOF
<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE plist PUBLIC "-//Apple//DTD PLIST 1.0//EN" "http://www.apple.com/DTDs/PropertyList-1.0.dtd">
<!-- Written by scripts/mac/cloudx-agent-setup.sh: runs the Cloud-X agent (Wazuh agent) under launchd. -->
<plist version="1.0">
<dict>
    <key>Label</key>
    <string>$LABEL</string>
    <key>ProgramArguments</key>
    <array>
        <string>/bin/sh</string>
        <string>-c</string>
        <string>$LAUNCHER</string>
    </array>
    <key>RunAtLoad</key>
    <true/>
    <key>KeepAlive</key>
    <dict>
        <key>SuccessfulExit</key>
        <false/>
    </dict>
    <key>ThrottleInterval</key>
    <integer>60</integer>
    <key>ExitTimeOut</key>
    <integer>60</integer>
    <key>ProcessType</key>
    <string>Interactive</string>
</dict>
</plist>
EOF
}

# Installs $2 as $1 (owner $3, mode $4) when it differs; returns 0 when the file changed.
install_if_changed() {
  local dest=$1 new=$2 owner=$3 mode=$4
  if [ -f "$dest" ] && cmp -s "$new" "$dest"; then
    rm -f "$new"
    chown "$owner" "$dest"
    chmod "$mode" "$dest"
    return 1
  fi
  chown "$owner" "$new"
  chmod "$mode" "$new"
  mv -f "$new" "$dest"
  return 0
}

require_mac_root() {
  [ "$(uname -s)" = Darwin ] || die "this script manages macOS hosts only"
  [ "$(id -u)" -eq 0 ] || die "run it as root (sudo)"
}

job_loaded() {
  launchctl print "system/$1" >/dev/null 2>&1
}

job_disabled() {
  launchctl print-disabled system 2>/dev/null | grep -Eq "\"$1\" => (disabled|true)"
}

setup() {
  require_mac_root
  [ -x "$CONTROL" ] || die "the Wazuh agent package is not installed ($CONTROL is missing): run cloudx-agent-install.sh"
  local tmp changed=false
  tmp=$(mktemp "$OSSEC_HOME/etc/.cloudx.XXXXXX")
  write_ossec_conf "$tmp"
  if install_if_changed "$OSSEC_CONF" "$tmp" "root:$AGENT_GROUP_NAME" 0640; then
    changed=true
    echo "wrote $OSSEC_CONF"
  fi

  if [ -n "$password_file" ]; then
    tmp=$(mktemp "$OSSEC_HOME/etc/.cloudx.XXXXXX")
    # The password goes from file to file: never through a command line or the terminal.
    tr -d '\r\n' <"$password_file" >"$tmp"
    if install_if_changed "$AUTHD_PASS" "$tmp" "root:$AGENT_GROUP_NAME" 0640; then
      changed=true
      echo "wrote $AUTHD_PASS"
    fi
  elif [ -e "$AUTHD_PASS" ]; then
    rm -f "$AUTHD_PASS"
    changed=true
    echo "removed $AUTHD_PASS"
  fi

  # Enrollment happens once; agent-auth reads etc/authd.pass by itself. Empty client.keys to enroll again.
  if [ ! -s "$CLIENT_KEYS" ]; then
    echo "enrolling $agent_name (group $agent_group) with $manager:$enrollment_port"
    (cd "$OSSEC_HOME" && "$AGENT_AUTH" -m "$manager" -p "$enrollment_port" -A "$agent_name" -G "$agent_group") ||
      die "enrollment failed (is $manager:$enrollment_port reachable, the group defined, the password right?)"
    changed=true
  fi

  local label
  for label in "${VENDOR_LABELS[@]}"; do
    if job_loaded "$label"; then
      launchctl bootout "system/$label" || true
    fi
    job_disabled "$label" || launchctl disable "system/$label"
  done
  if job_disabled "$LABEL"; then
    launchctl enable "system/$LABEL"
  fi

  local plist_changed=false
  tmp=$(mktemp /Library/LaunchDaemons/.cloudx.XXXXXX)
  write_plist "$tmp"
  plutil -lint "$tmp" >/dev/null || die "the generated LaunchDaemon does not pass plutil -lint"
  if install_if_changed "$PLIST" "$tmp" root:wheel 0644; then
    plist_changed=true
    echo "wrote $PLIST"
  fi

  if job_loaded "$LABEL" && [ "$plist_changed" = false ]; then
    if [ "$changed" = true ]; then
      launchctl kickstart -k "system/$LABEL"
      echo "restarted $LABEL"
    fi
  else
    if job_loaded "$LABEL"; then
      launchctl bootout "system/$LABEL" || true
    fi
    local attempt
    for attempt in 1 2 3 4 5 6; do
      launchctl bootstrap system "$PLIST" 2>/dev/null && break
      [ "$attempt" -lt 6 ] || die "launchctl bootstrap system $PLIST failed"
      sleep 2
    done
    echo "loaded $LABEL"
  fi
  echo "the Cloud-X agent is configured and running"
}

uninstall() {
  require_mac_root
  if [ "$assume_yes" != true ]; then
    [ -t 0 ] || die "refusing to uninstall without a terminal to ask on: add --yes for an unattended removal"
    local answer
    read -r -p "Remove the Cloud-X agent (Wazuh agent) and $OSSEC_HOME from this Mac? [y/N] " answer
    case "$answer" in
      y | Y | yes | YES) ;;
      *) die "nothing removed" ;;
    esac
  fi
  local label
  for label in "$LABEL" "${VENDOR_LABELS[@]}"; do
    if job_loaded "$label"; then
      launchctl bootout "system/$label" || true
    fi
  done
  if [ -x "$CONTROL" ]; then
    "$CONTROL" stop || true
  fi
  for label in "$LABEL" "${VENDOR_LABELS[@]}"; do
    if job_disabled "$label"; then
      launchctl enable "system/$label"
    fi
    rm -f "/Library/LaunchDaemons/$label.plist"
  done
  rm -rf /Library/StartupItems/WAZUH "$OSSEC_HOME"
  local receipt
  for receipt in "${RECEIPTS[@]}"; do
    if pkgutil --pkg-info "$receipt" >/dev/null 2>&1; then
      pkgutil --forget "$receipt" >/dev/null
    fi
  done
  if dscl . -read /Users/wazuh >/dev/null 2>&1; then
    dscl . -delete /Users/wazuh
  fi
  if dscl . -read /Groups/wazuh >/dev/null 2>&1; then
    dscl . -delete /Groups/wazuh
  fi
  echo "the Cloud-X agent has been removed"
}

main() {
  parse_args "$@"
  if [ "$mode" = uninstall ]; then
    uninstall
    return
  fi
  [ -n "$agent_name" ] || agent_name=$(default_name)
  validate
  case "$mode" in
    validate) echo "settings are valid" ;;
    render)
      mkdir -p "$render_dir"
      write_ossec_conf "$render_dir/ossec.conf"
      write_plist "$render_dir/$LABEL.plist"
      echo "wrote $render_dir/ossec.conf and $render_dir/$LABEL.plist"
      ;;
    *) setup ;;
  esac
}

main "$@"
