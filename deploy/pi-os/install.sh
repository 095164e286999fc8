#!/bin/sh
# Applies the pifleet hardening kit to a Raspberry Pi OS (Bookworm) system. Review
# docs/pi-os-hardening.md first: it reboots into a read-only root only when you run
# `raspi-config nonint enable_overlayfs` yourself (step 6 of the guide).
set -eu
here=$(dirname "$0")
[ "$(id -u)" = 0 ] || { echo "run as root" >&2; exit 1; }
install -D -m 0644 "$here/etc/systemd/system.conf.d/50-pifleet-watchdog.conf" /etc/systemd/system.conf.d/50-pifleet-watchdog.conf
install -D -m 0644 "$here/etc/systemd/journald.conf.d/50-pifleet.conf" /etc/systemd/journald.conf.d/50-pifleet.conf
install -D -m 0644 "$here/etc/chrony/conf.d/pifleet.conf" /etc/chrony/conf.d/pifleet.conf
install -D -m 0644 "$here/etc/logrotate.d/pifleet" /etc/logrotate.d/pifleet
if ! grep -q 'pifleet' /boot/firmware/config.txt; then
  { echo "# pifleet"; cat "$here/boot/config.txt.pifleet"; } >> /boot/firmware/config.txt
fi
# An RTC with a driver replaces fake-hwclock (which would set the clock back at boot).
apt-get install -y chrony
apt-get purge -y fake-hwclock || true
# No swap on the SD card (alert PiSwapOnSD): zram instead.
dphys-swapfile swapoff 2>/dev/null || true
apt-get purge -y dphys-swapfile || true
apt-get install -y systemd-zram-generator 2>/dev/null || echo "install zram-tools or systemd-zram-generator for zram swap"
echo "Done. Review $here/etc/fstab.pifleet before using it; reboot to apply config.txt and the watchdog."
