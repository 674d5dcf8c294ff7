#!/usr/bin/env bash
# Set up everything whyreset and its tests need on a fresh Debian machine (run as root, or with sudo available):
# the capture tools the tests use as real peers and oracles, and a virtualenv with whyreset installed editable.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
for tool in tcpdump tshark tcptrace ip iptables ss; do
  command -v "$tool" >/dev/null 2>&1 || need_apt+=("$tool")
done
if ((${#need_apt[@]})); then
  sudo_cmd=()
  [ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
  echo "setup: installing ${need_apt[*]} from Debian packages" >&2
  "${sudo_cmd[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends \
    tcpdump tshark tcptrace iproute2 iptables >/dev/null
fi

python=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$python" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
.venv/bin/python -m pip install -q -e '.[dev]'
