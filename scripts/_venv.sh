# shellcheck shell=bash
# Sourced by scripts/*: make sure .venv exists with the project installed (extra given in $1).
# Works on a fresh Debian / Raspberry Pi OS with only Python >= 3.11: installs python3-venv
# through apt when the interpreter lacks ensurepip and we may (root or passwordless sudo).

set -euo pipefail

_gatewayd_python() {
  local candidate
  for candidate in python3.13 python3.12 python3.11 python3; do
    if command -v "$candidate" >/dev/null 2>&1 &&
       "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
      echo "$candidate"
      return 0
    fi
  done
  echo "gatewayd needs Python >= 3.11 (found: $(python3 --version 2>&1 || echo none))" >&2
  return 1
}

_gatewayd_as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"
  elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then sudo "$@"
  else return 1
  fi
}

gatewayd_venv() {
  local extra="$1" python stamp
  python=$(_gatewayd_python)
  if [ ! -x .venv/bin/python ]; then
    if ! "$python" -c 'import ensurepip, venv' 2>/dev/null; then
      local pkg
      pkg="python$("$python" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')-venv"
      echo "Python's venv module is missing; installing $pkg with apt" >&2
      if ! { _gatewayd_as_root apt-get update -qq && _gatewayd_as_root apt-get install -y -qq "$pkg"; }; then
        echo "gatewayd: run 'sudo apt-get install -y $pkg' once, then this script again" >&2
        return 1
      fi
    fi
    rm -rf .venv
    "$python" -m venv .venv
  fi
  stamp=".venv/.gatewayd-installed-$extra"
  if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    echo "Installing gatewayd[$extra] into .venv (first run takes a minute) ..." >&2
    gatewayd_pip_install .venv/bin/python -e ".[$extra]"
    touch "$stamp"
  fi
}

# pip install "$@" into the venv of interpreter $1: prebuilt wheels only when every package has
# one (x86_64, aarch64); otherwise (32-bit Raspberry Pi OS: cffi, dbus-fast, psutil ... have no
# armv7l wheel) install the compilers once through apt, say so in one line, and let pip build.
gatewayd_pip_install() {
  local python="$1" log
  shift
  log=$(mktemp)
  if "$python" -m pip install --quiet --disable-pip-version-check --only-binary=:all: "$@" 2>"$log"; then
    rm -f "$log"
    return 0
  fi
  if ! grep -qiE "no matching distribution|could not find a version|ResolutionImpossible|conflicting dependencies" "$log"; then
    cat "$log" >&2
    rm -f "$log"
    return 1
  fi
  rm -f "$log"
  local build=(build-essential python3-dev libffi-dev)
  if ! gatewayd_have_build_tools; then
    echo "Some dependencies have no prebuilt wheel for $(uname -m); installing ${build[*]} to compile them (on a Raspberry Pi this first install takes 5-15 minutes)" >&2
    if ! { _gatewayd_as_root apt-get update -qq &&
           _gatewayd_as_root apt-get install -y -qq "${build[@]}" >/dev/null; }; then
      echo "gatewayd: run 'sudo apt-get install -y ${build[*]}' once, then this script again" >&2
      return 1
    fi
  else
    echo "Some dependencies have no prebuilt wheel for $(uname -m); compiling them (on a Raspberry Pi this first install takes 5-15 minutes)" >&2
  fi
  "$python" -m pip install --quiet --disable-pip-version-check "$@"
}

gatewayd_have_build_tools() {
  command -v cc >/dev/null 2>&1 || return 1
  [ -n "$(find /usr/include -path '*python3*' -name Python.h -print -quit 2>/dev/null)" ] || return 1
  [ -n "$(find /usr/include -name ffi.h -print -quit 2>/dev/null)" ]
}

gatewayd_need_mosquitto() {
  if command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ]; then
    return 0
  fi
  echo "The tests need a real mosquitto broker; installing it with apt" >&2
  if ! { _gatewayd_as_root apt-get update -qq &&
         _gatewayd_as_root apt-get install -y -qq mosquitto mosquitto-clients; }; then
    echo "gatewayd: run 'sudo apt-get install -y mosquitto mosquitto-clients' once, then this script again" >&2
    return 1
  fi
  # Debian starts the packaged broker on port 1883; the tests start their own on free ports.
}
