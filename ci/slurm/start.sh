#!/usr/bin/env bash
# Stand up a real one-node SLURM cluster (slurmctld + slurmd + slurmdbd with
# MariaDB accounting, munge auth, one fake GPU as GRES) on this machine.
#
#   sudo ci/slurm/start.sh        # idempotent; ~1 s when already running
#   ci/slurm/stop.sh              # stops all daemons, keeps state
#
# Targets Debian 12 (slurm-wlm 22.05) in containers without systemd/cgroups.
# Environment knobs (all optional):
#   SLURM_CI_CLUSTER   cluster name              (default: flowci)
#   SLURM_CI_ACCOUNT   default account           (default: flowrestore)
#   SLURM_CI_USERS     extra users to associate  (default: $SUDO_USER, if any)
#   SLURM_CI_MEM_HEADROOM_MB  memory kept back from slurm (default: 2048)
#   SLURM_CI_GPU_TYPE  type of the one fake GPU, i.e. gpu_model (default: fake)
#   SLURM_CI_TASK_PLUGIN  task/affinity (default) or task/none where
#                      sched_setaffinity is not permitted
# State: /var/lib/slurm-ci   Logs: /var/log/slurm-ci   Runtime: /run/slurm-ci
set -Eeuo pipefail

CLUSTER=${SLURM_CI_CLUSTER:-flowci}
ACCOUNT=${SLURM_CI_ACCOUNT:-flowrestore}
EXTRA_USERS=${SLURM_CI_USERS:-${SUDO_USER:-}}
HEADROOM_MB=${SLURM_CI_MEM_HEADROOM_MB:-2048}
GPU_TYPE=${SLURM_CI_GPU_TYPE:-fake}
TASK_PLUGIN=${SLURM_CI_TASK_PLUGIN:-task/affinity}

STATE=/var/lib/slurm-ci
LOGS=/var/log/slurm-ci
RUN=/run/slurm-ci
CONF=/etc/slurm
DBDATA=$STATE/mysql
DBSOCK=/run/mysqld/mysqld.sock       # default socket: libmariadb (slurmdbd) finds it
DB_NAME=slurm_acct_db
DB_USER=slurm
DB_PASS=slurm-ci-password           # local CI only, socket-only server (no TCP)

exec 3>&2   # die() writes here, so it stays visible inside redirected checks
log()  { printf '[slurm-ci] %s\n' "$*"; }
die()  {
  printf '[slurm-ci] ERROR: %s\n' "$*" >&3
  printf '[slurm-ci] logs: %s/{slurmctld,slurmd,slurmdbd,mariadb,munged}.log\n' "$LOGS" >&3
  for f in slurmctld slurmd slurmdbd mariadb munged; do
    [[ -s $LOGS/$f.log ]] && { echo "---- tail $LOGS/$f.log" >&3; tail -n 8 "$LOGS/$f.log" >&3; }
  done
  exit 1
}
trap 'die "command failed at line $LINENO: $BASH_COMMAND"' ERR

[[ $(id -u) -eq 0 ]] || die "must run as root (try: sudo $0)"

# wait_for <seconds> <description> <command...>
wait_for() {
  local t=$1 what=$2; shift 2
  local end=$((SECONDS + t))
  until "$@" >/dev/null 2>&1; do
    (( SECONDS < end )) || die "timed out after ${t}s waiting for $what"
    sleep 0.3
  done
}
pid_alive() { [[ -s $1 ]] && kill -0 "$(cat "$1")" 2>/dev/null; }
# alive_and <daemon> <pidfile> <check...>: fail fast if the daemon died after forking
alive_and() {
  local d=$1 pidf=$2; shift 2
  "$@" && return 0
  if [[ -s $pidf ]] && ! pid_alive "$pidf"; then die "$d exited (see $LOGS/$d.log)"; fi
  return 1
}
# Daemons get stdio on their log file and every other inherited fd closed: slurm and
# munge daemonize but keep fds > 2 open, and a daemon left holding a caller's pipe makes
# `start.sh | tail` or subprocess.run(capture_output=True) hang forever.
close_fds() {
  local fd
  for fd in /proc/$BASHPID/fd/*; do
    fd=${fd##*/}; if ((fd > 2)); then eval "exec $fd>&-" 2>/dev/null || true; fi
  done
}
# launch <logfile> <cmd...>: for programs that daemonize themselves
launch() { local logf=$1; shift; ( close_fds; exec "$@" ) </dev/null >>"$logf" 2>&1; }
# spawn <logfile> <cmd...>: for programs that do not; the background process execs the
# program itself, so nothing of ours stays behind holding fds
spawn() { local logf=$1; shift; ( close_fds; exec setsid "$@" ) </dev/null >>"$logf" 2>&1 & SPAWNED=$!; }

