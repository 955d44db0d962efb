#!/bin/sh
# Install promtool and amtool (Debian's prometheus and prometheus-alertmanager) when missing.
#
# Idempotent and quiet: does nothing when both tools are on PATH. Works as root, or through
# sudo when it is present. Package maintainer scripts are kept from starting the prometheus and
# alertmanager services (a policy-rc.d that denies every start during the install), and any
# service that started anyway is stopped, so nothing is left listening on 9090/9093.
set -eu

if command -v promtool >/dev/null 2>&1 && command -v amtool >/dev/null 2>&1; then
    exit 0
fi

if [ "$(id -u)" -eq 0 ]; then
    SUDO=""
elif command -v sudo >/dev/null 2>&1; then
    SUDO="sudo -n"
else
    echo "install-prometheus.sh: need root or sudo to apt-get install prometheus" >&2
    exit 1
fi

POLICY=/usr/sbin/policy-rc.d
SAVED=""
if [ -e "$POLICY" ]; then
    SAVED="$(mktemp)"
    $SUDO cp -p "$POLICY" "$SAVED"
fi
restore_policy() {
    if [ -n "$SAVED" ]; then
        $SUDO mv "$SAVED" "$POLICY"
    else
        $SUDO rm -f "$POLICY"
    fi
}
trap restore_policy EXIT
# 101 = "action forbidden by policy": invoke-rc.d and deb-systemd-invoke start nothing.
printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$POLICY" >/dev/null
$SUDO chmod 755 "$POLICY"

export DEBIAN_FRONTEND=noninteractive DEBCONF_NOWARNINGS=yes
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends prometheus prometheus-alertmanager >/dev/null

# Belt and braces: stop whatever came up anyway (no systemd here, or a policy-rc.d ignored).
for svc in prometheus prometheus-alertmanager; do
    if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet "$svc" 2>/dev/null; then
        $SUDO systemctl stop "$svc" || true
    fi
    if [ -x "/etc/init.d/$svc" ]; then
        $SUDO "/etc/init.d/$svc" stop >/dev/null 2>&1 || true
    fi
done

promtool --version 2>&1 | head -n 1
amtool --version 2>&1 | head -n 1
