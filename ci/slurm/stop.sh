#!/usr/bin/env bash
# Stop the local CI SLURM cluster started by ci/slurm/start.sh.
# Order: slurmd, slurmctld, slurmdbd, mariadb, munged. Not running is not an error.
# State (/var/lib/slurm-ci: accounting DB, job state) is kept; start.sh resumes from it.
# Pass --purge to also delete that state and the logs (next start.sh starts from scratch).
set -uo pipefail

RUN=/run/slurm-ci

stop_pidfile() {   # <name> <pidfile>
  local name=$1 pidf=$2 pid i
  [[ -s $pidf ]] || { echo "[slurm-ci] $name: not running"; return 0; }
  pid=$(cat "$pidf")
  if ! kill -0 "$pid" 2>/dev/null; then
    echo "[slurm-ci] $name: not running (stale pid file)"; rm -f "$pidf"; return 0
  fi
  kill -TERM "$pid" 2>/dev/null
  for ((i = 0; i < 100; i++)); do          # up to 30 s
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.3
  done
  if kill -0 "$pid" 2>/dev/null; then
    echo "[slurm-ci] $name (pid $pid) ignored SIGTERM for 30 s: SIGKILL"
    kill -KILL "$pid" 2>/dev/null
  fi
  rm -f "$pidf"
  echo "[slurm-ci] $name: stopped"
}

stop_pidfile slurmd    "$RUN/slurmd.pid"
stop_pidfile slurmctld "$RUN/slurmctld.pid"
stop_pidfile slurmdbd  "$RUN/slurmdbd.pid"
stop_pidfile mariadb   /run/mysqld/mariadb.pid
stop_pidfile munged    /run/munge/munged.pid

if [[ ${1:-} == --purge ]]; then
  rm -rf /var/lib/slurm-ci /var/log/slurm-ci "$RUN"
  echo "[slurm-ci] purged /var/lib/slurm-ci and /var/log/slurm-ci"
fi
exit 0
