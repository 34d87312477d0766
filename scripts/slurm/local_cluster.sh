#!/usr/bin/env bash
# A single-node Slurm on this machine, for trying submit.sh and for tests/slurm_test.cpp.
#   scripts/slurm/local_cluster.sh start  [--state-dir DIR] [--owner-pid PID]
#                                          munged + slurmctld + slurmd, waits for an idle node; with
#                                          --owner-pid, a watcher stops the cluster once PID has exited
#   scripts/slurm/local_cluster.sh stop   [--state-dir DIR]   stops the three daemons started from DIR
#   scripts/slurm/local_cluster.sh status [--state-dir DIR]   daemons alive? sinfo
#   scripts/slurm/local_cluster.sh env    [--state-dir DIR]   prints `export SLURM_CONF=...`
# Needs Debian's slurm-wlm and munge (scripts/setup.sh installs them) and root (SlurmUser=root).
# Everything lives under DIR (default /tmp/flea-slurm-$UID): its own munge key and socket, slurm.conf,
# state, spool, logs and pids, on free TCP ports; /etc/slurm and /etc/munge are never read or written.
# Clients find the cluster through SLURM_CONF=DIR/slurm.conf (start prints the export line).
# No cgroups, no accounting, no systemd: it runs in containers (tried under gVisor) as well as on hosts.
# Idempotent: start on a running cluster only checks it, stop on a stopped one does nothing.
set -euo pipefail

usage() { sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; }
die() { echo "local_cluster: $*" >&2; exit 1; }

cmd=${1:-}
[ $# -gt 0 ] && shift
state_dir=${FLEA_SLURM_STATE_DIR:-/tmp/flea-slurm-$(id -u)}
owner_pid=""
while [ $# -gt 0 ]; do
  case "$1" in
    --state-dir) [ $# -ge 2 ] || die "--state-dir needs a directory"; state_dir=$2; shift 2 ;;
    --state-dir=*) state_dir=${1#*=}; shift ;;
    --owner-pid) [[ ${2:-} =~ ^[0-9]+$ ]] || die "--owner-pid needs a process id"; owner_pid=$2; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "local_cluster: unknown option '$1' (try --help)" >&2; exit 2 ;;
  esac
done
case "$cmd" in
  start|stop|status|env) ;;
  -h|--help|help) usage; exit 0 ;;
  "") usage >&2; exit 2 ;;
  *) echo "local_cluster: unknown command '$cmd' (start|stop|status|env)" >&2; exit 2 ;;
esac

if [ ! -d "$state_dir" ]; then
  case "$cmd" in
    stop) exit 0 ;;  # nothing was started there
    status) echo "local_cluster: no cluster in $state_dir"; exit 1 ;;
  esac
  mkdir -p "$state_dir"
fi
state_dir=$(cd "$state_dir" && pwd)
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
conf=$state_dir/slurm.conf
munge_socket=$state_dir/run/munge.socket
export SLURM_CONF=$conf

# pid of a daemon from its pid file, empty when it is not running.
pid_of() {
  local f=$state_dir/run/$1.pid p
  [ -f "$f" ] || return 0
  p=$(cat "$f" 2>/dev/null || true)
  [[ $p =~ ^[0-9]+$ ]] && kill -0 "$p" 2>/dev/null || return 0
  # Only a process started for this dir (its command line names it): a stale pid file may hold a
  # pid that now belongs to someone else.
  local cmdline
  cmdline="$(tr '\0' ' ' <"/proc/$p/cmdline" 2>/dev/null) "
  if [[ $cmdline == *"$state_dir/"* || $cmdline == *"$state_dir "* ]]; then echo "$p"; fi
}

