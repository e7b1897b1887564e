#!/usr/bin/env bash
# deploy/install.sh [--env dev|staging|prod] [--workers N]: install the ETP hub on Raspberry Pi
# OS or Debian (root; idempotent: run it again to upgrade). docs/deployment.md.
#
#  - the system user `etp`; /etc/etp (root:etp 0750), /var/lib/etp (etp:etp 0750)
#  - this source tree as a release in /opt/etp/releases/<version>-<content hash>/ with its own
#    virtualenv (the package installed editable, with the tools extra for flashing boards, so
#    the hub finds its migrations, the program's IDL and the dashboard build beside it);
#    /opt/etp/venv and /opt/etp/src point at the newest release. Hubs already running keep the
#    release they started from, so a rolling upgrade never mixes two versions in one process.
#  - /etc/etp/etp.env from deploy/env/<env>.env, and /etc/etp/worker-N.env (ETP_HTTP_PORT=8000+N),
#    only where they do not exist yet (your edits are kept)
#  - the systemd units, Mosquitto's drop-ins (when Mosquitto is installed), /usr/local/bin/etp-site
# It starts nothing: it prints the next steps.
set -euo pipefail

environment=dev
workers=2
while [ $# -gt 0 ]; do
    case "$1" in
        --env) environment=${2:?--env needs dev, staging or prod}; shift 2 ;;
        --workers) workers=${2:?--workers needs a number}; shift 2 ;;
        -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"
            exit 0 ;;
        *) echo "install.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done
case "$environment" in dev|staging|prod) ;; *)
    echo "install.sh: --env must be dev, staging or prod" >&2; exit 2 ;;
esac
case "$workers" in ''|*[!0-9]*) echo "install.sh: --workers must be a number" >&2; exit 2 ;; esac
if [ "$(id -u)" -ne 0 ]; then
    echo "install.sh: run as root (sudo bash deploy/install.sh)" >&2
    exit 1
fi

src=$(cd "$(dirname "$0")/.." && pwd)
prefix=/opt/etp
python=${PYTHON:-/usr/bin/python3}  # the system's: user etp must be able to run it

if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    echo "install.sh: $python is missing or older than 3.11 (Raspberry Pi OS / Debian 12 have 3.11)" >&2
    exit 1
fi
if ! "$python" -c 'import ensurepip, venv' 2>/dev/null; then
    echo "install.sh: installing python3-venv"
    apt-get install -y -q python3-venv
fi

# 1. the etp system user and its directories
if ! getent passwd etp > /dev/null; then
    useradd --system --user-group --home-dir /var/lib/etp --no-create-home \
        --shell /usr/sbin/nologin --comment "ETP hub" etp
    echo "created system user etp"
fi
install -d -m 0750 -o root -g etp /etc/etp
install -d -m 0750 -o etp -g etp /var/lib/etp
install -d -m 0755 -o root -g root "$prefix" "$prefix/releases" "$prefix/bin"

# 2. the release: sources (and what was built here: dashboard/dist, anchor/target) + venv
version=$(sed -n 's/^version = "\(.*\)"/\1/p' "$src/pyproject.toml" | head -n 1)
tree=(--exclude=./.git --exclude=./.venv --exclude='*/node_modules' --exclude=./.etp
      --exclude='*/__pycache__' --exclude=./.pytest_cache --exclude=./.mypy_cache
      --exclude=./.ruff_cache --exclude=./tests --exclude=./hil_tests)
hash=$(tar -C "$src" "${tree[@]}" --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner \
    -cf - . | sha256sum | cut -c1-12)
release=$prefix/releases/$version-$hash
if [ -x "$release/venv/bin/etp" ] \
    && runuser -u etp -- "$release/venv/bin/etp" --help > /dev/null 2>&1; then
    echo "release $release is installed already"