# ---------------------------------------------------------------- packages
need_pkgs=()
for pair in slurmctld:slurmctld slurmd:slurmd slurmdbd:slurmdbd sbatch:slurm-client \
            munged:munge mariadbd:mariadb-server; do
  command -v "${pair%%:*}" >/dev/null 2>&1 || need_pkgs+=("${pair#*:}")
done
if ((${#need_pkgs[@]})); then
  log "installing slurm-wlm munge slurmdbd mariadb-server (missing: ${need_pkgs[*]})"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -q slurm-wlm munge slurmdbd mariadb-server >/dev/null \
    || { apt-get update -q >/dev/null && apt-get install -y -q slurm-wlm munge slurmdbd mariadb-server >/dev/null; } \
    || die "apt-get install failed"
fi

mkdir -p "$STATE"/{ctld,d,dbd} "$LOGS" "$RUN" "$CONF" /run/mysqld
chown mysql:mysql /run/mysqld

# ---------------------------------------------------------------- munge
if [[ ! -s /etc/munge/munge.key ]]; then
  log "creating munge key"
  mkdir -p /etc/munge
  dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
fi
mkdir -p /run/munge /var/lib/munge /var/log/munge
chown munge:munge /etc/munge /etc/munge/munge.key /run/munge /var/lib/munge /var/log/munge
chmod 0700 /etc/munge; chmod 0400 /etc/munge/munge.key; chmod 0755 /run/munge
touch "$LOGS/munged.log"; chown munge:munge "$LOGS/munged.log"
if ! munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
  log "starting munged"
  rm -f /run/munge/munged.pid
  launch "$LOGS/munged.log" runuser -u munge -- /usr/sbin/munged --force --log-file="$LOGS/munged.log" \
    --pid-file=/run/munge/munged.pid || die "munged failed to start"
  wait_for 20 "munge" bash -c 'munge -n | unmunge'
fi

# ---------------------------------------------------------------- mariadb
if [[ ! -d $DBDATA/mysql ]]; then
  log "initialising MariaDB datadir $DBDATA"
  mkdir -p "$DBDATA"; chown mysql:mysql "$DBDATA"
  mariadb-install-db --user=mysql --datadir="$DBDATA" --auth-root-authentication-method=socket \
    --skip-test-db >"$LOGS/mariadb-install.log" 2>&1 || die "mariadb-install-db failed ($LOGS/mariadb-install.log)"
fi
db_up() { mariadb-admin --socket="$DBSOCK" ping; }
db_up_or_dead() { db_up || { kill -0 "$SPAWNED" 2>/dev/null || die "mariadbd exited"; return 1; }; }
if ! db_up >/dev/null 2>&1; then
  log "starting MariaDB"
  touch "$LOGS/mariadb.log"; chown mysql:mysql "$LOGS/mariadb.log"
  spawn "$LOGS/mariadb.log" mariadbd --no-defaults --user=mysql --datadir="$DBDATA" \
    --socket="$DBSOCK" --pid-file=/run/mysqld/mariadb.pid --skip-networking \
    --log-error="$LOGS/mariadb.log" --innodb-buffer-pool-size=1G \
    --innodb-lock-wait-timeout=900 --innodb-log-file-size=64M --innodb-use-native-aio=0
  wait_for 60 "MariaDB" db_up_or_dead
fi
mariadb --socket="$DBSOCK" -u root <<SQL || die "creating $DB_NAME failed"
CREATE DATABASE IF NOT EXISTS $DB_NAME;
CREATE USER IF NOT EXISTS '$DB_USER'@'localhost' IDENTIFIED BY '$DB_PASS';
GRANT ALL ON $DB_NAME.* TO '$DB_USER'@'localhost';
FLUSH PRIVILEGES;
SQL

# ---------------------------------------------------------------- configs
HOST=$(hostname -s)
read -r CPUS BOARDS SOCKETS CORES THREADS REALMEM < <(slurmd -C | awk '/^NodeName/ {
  for (i = 1; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] }
  print v["CPUs"], v["Boards"], v["SocketsPerBoard"], v["CoresPerSocket"], v["ThreadsPerCore"], v["RealMemory"] }')
[[ -n ${CPUS:-} && -n ${REALMEM:-} && -n ${THREADS:-} ]] || die "could not read node hardware from 'slurmd -C'"
MEM=$(( REALMEM > HEADROOM_MB * 2 ? REALMEM - HEADROOM_MB : REALMEM / 2 ))
# Fake GPU: a char device named nvidia0 (really /dev/null's 1:3, so opening it is harmless).
# With File= slurmd binds it like a real GPU and jobs get CUDA_VISIBLE_DEVICES=0; if mknod
# is not permitted (rootless containers) fall back to a count-only GRES.
GRES_FILE=$STATE/dev/nvidia0
if [[ ! -c $GRES_FILE ]]; then
  mkdir -p "$STATE/dev"; rm -f "$GRES_FILE"
  mknod -m 0666 "$GRES_FILE" c 1 3 2>/dev/null || GRES_FILE=
fi
if [[ -n $GRES_FILE ]]; then GRES_LINE="NodeName=$HOST Name=gpu Type=$GPU_TYPE File=$GRES_FILE"
else GRES_LINE="NodeName=$HOST Name=gpu Type=$GPU_TYPE Count=1"; fi

changed=()
# install_conf <path> <mode> ; content on stdin; records name if content changed
install_conf() {
  local dst=$1 mode=$2 tmp; tmp=$(mktemp)
  cat >"$tmp"
  if [[ -f $dst ]] && cmp -s "$tmp" "$dst"; then rm -f "$tmp"; return 0; fi
  install -m "$mode" -o root -g root "$tmp" "$dst"; rm -f "$tmp"
  changed+=("$(basename "$dst")")
}

install_conf "$CONF/slurm.conf" 0644 <<EOF
# generated by ci/slurm/start.sh -- local one-node CI cluster
ClusterName=$CLUSTER
SlurmctldHost=$HOST
AuthType=auth/munge
CredType=cred/munge
SlurmUser=root
SlurmdUser=root
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=$TASK_PLUGIN
ReturnToService=2
SwitchType=switch/none
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/d
SlurmctldPidFile=$RUN/slurmctld.pid
SlurmdPidFile=$RUN/slurmd.pid
SlurmctldLogFile=$LOGS/slurmctld.log
SlurmdLogFile=$LOGS/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
SchedulerType=sched/backfill
SchedulerParameters=bf_interval=5
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=1024
GresTypes=gpu
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStorageEnforce=associations,limits
AccountingStorageTRES=gres/gpu,gres/gpu:$GPU_TYPE
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=30
JobCompType=jobcomp/none
# keep sbatch --comment in accounting: snakemake's slurm plugin puts rule and wildcards there
AccountingStoreFlags=job_comment
MinJobAge=300
KillWait=10
InactiveLimit=0
Waittime=0
SlurmctldTimeout=30
SlurmdTimeout=60
NodeName=$HOST CPUs=$CPUS Boards=$BOARDS SocketsPerBoard=$SOCKETS CoresPerSocket=$CORES ThreadsPerCore=$THREADS RealMemory=$MEM Gres=gpu:$GPU_TYPE:1 State=UNKNOWN
PartitionName=main Nodes=$HOST Default=YES MaxTime=INFINITE State=UP
PartitionName=gpu  Nodes=$HOST Default=NO  MaxTime=INFINITE State=UP
EOF

install_conf "$CONF/gres.conf" 0644 <<EOF
# generated by ci/slurm/start.sh -- one fake GPU (no hardware behind it)
$GRES_LINE
EOF

install_conf "$CONF/slurmdbd.conf" 0600 <<EOF
# generated by ci/slurm/start.sh
AuthType=auth/munge
DbdHost=localhost
SlurmUser=root
PidFile=$RUN/slurmdbd.pid
LogFile=$LOGS/slurmdbd.log
DebugLevel=info
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageLoc=$DB_NAME
StorageUser=$DB_USER
StoragePass=$DB_PASS
EOF

# ---------------------------------------------------------------- daemons
restart_if_changed() {   # <daemon> <pidfile> <conf...>
  local d=$1 pidf=$2 c; shift 2
  for c in "$@"; do
    if [[ " ${changed[*]} " == *" $c "* ]] && pid_alive "$pidf"; then
      log "$c changed: restarting $d"
      local pid; pid=$(cat "$pidf")
      kill "$pid" 2>/dev/null || true
      wait_for 30 "$d to stop" bash -c "! kill -0 $pid"
      rm -f "$pidf"; return
    fi
  done
}
restart_if_changed slurmdbd  "$RUN/slurmdbd.pid"  slurmdbd.conf
restart_if_changed slurmctld "$RUN/slurmctld.pid" slurm.conf gres.conf
restart_if_changed slurmd    "$RUN/slurmd.pid"    slurm.conf gres.conf

dbd_up() { sacctmgr -n -P show cluster format=cluster; }
if ! pid_alive "$RUN/slurmdbd.pid"; then
  log "starting slurmdbd"
  rm -f "$RUN/slurmdbd.pid"  # stale from an earlier boot: read before the new daemon rewrites it, it looks like a crash
  launch "$LOGS/slurmdbd.log" slurmdbd || die "slurmdbd failed to start"
fi
wait_for 60 "slurmdbd" alive_and slurmdbd "$RUN/slurmdbd.pid" dbd_up

# accounting objects (each add is skipped when present)
# (output captured first: `sacctmgr | grep -q` can SIGPIPE sacctmgr under pipefail)
if ! grep -qx "$CLUSTER" <<<"$(sacctmgr -n -P show cluster format=cluster)"; then
  sacctmgr -i add cluster "$CLUSTER" >/dev/null || die "sacctmgr add cluster failed"
fi
if ! grep -qx "$ACCOUNT" <<<"$(sacctmgr -n -P show account "$ACCOUNT" format=account)"; then
  sacctmgr -i add account "$ACCOUNT" cluster="$CLUSTER" description="flowrestore CI" \
    organization=ci >/dev/null || die "sacctmgr add account failed"
fi
for u in root $EXTRA_USERS; do
  id "$u" >/dev/null 2>&1 || { log "skipping unknown user $u"; continue; }
  if ! grep -qx "$u" <<<"$(sacctmgr -n -P show assoc cluster="$CLUSTER" account="$ACCOUNT" user="$u" format=user)"; then
    sacctmgr -i add user "$u" account="$ACCOUNT" cluster="$CLUSTER" >/dev/null \
      || die "sacctmgr add user $u failed"
  fi
  if [[ $(sacctmgr -n -P show user "$u" format=defaultaccount) != "$ACCOUNT" ]]; then
    sacctmgr -i modify user where name="$u" set defaultaccount="$ACCOUNT" >/dev/null || true
  fi
done

if ! pid_alive "$RUN/slurmctld.pid"; then
  log "starting slurmctld"
  rm -f "$RUN/slurmctld.pid"  # stale from an earlier boot: read before the new daemon rewrites it, it looks like a crash
  launch "$LOGS/slurmctld.log" slurmctld || die "slurmctld failed to start"
fi
wait_for 60 "slurmctld" alive_and slurmctld "$RUN/slurmctld.pid" scontrol ping
if ! pid_alive "$RUN/slurmd.pid"; then
  log "starting slurmd"
  rm -f "$RUN/slurmd.pid"  # stale from an earlier boot: read before the new daemon rewrites it, it looks like a crash
  launch "$LOGS/slurmd.log" slurmd || die "slurmd failed to start"
fi

node_ready() {
  local st; st=$(sinfo -h -n "$HOST" -o '%T' | head -n1)
  case $st in
    idle|mixed|allocated|completing) return 0 ;;
    down*|drain*|fail*) scontrol update nodename="$HOST" state=resume >/dev/null 2>&1 || true; return 1 ;;
    *) return 1 ;;
  esac
}
wait_for 60 "node $HOST to become idle in sinfo" alive_and slurmd "$RUN/slurmd.pid" node_ready
wait_for 30 "sacct" sacct -n -X -S now-1minute

trap - ERR
log "cluster '$CLUSTER' up: node $HOST CPUs=$CPUS RealMemory=${MEM}MB gres=gpu:$GPU_TYPE:1, partitions main (default), gpu; account $ACCOUNT"
sinfo -o '%P %a %D %T %c %m %G'
