#!/bin/sh
# Creates and destroys the local provider's pieces: a bridge per cluster, and per node a
# network namespace, a mount+UTS namespace held by a small init process, and an sshd.
# Every action is idempotent, so an interrupted apply or destroy can simply be run again.
set -eu

node_dir() { echo "$STATE_DIR/nodes/$NODE"; }

# The loopback names, IPv4 and IPv6 (a lookup of ::1 must not go to a resolver either).
LOCALHOST='127.0.0.1 localhost
::1 localhost ip6-localhost ip6-loopback
'


need_root() {
  if [ "$(id -u)" != 0 ]; then
    echo "the local provider needs root (network namespaces, mounts)" >&2
    exit 1
  fi
}

network_up() {
  need_root
  mkdir -p "$STATE_DIR/nodes"
  [ -f "$STATE_DIR/nodes/hosts" ] || printf '%s' "$LOCALHOST" > "$STATE_DIR/nodes/hosts"
  if ! ip link show "$BRIDGE" >/dev/null 2>&1; then
    ip link add "$BRIDGE" type bridge
  fi
  ip addr replace "$GATEWAY_IP/$PREFIX_LEN" dev "$BRIDGE"
  ip link set "$BRIDGE" up
}

network_down() {
  ip link del "$BRIDGE" 2>/dev/null || true
  rm -f "$STATE_DIR/nodes/hosts"
  rmdir "$STATE_DIR/nodes" 2>/dev/null || true
}

write_hosts() {
  mkdir -p "$STATE_DIR/nodes"
  # Rewritten in place (not replaced) so the nodes' bind mounts of this file see the change.
  printf '%s%s' "$LOCALHOST" "$HOSTS" > "$STATE_DIR/nodes/hosts.new"
  cat "$STATE_DIR/nodes/hosts.new" > "$STATE_DIR/nodes/hosts"
  rm -f "$STATE_DIR/nodes/hosts.new"
}

kill_namespace_processes() {
  if [ -e "/run/netns/$NAMESPACE" ]; then
    pids=$(ip netns pids "$NAMESPACE" || true)
    if [ -n "$pids" ]; then
      # shellcheck disable=SC2086
      kill -9 $pids 2>/dev/null || true
      for _ in $(seq 50); do
        [ -z "$(ip netns pids "$NAMESPACE" 2>/dev/null)" ] && break
        sleep 0.1
      done
    fi
  fi
}

node_down() {
  kill_namespace_processes
  ip link del "$VETH" 2>/dev/null || true
  ip netns del "$NAMESPACE" 2>/dev/null || true
  d=$(node_dir)
  # The overlay's work dir keeps root-only entries: remove the whole node dir.
  rm -rf "$d"
}

node_up() {
  need_root
  d=$(node_dir)
  # A half-made node from an interrupted run is removed and made again.
  node_down
  mkdir -p "$d/home-upper" "$d/home-work" "$d/tmp" /run/sshd
  STORAGE_DIR=${STORAGE_DIR:-}
  if [ -n "$STORAGE_DIR" ]; then
    mkdir -p "$STORAGE_DIR" && chmod 0700 "$STORAGE_DIR"
  fi
  chmod 1777 "$d/tmp"
  chmod 0700 "$d"
  ssh-keygen -q -t ed25519 -N '' -C "$NODE" -f "$d/ssh_host_ed25519_key"
  cp "$d/ssh_host_ed25519_key.pub" "$d/host_key.$NODE_ID.pub"

  ip netns add "$NAMESPACE"
  ip link add "$VETH" type veth peer name eth0 netns "$NAMESPACE"
  ip link set "$VETH" master "$BRIDGE" up
  ip -n "$NAMESPACE" addr add "$NODE_IP/$PREFIX_LEN" dev eth0
  ip -n "$NAMESPACE" link set lo up
  ip -n "$NAMESPACE" link set eth0 up
  ip -n "$NAMESPACE" route add default via "$GATEWAY_IP"
  # A node made again (replaced) keeps its address but not its MAC: forget the old one on the
  # host and in the cluster's other nodes, which would otherwise send to it until their
  # neighbour entry goes stale (about 30 s).
  ip neigh flush dev "$BRIDGE" to "$NODE_IP" 2>/dev/null || true
  for ns in $(ip netns list | awk '{print $1}'); do
    case "$ns" in
      "${NAMESPACE%-"$NODE"-*}"-*-"${NAMESPACE##*-}")
        [ "$ns" = "$NAMESPACE" ] || ip -n "$ns" neigh flush dev eth0 to "$NODE_IP" 2>/dev/null || true ;;
    esac
  done
  node_boot
}