else
    # a release left half-built by an interrupted run is built again from scratch
    rm -rf "$release"
    install -d -m 0755 "$release/src"
    tar -C "$src" "${tree[@]}" -cf - . | tar -C "$release/src" --no-same-owner -xf -
    "$python" -m venv "$release/venv"
    "$release/venv/bin/pip" install --quiet --disable-pip-version-check -e "$release/src[tools]"
    chmod -R go-w,go+rX "$release"
    runuser -u etp -- "$release/venv/bin/etp" --help > /dev/null
    echo "installed release $release"
fi
ln -sfn "$release/venv" "$prefix/venv.new" && mv -T "$prefix/venv.new" "$prefix/venv"
ln -sfn "$release/src" "$prefix/src.new" && mv -T "$prefix/src.new" "$prefix/src"
[ -f "$release/src/dashboard/dist/index.html" ] \
    || echo "note: no dashboard build in this tree (npm run build in dashboard/): / answers 404"
[ -f "$release/src/anchor/target/etp_settlement.so" ] \
    || echo "note: no built settlement program (python anchor/build.py): the embedded ledger is off"

# 3. helper commands
install -m 0755 "$src/deploy/bin/etp-site" "$prefix/bin/etp-site"
install -m 0755 "$src/deploy/bin/etp-mosquitto-tls" "$prefix/bin/etp-mosquitto-tls"
ln -sfn "$prefix/bin/etp-site" /usr/local/bin/etp-site

# 4. configuration (never overwritten)
if [ ! -f /etc/etp/etp.env ]; then
    install -m 0640 -o root -g etp "$src/deploy/env/$environment.env" /etc/etp/etp.env
    echo "wrote /etc/etp/etp.env from deploy/env/$environment.env"
fi
for n in $(seq 1 "$workers"); do
    if [ ! -f "/etc/etp/worker-$n.env" ]; then
        printf '# hub worker %s (etp-hub-worker@%s): its own HTTP port\nETP_HTTP_PORT=%s\n' \
            "$n" "$n" $((8000 + n)) > "/etc/etp/worker-$n.env"
        chown root:etp "/etc/etp/worker-$n.env"
        chmod 0640 "/etc/etp/worker-$n.env"
    fi
done

# 5. systemd units and Mosquitto's drop-ins
for unit in "$src"/deploy/systemd/*.service "$src"/deploy/systemd/*.path; do
    install -m 0644 "$unit" /etc/systemd/system/
done
if [ -d /etc/mosquitto ] && getent group mosquitto > /dev/null; then
    install -d -m 0755 /etc/systemd/system/mosquitto.service.d
    install -m 0644 "$src/deploy/systemd/mosquitto.service.d/etp.conf" \
        /etc/systemd/system/mosquitto.service.d/etp.conf
    # `etp broker config` / `etp device` (as user etp) write here; Mosquitto reads (group)
    install -d -m 2750 -o etp -g mosquitto /etc/mosquitto/etp
    if [ -f /etc/mosquitto/etp/mosquitto.conf ]; then
        ln -sfn /etc/mosquitto/etp/mosquitto.conf /etc/mosquitto/conf.d/etp.conf
    fi
fi
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload
fi

cat <<NEXT

ETP $version installed ($release).
Next steps (docs/deployment.md has each in full):
  edit /etc/etp/etp.env                      (site name, settlement market, ...)
  etp-site pki init --host \$(hostname).local --host <LAN address>   # site CA + certificates
One hub (embedded broker, SQLite):
  systemctl enable --now etp-hub
Workers (Mosquitto + PostgreSQL; apt-get install mosquitto postgresql):
  runuser -u postgres -- createuser etp && runuser -u postgres -- createdb -O etp etp
  etp-site broker config --out /etc/mosquitto/etp --host 0.0.0.0 --tls
  ln -sfn /etc/mosquitto/etp/mosquitto.conf /etc/mosquitto/conf.d/etp.conf
  systemctl enable --now etp-mosquitto-reload.path && systemctl restart mosquitto
  systemctl enable --now etp-hub-worker@1 etp-hub-worker@2
Then: etp-site apikey create --name admin --role operator; journalctl -u etp-hub -f
NEXT
