#!/usr/bin/env bash
# Installs the Debian packages the tests use, when missing (needs root and
# apt-get; a machine that already has them installs nothing):
# - fonts-dejavu-core: the billing report's plot labels;
# - python3-libtorrent and mktorrent: independent info-hash oracles, and
#   libtorrent as a real client of the tracker;
# - transmission-daemon and aria2: real clients of the tracker and the seeder;
# - qbittorrent-nox: qBittorrent (libtorrent 2.0) driven over its Web API, a
#   real client of the tracker and the seeder (seeder/tests/interop_qbittorrent.rs);
# - iproute2: network namespaces (the agent's link-down/up resume test, the
#   NAT lab);
# - nftables: the NAT lab's routers (deploy/src/lab, deploy/tests/lab_nat.rs);
# - vde2 and vde-wirefilter: vde_switch and wirefilter, the lab's WAN links
#   with delay and loss (deploy/src/lab/link.rs, deploy/tests/lab_link.rs);
# - coturn: turnutils_stunclient, an independent client of the STUN responder,
#   and turnserver/turnutils_natdiscovery, the lab's real STUN server and
#   RFC 5780 client (deploy/src/lab/coturn.rs, deploy/tests/lab_coturn.rs);
# - miniupnpd: the lab's real UPnP IGD (and NAT-PMP/PCP) in RouterKind::Upnp
#   routers (deploy/src/lab/upnp.rs, deploy/tests/lab_upnp.rs);
# - postgresql: binaries for the throwaway clusters the tracker tests start;
# - mosquitto: the MQTT broker the release-notice tests start
#   (crates/testkit/src/mqtt_broker.rs, tracker/tests/mqtt_push.rs);
# - systemd: systemd-analyze, which checks the units under deploy/systemd
#   (deploy/tests/deployment_files.rs);
# - docker-compose: `docker-compose config -q` checks deploy/compose.yaml
#   (no container runtime is started).
# And from PyPI: kubernetes-validate, which checks deploy/kubernetes/*.yaml
# against the Kubernetes schemas it ships (no cluster).
set -euo pipefail
need=()
[ -f /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ] || need+=(fonts-dejavu-core)
/usr/bin/python3 -c 'import libtorrent' 2>/dev/null || need+=(python3-libtorrent)
command -v mktorrent >/dev/null || need+=(mktorrent)
command -v transmission-daemon >/dev/null || need+=(transmission-daemon)
command -v aria2c >/dev/null || need+=(aria2)
command -v qbittorrent-nox >/dev/null || need+=(qbittorrent-nox)
command -v ip >/dev/null || need+=(iproute2)
command -v nft >/dev/null || [ -x /usr/sbin/nft ] || need+=(nftables)
command -v vde_switch >/dev/null || need+=(vde2)
command -v wirefilter >/dev/null || need+=(vde-wirefilter)
command -v turnutils_stunclient >/dev/null || need+=(coturn)
command -v miniupnpd >/dev/null || [ -x /usr/sbin/miniupnpd ] || need+=(miniupnpd)
compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || need+=(postgresql)
[ -x /usr/sbin/mosquitto ] && [ -x /usr/bin/mosquitto_passwd ] || need+=(mosquitto)
command -v systemd-analyze >/dev/null || need+=(systemd)
command -v docker-compose >/dev/null || need+=(docker-compose)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
    echo "the tests need these Debian packages: ${need[*]} (run this script as root on Debian, or install them)" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y --no-install-recommends "${need[@]}" \
    || { apt-get update && apt-get install -y --no-install-recommends "${need[@]}"; }
fi
if ! python3 -c 'import kubernetes_validate' 2>/dev/null; then
  python3 -m pip install --quiet kubernetes-validate 2>/dev/null \
    || python3 -m pip install --quiet --break-system-packages kubernetes-validate \
    || { echo "cannot install kubernetes-validate from PyPI (python3 -m pip install kubernetes-validate)" >&2; exit 1; }
fi