# Starts the node's processes on its existing namespace and disk: the init process (mounts,
# hostname) and sshd. `node-up` calls it after making the node; `node-start` after a stop.
node_boot() {
  d=$(node_dir)
  rm -f "$d/init.ready" "$d/sshd.pid" "$d/stopped"
  # The namespace's identity, as its processes read /proc/self/ns/net: the node's self-stop
  # ends processes only when its own namespace is this one (never the host's).
  ip netns exec "$NAMESPACE" readlink /proc/self/ns/net > "$d/netns"
  home=${HOME:-/root}
  # The init process holds the node's mount and UTS namespaces: own hostname, /etc/hosts and
  # /run, a private /tmp and /dev/shm, a copy-on-write home (the host's home as the lower
  # layer), and every other folder of this machine seen through an overlay whose upper layer
  # is the node's own (node dir root/upper/FOLDER): like a VM's disk, whatever the node writes
  # outside its home, /tmp and storage (`pip install` into the Python it runs, /usr/local,
  # /var/tmp, ...) stays in that node, never on this machine or in another node. The node dir
  # is bind-mounted at /run/dlvm/node first, so later mounts cannot hide it; a stopped node
  # boots on the same layers.
  cat > "$d/init.sh" <<INIT
set -e
exec 3>"$d/init.ready"
hostname "$NODE"
mount -t tmpfs -o mode=0755 tmpfs /run
mkdir -p /run/sshd /run/dlvm/node
: > /run/dlvm/authorized_keys
mount --bind "$AUTHORIZED_KEYS" /run/dlvm/authorized_keys
: > /run/dlvm/hosts
mount --bind "$STATE_DIR/nodes/hosts" /run/dlvm/hosts
mount --bind "$d" /run/dlvm/node
# The host folder standing in for Cloud Storage, seen from the node before its own layers
# hide the host's: storage mounts bind from here (shared by every node, kept by down).
if [ -n "$STORAGE_DIR" ]; then
  mkdir -p /run/dlvm/storage && mount --bind "$STORAGE_DIR" /run/dlvm/storage
fi
# Host paths under /tmp the nodes must still see (the Python environment dlvm runs from, in
# a checkout under /tmp): held aside, then mounted again, copy-on-write, on the private /tmp.
i=0
for p in \$(echo "$KEEP_PATHS" | tr ':' ' '); do
  mkdir -p /run/dlvm/keep/\$i && mount --bind "\$p" /run/dlvm/keep/\$i
  i=\$((i+1))
done
for top in /*; do
  [ -d "\$top" ] && [ ! -L "\$top" ] || continue
  case "\$top" in
    /proc|/sys|/dev|/run|/tmp|/lost+found|"$home") continue ;;
  esac
  mkdir -p "/run/dlvm/node/root/upper\$top" "/run/dlvm/node/root/work\$top"
  mount -t overlay overlay -o "lowerdir=\$top,upperdir=/run/dlvm/node/root/upper\$top,workdir=/run/dlvm/node/root/work\$top" "\$top"
done
mount --bind /run/dlvm/hosts /etc/hosts
mount -t tmpfs -o mode=1777 tmpfs /dev/shm
mount --bind /run/dlvm/node/tmp /tmp
i=0
for p in \$(echo "$KEEP_PATHS" | tr ':' ' '); do
  mkdir -p "\$p" /run/dlvm/node/keep/upper/\$i /run/dlvm/node/keep/work/\$i
  mount -t overlay overlay -o "lowerdir=/run/dlvm/keep/\$i,upperdir=/run/dlvm/node/keep/upper/\$i,workdir=/run/dlvm/node/keep/work/\$i" "\$p"
  i=\$((i+1))
done
mount -t overlay overlay -o "lowerdir=$home,upperdir=/run/dlvm/node/home-upper,workdir=/run/dlvm/node/home-work" "$home"
# A node's shell init is its own, as on a fresh VM image: the host's personal ~/.bashrc (often
# slow: pyenv, conda) would run before every remote command. The Python environment dlvm
# runs from comes first on PATH, as a DLVM image puts its framework environment first.
printf '%s\n' '# dlvm local node' 'export PATH="$NODE_PATH"' > "$home/.bashrc"
echo \$\$ >&3
exec 3>&-
exec sleep infinity
INIT
  setsid ip netns exec "$NAMESPACE" unshare --mount --uts --propagation private -- \
    sh "$d/init.sh" </dev/null >"$d/init.log" 2>&1 9>&- &
  for _ in $(seq 200); do
    [ -s "$d/init.ready" ] && break
    sleep 0.05
  done
  if [ ! -s "$d/init.ready" ]; then
    echo "node $NODE: init process did not start: $(cat "$d/init.log")" >&2
    exit 1
  fi

  cat > "$d/sshd_config" <<CONF
ListenAddress $NODE_IP:22
HostKey /run/dlvm/node/ssh_host_ed25519_key
PidFile /run/dlvm/node/sshd.pid
AuthorizedKeysFile /run/dlvm/authorized_keys .ssh/authorized_keys
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
UseDNS no
PrintMotd no
PrintLastLog no
MaxStartups 200
MaxSessions 100
KexAlgorithms curve25519-sha256,curve25519-sha256@libssh.org,sntrup761x25519-sha512@openssh.com
Subsystem sftp internal-sftp
CONF
  nsenter --target "$(cat "$d/init.ready")" --net --mount --uts -- \
    /usr/sbin/sshd -f /run/dlvm/node/sshd_config -E /run/dlvm/node/sshd.log 9>&-
  for _ in $(seq 200); do
    [ -s "$d/sshd.pid" ] && break
    sleep 0.05
  done
  if [ ! -s "$d/sshd.pid" ]; then
    echo "node $NODE: sshd did not start: $(tail -5 "$d/sshd.log" 2>/dev/null)" >&2
    exit 1
  fi
}


# Powers the node off: every process of its network namespace ends (only the PIDs that
# `ip netns pids` names, nothing outside it); the namespace, its link and the node dir (host
# key, home, /tmp) stay, so `node-start` boots the same node again. STOPPED_BY says why.
node_stop() {
  need_root
  d=$(node_dir)
  [ -e "/run/netns/$NAMESPACE" ] || { echo "node $NODE: no namespace $NAMESPACE" >&2; exit 1; }
  printf 'by=%s at=%s\n' "${STOPPED_BY:-user}" "$(date +%s)" > "$d/stopped.new"
  mv "$d/stopped.new" "$d/stopped"
  kill_namespace_processes
}

node_start() {
  need_root
  [ -e "/run/netns/$NAMESPACE" ] || { echo "node $NODE: no namespace $NAMESPACE" >&2; exit 1; }
  if [ -n "$(ip netns pids "$NAMESPACE")" ]; then
    return 0  # running already
  fi
  node_boot
}

# One action at a time per node (and per network): a provisioner left running by a Terraform
# that was killed must finish before the next run's action on the same node starts.
serialize() {
  mkdir -p "$STATE_DIR/locks"
  exec 9>"$STATE_DIR/locks/$1.lock"
  flock 9
}

case "${1:-}" in
  network-up) serialize network; network_up ;;
  network-down) serialize network; network_down ;;
  hosts) serialize network; write_hosts ;;
  node-up) serialize "$NODE"; node_up ;;
  node-down) serialize "$NODE"; node_down ;;
  node-stop) serialize "$NODE"; node_stop ;;
  node-start) serialize "$NODE"; node_start ;;
  *) echo "usage: node.sh network-up|network-down|hosts|node-up|node-down|node-stop|node-start" >&2; exit 2 ;;
esac
