#!/bin/sh
# Installs a built shoal binary and its service files on a device.
#   packaging/install.sh path/to/shoal
set -eu
BIN="${1:?usage: install.sh path/to/shoal}"
install -m 0755 "$BIN" /usr/local/bin/shoal
install -d -m 0711 /var/lib/shoal
install -d -m 0755 /etc/shoal/certs.d
if [ -d /run/systemd/system ]; then
    install -m 0644 "$(dirname "$0")/shoal.service" /etc/systemd/system/shoal.service
    systemctl daemon-reload
    systemctl enable --now shoal
else
    install -m 0755 "$(dirname "$0")/init.d/shoal" /etc/init.d/shoal
    /etc/init.d/shoal start
fi
echo "shoal installed: $(/usr/local/bin/shoal --version)"
