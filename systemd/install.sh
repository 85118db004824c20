#!/usr/bin/env bash
# Install gatewayd as a systemd service (Debian / Raspberry Pi OS, run as root):
#
#   sudo systemd/install.sh                  # from this checkout
#   sudo GATEWAYD_SPEC=gatewayd==1.2 systemd/install.sh    # or anything pip accepts
#
# What it does, each step only when needed (a second run changes nothing and says so):
#   - a venv at $PREFIX/venv (default /opt/gatewayd/venv) with gatewayd installed into it;
#     reinstalled when the source (its files' hashes, a wheel's hash, or the spec) changed;
#   - /etc/systemd/system/gatewayd.service (ExecStart under $PREFIX);
#   - /etc/udev/rules.d/60-gatewayd.rules (serial receivers: group dialout, stable names);
#   - /etc/modules-load.d/gatewayd.conf (cdc_acm, usbserial: the unit's DeviceAllow= needs the
#     tty drivers registered before the service starts, not when a receiver is plugged in);
#   - /etc/gatewayd/config.example.toml, and config.toml from it when there is none (an existing
#     config is never touched);
#   - the system user gatewayd in the groups bluetooth and dialout (created when missing).
#
# It neither enables nor starts the service: edit /etc/gatewayd/config.toml first, then
#   sudo systemctl enable --now gatewayd
#
# Environment:
#   ROOT=/            install into another root (tests, images); skips users, reloads, ownership
#   PREFIX=/opt/gatewayd
#   PYTHON=python3    interpreter for the venv (default: the newest python3.1x >= 3.11 found)
#   GATEWAYD_SPEC     what pip installs (default: this checkout)
#   PIP_ARGS          extra pip arguments, e.g. "--no-deps --no-index" for an offline wheel
#   GATEWAYD_NO_USERS=1  do not create the user and groups (same as --no-users)
set -euo pipefail
trap 'echo "install.sh: failed at line $LINENO" >&2' ERR

usage() { sed -n '2,30p' "$0" | sed 's/^# \{0,1\}//'; }

no_users="${GATEWAYD_NO_USERS:-0}"
for arg in "$@"; do
  case "$arg" in
    --no-users) no_users=1 ;;
    -h | --help) usage; exit 0 ;;
    *) echo "install.sh: unknown argument: $arg (see --help)" >&2; exit 2 ;;
  esac
done

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
checkout=$(dirname "$here")
root="${ROOT:-/}"
root="${root%/}"                        # "" for /, so "$root/etc" is always right
prefix="${PREFIX:-/opt/gatewayd}"
prefix="/${prefix#/}"
prefix="${prefix%/}"
spec="${GATEWAYD_SPEC:-$checkout}"
read -r -a pip_args <<<"${PIP_ARGS:-}"
venv="$root$prefix/venv"
user=gatewayd
changes=0

note() { echo "  $*"; changes=$((changes + 1)); }

if [ -z "$root" ] && [ "$(id -u)" != 0 ]; then
  echo "install.sh: run as root (or set ROOT to install into another tree)" >&2
  exit 1
fi

find_python() {
  local candidate
  local -a candidates=(python3.13 python3.12 python3.11 python3)
  if [ -n "${PYTHON:-}" ]; then
    candidates=("$PYTHON")
  fi
  for candidate in "${candidates[@]}"; do
    if command -v "$candidate" >/dev/null 2>&1 &&
      "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
      echo "$candidate"
      return 0
    fi
  done
  echo "install.sh: gatewayd needs Python >= 3.11 with venv (apt-get install python3-venv)" >&2
  return 1
}

# install_file SRC DEST MODE: copy when the content or the mode differs.
install_file() {
  local src="$1" dest="$2" mode="$3"
  mkdir -p "$(dirname "$dest")"
  if [ -f "$dest" ] && cmp -s "$src" "$dest"; then
    if [ "$(stat -c %a "$dest")" != "${mode#0}" ]; then
      chmod "$mode" "$dest"
      note "mode $mode $dest"
    fi
    return 0
  fi
  install -m "$mode" "$src" "$dest"
  note "installed ${dest#"$root"}"
}

