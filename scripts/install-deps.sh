#!/usr/bin/env bash
# Installs what hearth's build and tests need and the machine lacks.
# Idempotent and quiet when everything is present.
set -euo pipefail

export DEBIAN_FRONTEND=noninteractive
missing=()
command -v cargo >/dev/null || { echo "error: cargo (Rust toolchain) is required" >&2; exit 1; }
command -v readelf >/dev/null || missing+=(binutils)
command -v node >/dev/null || missing+=(nodejs)
command -v npm >/dev/null || missing+=(npm)
command -v python3 >/dev/null || missing+=(python3)
python3 -c 'import venv, ensurepip' 2>/dev/null || missing+=(python3-venv)
command -v useradd >/dev/null || missing+=(passwd)
# The microVM runtime: guest image tools and the host side of sandbox networking.
command -v debootstrap >/dev/null || missing+=(debootstrap)
command -v cpio >/dev/null || missing+=(cpio)
command -v xz >/dev/null || missing+=(xz-utils)
command -v mkfs.ext4 >/dev/null || missing+=(e2fsprogs)
command -v qemu-img >/dev/null || missing+=(qemu-utils)
command -v nft >/dev/null || missing+=(nftables)
command -v ip >/dev/null || missing+=(iproute2)
command -v curl >/dev/null || missing+=(curl)
# Sandbox hosts `<port>-<id>.hearth.localhost` resolve to loopback for
# programs here through glibc's myhostname module (browsers need nothing).
[ -e /lib/x86_64-linux-gnu/libnss_myhostname.so.2 ] || missing+=(libnss-myhostname)
# Template builds put a static tini and busybox into images that lack them.
[ -x /usr/bin/tini-static ] || missing+=(tini)
[ -x /bin/busybox ] || missing+=(busybox-static)

# `--test`: also what only the test suite needs (PostgreSQL for the store's
# second backend; an OCI registry for hearth-oci's pulls).
if [ "${1:-}" = "--test" ]; then
    compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || missing+=(postgresql)
    command -v docker-registry >/dev/null || missing+=(docker-registry)
    # htpasswd: the test registry that wants a login.
    command -v htpasswd >/dev/null || missing+=(apache2-utils)
    # A browser opening a sandbox's https URL, trusting hearth's CA (certutil).
    command -v chromium >/dev/null || missing+=(chromium)
    command -v certutil >/dev/null || missing+=(libnss3-tools)
    # promtool: checks that hearth's /metrics parse as Prometheus text.
    command -v promtool >/dev/null || missing+=(prometheus)
fi

updated=0
if ((${#missing[@]})); then
    echo "installing: ${missing[*]}"
    apt-get update -qq
    updated=1
    apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# QEMU 10 (microvm with x-ignore-shared templating) comes from bookworm-backports.
if ! qemu-system-x86_64 --version 2>/dev/null | grep -q 'version 10\.'; then
    backports=/etc/apt/sources.list.d/hearth-bookworm-backports.list
    if ! grep -rqs 'bookworm-backports' /etc/apt/sources.list /etc/apt/sources.list.d/; then
        echo "deb http://deb.debian.org/debian bookworm-backports main" >"$backports"
        updated=0
    fi
    echo "installing: qemu-system-x86 (bookworm-backports)"
    ((updated)) || apt-get update -qq
    apt-get install -y -qq -t bookworm-backports qemu-system-x86 >/dev/null
fi

# The package's postinst adds `myhostname` to nsswitch.conf's hosts line; a
# machine whose nsswitch.conf was edited by hand may still lack it.
if ! grep -Eq '^hosts:.*\bmyhostname\b' /etc/nsswitch.conf; then
    echo "enabling myhostname on the hosts line of /etc/nsswitch.conf"
    sed -i -E 's/^(hosts:[[:space:]]+files)/\1 myhostname/' /etc/nsswitch.conf
fi