log_tails() {
  local f
  for f in "$state_dir"/log/*.log; do
    [ -f "$f" ] || continue
    echo "--- tail of $f"
    tail -n 15 "$f"
  done
}

stop_daemon() {
  local name=$1 p i
  p=$(pid_of "$name")
  [ -n "$p" ] || { rm -f "$state_dir/run/$name.pid"; return 0; }
  kill "$p" 2>/dev/null || true
  for i in $(seq 1 50); do  # up to 10 s, then SIGKILL
    kill -0 "$p" 2>/dev/null || break
    sleep 0.2
  done
  kill -0 "$p" 2>/dev/null && kill -9 "$p" 2>/dev/null || true
  rm -f "$state_dir/run/$name.pid"
  echo "local_cluster: stopped $name (pid $p)"
}

do_stop() {
  # The --owner-pid watcher ends by exec'ing this very stop: do not kill ourselves.
  local w
  w=$(pid_of watcher)
  if [ -n "$w" ] && [ "$w" != "$$" ]; then stop_daemon watcher >/dev/null; fi
  rm -f "$state_dir/run/watcher.pid"
  # Jobs still running belong to the slurmd being stopped; slurmd does not kill them on SIGTERM.
  if [ -n "$(pid_of slurmctld)" ] && command -v scancel >/dev/null; then
    timeout 10 scancel --full --quiet --user="$(id -un)" 2>/dev/null || true
    local i
    for i in $(seq 1 20); do  # let slurmd deliver the signals before it goes
      [ -z "$(timeout 5 squeue -h -o %i 2>/dev/null)" ] && break
      sleep 0.5
    done
  fi
  stop_daemon slurmd
  stop_daemon slurmctld
  stop_daemon munged
}

do_status() {
  local n up=0
  for n in munged slurmctld slurmd; do
    local p
    p=$(pid_of "$n")
    if [ -n "$p" ]; then echo "$n: running (pid $p)"; up=$((up + 1)); else echo "$n: not running"; fi
  done
  [ "$up" -eq 3 ] || return 1
  echo "SLURM_CONF=$conf"
  timeout 10 sinfo -N -o '%N %T %c %m %P' || return 1
}

# Two free TCP ports on localhost (slurmctld, slurmd), so a second cluster or a real one can coexist.
free_ports() {
  local py=python3
  [ -x /usr/bin/python3 ] && py=/usr/bin/python3
  "$py" - <<'EOF'
import socket
socks = []
for _ in range(2):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
EOF
}

write_conf() {
  local node hw cpus mem ports ctld_port slurmd_port plugin_dir
  node=$(hostname -s 2>/dev/null || hostname)
  hw=$(slurmd -C 2>/dev/null | head -n 1) || true
  [ -n "$hw" ] || die "slurmd -C printed nothing; cannot describe this node"
  # Slurm rejects a node whose hardware is below its configuration: copy what slurmd itself sees.
  cpus=$(sed -n 's/.*CPUs=\([0-9]*\).*/\1/p' <<<"$hw")
  mem=$(sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p' <<<"$hw")
  hw=${hw#NodeName=* }  # keep Boards/Sockets/Cores/Threads/RealMemory as slurmd reported them
  [ -n "$cpus" ] && [ -n "$mem" ] || die "cannot parse 'slurmd -C': $hw"
  read -r ctld_port slurmd_port <<<"$(free_ports)"
  cat >"$conf" <<EOF
# Written by scripts/slurm/local_cluster.sh: a one-node test cluster; everything under $state_dir.
ClusterName=flealocal
SlurmctldHost=$node(127.0.0.1)
SlurmctldPort=$ctld_port
SlurmdPort=$slurmd_port
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$munge_socket
StateSaveLocation=$state_dir/ctld
SlurmdSpoolDir=$state_dir/spool/%n
SlurmctldPidFile=$state_dir/run/slurmctld.pid
SlurmdPidFile=$state_dir/run/slurmd.pid
SlurmctldLogFile=$state_dir/log/slurmctld.log
SlurmdLogFile=$state_dir/log/slurmd.log
PlugStackConfig=$state_dir/plugstack.conf
SlurmctldDebug=info
SlurmdDebug=info
# No cgroups (containers rarely delegate them): track processes through /proc, bind nothing.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SwitchType=switch/none
MpiDefault=none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
MailProg=/bin/true
SlurmctldTimeout=30
SlurmdTimeout=60
InactiveLimit=0
MinJobAge=300
KillWait=10
Waittime=0
NodeName=$node NodeAddr=127.0.0.1 $hw State=UNKNOWN
PartitionName=lab Nodes=$node Default=YES MaxTime=INFINITE State=UP
EOF
  : >"$state_dir/plugstack.conf"  # no SPANK plugins (not the host's /etc/slurm/plugstack.conf)
  echo "$node" >"$state_dir/node_name"
}

start_munged() {
  [ -n "$(pid_of munged)" ] && return 0
  command -v munged >/dev/null || die "munged not found: apt-get install munge (scripts/setup.sh --deps)"
  mkdir -p "$state_dir/munge"
  chmod 0700 "$state_dir/munge"
  if [ ! -s "$state_dir/munge/munge.key" ]; then
    if command -v mungekey >/dev/null; then
      mungekey --create --keyfile="$state_dir/munge/munge.key" --force >/dev/null
    else
      dd if=/dev/urandom of="$state_dir/munge/munge.key" bs=1024 count=1 status=none
    fi
    chmod 0400 "$state_dir/munge/munge.key"
  fi
  # --force: the state dir may sit under a world-writable /tmp, which munged otherwise refuses.
  munged --force --socket="$munge_socket" --key-file="$state_dir/munge/munge.key" \
    --pid-file="$state_dir/run/munged.pid" --log-file="$state_dir/log/munged.log" \
    --seed-file="$state_dir/munge/munged.seed" ||
    { log_tails >&2; die "munged failed to start"; }
  local i
  for i in $(seq 1 50); do
    [ -S "$munge_socket" ] && break
    sleep 0.1
  done
  if ! munge -n --socket="$munge_socket" | unmunge --socket="$munge_socket" >/dev/null 2>&1; then
    log_tails >&2
    die "munged failed: a credential did not round-trip through $munge_socket"
  fi
}

do_start() {
  [ "$(id -u)" -eq 0 ] || die "needs root (the test cluster runs SlurmUser=root)"
  local b
  for b in slurmctld slurmd sinfo sbatch; do
    command -v "$b" >/dev/null || die "no $b binary: apt-get install slurm-wlm munge (scripts/setup.sh --deps)"
  done
  mkdir -p "$state_dir"/{run,log,ctld,spool}
  # A cluster from an earlier start in this dir: reuse it when whole, else restart it cleanly.
  if [ -f "$conf" ] && [ -n "$(pid_of munged)" ] && [ -n "$(pid_of slurmctld)" ] && [ -n "$(pid_of slurmd)" ]; then
    echo "local_cluster: already running in $state_dir"
  else
    do_stop >/dev/null
    write_conf
    start_munged
    local node
    node=$(cat "$state_dir/node_name")
    # -i: ignore state saved by an earlier run of this dir (jobs, node states).
    slurmctld -i -f "$conf" || { log_tails >&2; die "slurmctld failed to start"; }
    slurmd -f "$conf" -N "$node" || { log_tails >&2; die "slurmd failed to start"; }
  fi
  local node state i
  node=$(cat "$state_dir/node_name")
  for i in $(seq 1 120); do  # up to ~60 s
    state=$(timeout 5 sinfo -h -n "$node" -o '%T' 2>/dev/null | head -n 1 || true)
    case "$state" in
      idle|mixed|allocated) break ;;
      down*|drain*) timeout 5 scontrol update NodeName="$node" State=RESUME >/dev/null 2>&1 || true ;;
    esac
    sleep 0.5
  done
  case "$state" in
    idle|mixed|allocated) ;;
    *)
      {
        echo "local_cluster: node $node never became idle (last state: '${state:-no answer from slurmctld}')"
        timeout 5 scontrol show node "$node" 2>&1 | grep -E 'State|Reason' || true
        log_tails
      } >&2
      exit 1
      ;;
  esac
  if [ -n "$owner_pid" ] && [ -z "$(pid_of watcher)" ]; then
    # Detached, so a test killed by a timeout still leaves no daemons behind.
    setsid bash -c 'while kill -0 "$1" 2>/dev/null; do sleep 2; done; exec "$2" stop --state-dir "$3"' \
      local_cluster_watcher "$owner_pid" "$here/local_cluster.sh" "$state_dir" \
      >>"$state_dir/log/watcher.log" 2>&1 </dev/null &
    echo $! >"$state_dir/run/watcher.pid"
  fi
  echo "local_cluster: node $node is $state; partition lab"
  echo "export SLURM_CONF=$conf"
}

case "$cmd" in
  start) do_start ;;
  stop) do_stop ;;
  status) do_status ;;
  env) echo "export SLURM_CONF=$conf" ;;
esac
