#!/bin/bash
# Install (or upgrade to) a pinned Wazuh agent package on a Mac, then configure, enroll and start it as the
# Cloud-X agent with cloudx-agent-setup.sh (next to this script). For hosts set up by hand: it does what the
# Ansible role cloudx_agent_mac does, with the same settings and validation.
#
#   sudo ./cloudx-agent-install.sh --manager wazuh.example.com [--name NAME] [--group GROUP]
#        [--password-file FILE] [--manager-port 1514] [--enrollment-port 1515]
#        [--version 4.9.2] [--revision 1] [--package FILE --sha256 HEX | --sha256 HEX]
#   ./cloudx-agent-install.sh --validate-only --manager ...   check the settings, change nothing
#
# Without --package the vendor package for --version and this Mac's architecture is downloaded over HTTPS;
# --sha256 is then checked when given. With --package, --sha256 is required.
set -euo pipefail
umask 077
export PATH=/usr/bin:/bin:/usr/sbin:/sbin

SCRIPT_DIR=$(cd "$(dirname "$0")" && pwd)
readonly SCRIPT_DIR
readonly SETUP=$SCRIPT_DIR/cloudx-agent-setup.sh
readonly CONTROL=/Library/Ossec/bin/wazuh-control
readonly RECEIPT=com.wazuh.pkg.wazuh-agent

# Validation: the same expressions as roles/cloudx_agent_mac/vars/main.yml (POSIX ERE).
readonly VERSION_RE='^[0-9]+\.[0-9]+\.[0-9]+$'
readonly REVISION_RE='^[0-9]{1,4}$'
readonly SHA256_RE='^[0-9A-Fa-f]{64}$'

version=4.9.2
revision=1
package=""
sha256=""
validate_only=false
setup_args=()

usage() {
  sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'
}

die() {
  printf 'cloudx-agent-install: %s\n' "$*" >&2
  exit 1
}

invalid() {
  printf 'cloudx-agent-install: %s\n' "$*" >&2
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
      --version) need_value "$@"; version=$2; shift 2 ;;
      --revision) need_value "$@"; revision=$2; shift 2 ;;
      --package) need_value "$@"; package=$2; shift 2 ;;
      --sha256) need_value "$@"; sha256=$2; shift 2 ;;
      --validate-only) validate_only=true; shift ;;
      --manager | --manager-port | --enrollment-port | --name | --group | --password-file)
        need_value "$@"; setup_args+=("$1" "$2"); shift 2 ;;
      -h | --help) usage; exit 0 ;;
      *) invalid "unknown option: $1 (see --help)" ;;
    esac
  done
}

validate() {
  [[ $version =~ $VERSION_RE ]] || invalid "--version must be a pinned version such as 4.9.2; got '${version:0:32}'"
  [[ $revision =~ $REVISION_RE ]] || invalid "--revision must be a number; got '${revision:0:16}'"
  if [ -n "$sha256" ]; then
    [[ $sha256 =~ $SHA256_RE ]] || invalid "--sha256 must be 64 hex digits"
  fi
  if [ -n "$package" ]; then
    [ -n "$sha256" ] || invalid "--package needs --sha256"
    if [ ! -f "$package" ] || [ ! -r "$package" ]; then
      invalid "--package $package is not a readable file"
    fi
  fi
  # The agent settings are checked by the setup script, before anything is installed.
  bash "$SETUP" --validate-only ${setup_args[@]+"${setup_args[@]}"} >/dev/null
}

installed_version() {
  [ -x "$CONTROL" ] || return 0
  pkgutil --pkg-info "$RECEIPT" 2>/dev/null | sed -n 's/^version: *\([^-]*\).*$/\1/p'
}

verify() {
  local actual
  actual=$(shasum -a 256 "$1" | cut -d ' ' -f 1)
  [ "$(printf '%s' "$actual" | tr 'A-F' 'a-f')" = "$(printf '%s' "$sha256" | tr 'A-F' 'a-f')" ] ||
    die "$1 does not match --sha256 (its SHA-256 is $actual)"
}

install_package() {
  local staging pkg arch url
  staging=$(mktemp -d /private/var/tmp/cloudx-agent.XXXXXX)
  trap 'rm -rf "$staging"' EXIT
  if [ -n "$package" ]; then
    pkg=$staging/wazuh-agent.pkg
    cp "$package" "$pkg"
  else
    case "$(uname -m)" in
      arm64) arch=arm64 ;;
      *) arch=intel64 ;;
    esac
    # The vendor's download site (Wazuh's installation guide) or a mirror; there is no built-in default.
    [[ "${CLOUDX_VENDOR_SITE:-}" =~ ^https://[A-Za-z0-9.-]+(:[0-9]+)?$ ]] ||
      die "set CLOUDX_VENDOR_SITE=https://<vendor download site> or give --package"
    url="$CLOUDX_VENDOR_SITE/${version%%.*}.x/macos/wazuh-agent-$version-$revision.$arch.pkg"
    pkg=$staging/wazuh-agent.pkg
    echo "downloading $url"
    curl --fail --silent --show-error --location --proto '=https' --tlsv1.2 --output "$pkg" "$url" ||
      die "could not download $url"
    [ -n "$sha256" ] || echo "warning: no --sha256 given; the package is only protected by HTTPS" >&2
  fi
  [ -z "$sha256" ] || verify "$pkg"
  echo "installing the Wazuh agent $version"
  installer -pkg "$pkg" -target / || die "installer failed"
  rm -rf "$staging"
  trap - EXIT
}

main() {
  parse_args "$@"
  validate
  if [ "$validate_only" = true ]; then
    echo "settings are valid"
    return
  fi
  [ "$(uname -s)" = Darwin ] || die "this script manages macOS hosts only"
  [ "$(id -u)" -eq 0 ] || die "run it as root (sudo)"
  local current
  current=$(installed_version)
  if [ "$current" = "$version" ]; then
    echo "the Wazuh agent $version is already installed"
  else
    install_package
  fi
  exec bash "$SETUP" ${setup_args[@]+"${setup_args[@]}"}
}

main "$@"