# ensure_dir DIR MODE [GROUP]: create, fix the mode, and the group when given.
ensure_dir() {
  local dir="$1" mode="$2" group="${3:-}"
  if [ ! -d "$dir" ]; then
    mkdir -p "$dir"
    chmod "$mode" "$dir"
    note "created ${dir#"$root"}"
  elif [ "$(stat -c %a "$dir")" != "${mode#0}" ]; then
    chmod "$mode" "$dir"
    note "mode $mode ${dir#"$root"}"
  fi
  if [ -n "$group" ] && [ "$(stat -c %G "$dir")" != "$group" ]; then
    chgrp "$group" "$dir"
    note "group $group ${dir#"$root"}"
  fi
}

# fingerprint SPEC: changes whenever what pip would install changes.
fingerprint() {
  local what="$1"
  if [ -d "$what" ]; then
    (cd "$what" && find pyproject.toml README.md gatewayd drivers protocols -type f \
      ! -name '*.pyc' ! -path '*/__pycache__/*' -print0 2>/dev/null |
      LC_ALL=C sort -z | xargs -0 sha256sum | sha256sum | cut -d' ' -f1)
  elif [ -f "$what" ]; then
    sha256sum <"$what" | cut -d' ' -f1
  else
    echo "$what"
  fi
}

# -- users and groups ---------------------------------------------------------------------------

manage_users=1
if [ -n "$root" ] || [ "$no_users" = 1 ]; then
  manage_users=0
fi
if [ "$manage_users" = 1 ]; then
  for group in bluetooth dialout; do
    if ! getent group "$group" >/dev/null; then
      groupadd --system "$group"
      note "created group $group"
    fi
  done
  if ! getent passwd "$user" >/dev/null; then
    useradd --system --user-group --home-dir /var/lib/gatewayd --no-create-home \
      --shell /usr/sbin/nologin --comment "gatewayd CGM gateway" "$user"
    note "created system user $user"
  fi
  for group in bluetooth dialout; do
    if ! id -nG "$user" | tr ' ' '\n' | grep -qx "$group"; then
      usermod -a -G "$group" "$user"
      note "added $user to group $group"
    fi
  done
fi
config_group=""
if [ -z "$root" ] && getent group "$user" >/dev/null; then
  config_group="$user"
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# -- the venv -------------------------------------------------------------------------------------

# The helpers shared with ./scripts/demo and ./scripts/test: gatewayd_pip_install takes prebuilt
# wheels where every package has one and compiles (installing the compilers once) otherwise.
# shellcheck source=../scripts/_venv.sh disable=SC1091
source "$checkout/scripts/_venv.sh"

# A venv is usable when its Python is new enough AND it has pip: an earlier run without
# python3-venv leaves one without pip (ensurepip failed), which every later pip call trips on.
if ! "$venv/bin/python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null ||
  ! "$venv/bin/python" -m pip --version >/dev/null 2>&1; then
  python=$(find_python)
  if ! "$python" -c 'import ensurepip, venv' 2>/dev/null; then
    pkg="python$("$python" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')-venv"
    if [ -n "$root" ] || ! command -v apt-get >/dev/null 2>&1; then
      echo "install.sh: $python has no venv/ensurepip; install $pkg, then run this again" >&2
      exit 1
    fi
    echo "  $python has no venv/ensurepip: installing $pkg with apt" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$pkg" >/dev/null
    note "installed $pkg"
  fi
  if [ -e "$venv" ]; then
    note "removed the unusable venv ${venv#"$root"} (no pip in it)"
  fi
  rm -rf "$venv"
  mkdir -p "$(dirname "$venv")"
  "$python" -m venv "$venv"
  note "created venv ${venv#"$root"} ($("$venv/bin/python" --version 2>&1))"
