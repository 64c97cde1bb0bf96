# offload's remote launch wrapper (src/runner/remote.rs): run as
#   sh -c SCRIPT offload-launch MODE PROCESSOR ARG...
# on the remote side, by srun (MODE slurm) or by ssh (MODE ssh). It finds PROCESSOR (a path,
# or a name looked up as offload-NAME in OFFLOAD_PROCESSOR_PATH, then PATH), says
# on stderr that it started (or why it cannot), and runs it on the same stdin and stdout.
# Its lines on stderr start with "offload-launch: " and the host strips them from the job's.
#
# slurm: it execs the processor, so that Slurm's step tracking holds it; srun and scancel
# deliver signals. ssh: it stays as a guard. A TERM to it (`ssh HOST kill -TERM PID`, a second
# channel over the same connection) goes on to the processor; when the processor ends it says
# "ended CODE" and kills what is left of its process group; and when its parent (the sshd of
# this connection) goes away, because the connection dropped or the local ssh was killed, a
# watcher kills the whole group at once.
mode=$1; p=$2; shift 2
host=$(uname -n)
case $p in
*/*) q=$p ;;
*)
    q=
    IFS=:
    for d in ${OFFLOAD_PROCESSOR_PATH:-}; do
        if [ -n "$d" ] && [ -f "$d/offload-$p" ] && [ -x "$d/offload-$p" ]; then q=$d/offload-$p; break; fi
    done
    unset IFS
    [ -n "$q" ] || q=$(command -v "offload-$p") || q=
    ;;
esac
if [ -z "$q" ] || [ ! -f "$q" ] || [ ! -x "$q" ]; then
    echo "offload-launch: unavailable $host: no executable processor $p (looked for offload-$p in OFFLOAD_PROCESSOR_PATH and PATH)" >&2
    exit 127
fi
if [ "$mode" = slurm ]; then
    echo "offload-launch: started $host $$ ${SLURM_JOB_ID:-}.${SLURM_STEP_ID:-}" >&2
    exec "$q" "$@"
fi

# A background command would get /dev/null for stdin (and dash ignores "<&0"): pass it by fd 3.
exec 3<&0
"$q" "$@" <&3 3<&- &
exec 3<&-
job=$!
echo "offload-launch: started $host $$" >&2
trap 'kill -TERM $job 2>/dev/null' TERM
sh -c 'trap "" TERM; while kill -0 "$1" 2>/dev/null; do sleep 0.2; done; kill -KILL 0' watch "$PPID" </dev/null >/dev/null 2>&1 &
while :; do
    wait $job
    rc=$?
    kill -0 $job 2>/dev/null || break
done
echo "offload-launch: ended $rc" >&2
kill -KILL 0