fi
stamp="$venv/.gatewayd-install"
wanted=$(printf 'spec=%s\nfingerprint=%s\npip_args=%s\n' \
  "$spec" "$(fingerprint "$spec")" "${PIP_ARGS:-}")
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$wanted" ]; then
  source_spec="$spec"
  if [ -d "$spec" ]; then
    # Build from a clean copy: setuptools' build/ in a checkout keeps modules deleted since.
    source_spec="$tmp/source"
    mkdir -p "$source_spec"
    parts=()
    for part in pyproject.toml README.md LICENSE LICENSE.txt gatewayd drivers protocols; do
      if [ -e "$spec/$part" ]; then parts+=("$part"); fi
    done
    tar -C "$spec" --exclude=__pycache__ --exclude='*.pyc' --exclude='*.egg-info' -cf - \
      "${parts[@]}" | tar -C "$source_spec" -xf -
  fi
  gatewayd_pip_install "$venv/bin/python" --upgrade ${pip_args[@]+"${pip_args[@]}"} "$source_spec"
  if [ -n "$root" ]; then
    # The venv will run at $prefix, not under $root: fix the absolute paths pip wrote.
    { grep -lrF "$venv" "$venv/bin" || true; } | while IFS= read -r file; do
      sed -i "s|$venv|$prefix/venv|g" "$file"
    done
  fi
  printf '%s\n' "$wanted" >"$stamp"
  note "installed gatewayd into ${venv#"$root"} ($("$venv/bin/python" -c \
    'import importlib.metadata as m; print(m.version("gatewayd"))'))"
fi

# -- files ----------------------------------------------------------------------------------------

sed "s|/opt/gatewayd|$prefix|g" "$here/gatewayd.service" >"$tmp/gatewayd.service"
unit_before=$changes
install_file "$tmp/gatewayd.service" "$root/etc/systemd/system/gatewayd.service" 0644
unit_changed=$((changes - unit_before))

rules_before=$changes
install_file "$here/60-gatewayd.rules" "$root/etc/udev/rules.d/60-gatewayd.rules" 0644
printf '# gatewayd: serial receiver drivers, loaded at boot (see gatewayd.service DeviceAllow=)\ncdc_acm\nusbserial\n' \
  >"$tmp/modules.conf"
install_file "$tmp/modules.conf" "$root/etc/modules-load.d/gatewayd.conf" 0644
rules_changed=$((changes - rules_before))

if [ -f "$checkout/docs/operations.md" ]; then
  install_file "$checkout/docs/operations.md" "$root$prefix/operations.md" 0644
fi

ensure_dir "$root/etc/gatewayd" 0750 "$config_group"
install_file "$here/config.example.toml" "$root/etc/gatewayd/config.example.toml" 0640
config="$root/etc/gatewayd/config.toml"
new_config=0
if [ ! -e "$config" ]; then
  install -m 0640 "$here/config.example.toml" "$config"
  new_config=1
  note "created /etc/gatewayd/config.toml from the example: edit it before starting"
fi
if [ -n "$config_group" ]; then
  for file in "$root/etc/gatewayd/config.example.toml" "$config"; do
    if [ "$(stat -c %G "$file")" != "$config_group" ]; then
      chgrp "$config_group" "$file"
      note "group $config_group ${file#"$root"}"
    fi
  done
fi

# -- tell the running system ----------------------------------------------------------------------

if [ -z "$root" ]; then
  if [ "$unit_changed" != 0 ] && [ -d /run/systemd/system ]; then
    systemctl daemon-reload
  elif [ "$unit_changed" != 0 ]; then
    echo "  systemd is not running here (a container or chroot): the unit is installed, not loaded"
  fi
  if [ "$rules_changed" != 0 ]; then
    if command -v modprobe >/dev/null 2>&1; then
      modprobe -a cdc_acm usbserial 2>/dev/null || true
    fi
    if command -v udevadm >/dev/null 2>&1 && [ -S /run/udev/control ]; then
      udevadm control --reload
      udevadm trigger --action=add --subsystem-match=tty
    fi
  fi
fi

if [ "$changes" = 0 ]; then
  echo "gatewayd: nothing changed"
else
  echo "gatewayd: $changes change(s) under ${root:-/}"
  if [ -z "$root" ] && [ -d /run/systemd/system ] && systemctl is-active --quiet gatewayd; then
    echo "gatewayd is running what was installed before: systemctl restart gatewayd"
  fi
fi
if [ "$new_config" = 1 ]; then
  echo "next: edit /etc/gatewayd/config.toml, then: systemctl enable --now gatewayd"
fi
