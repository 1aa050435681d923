"""Commands a lost connection may have left running on a device, and how they are found and killed.

sshd does not kill a command without a tty when its client disappears, and adbd notices a dead
Wi-Fi link late: after a connection is lost mid-command, the command may still be running when
the harness reconnects, and a retry would measure beside it. So every command a remote transport
runs gets a nonce of its own, exported into its environment as `HARNESS_RUN_ID=<nonce>` and so
inherited by everything it starts; and until the harness has seen the command end, the device
remembers it (`Orphan`). Before the device runs anything else, `SCRIPT` (POSIX sh, run over the
new connection) kills every process whose environment carries that nonce, with its process
group, and waits until they are gone.

The pid a command reports (SSH's `harness-remote-pid:` line, ADB's pid file) names its process
group's leader, but it is only a hint: it is killed (with its group) when its own environment or
command line still names the nonce, so a pid reused since the command ended is never killed, and
a command whose pid never arrived is found all the same. This reads /proc/PID/environ, which
every Linux board (Raspberry Pi OS, Jetson, Mendel, Android) has for its user's own processes;
where it is missing, the leader's group is killed unverified, and without a leader every later
command on the device fails (`DeviceError`), since nothing proves the command has ended.

One window is left open by design: between the remote shell starting and it `exec`ing the
command, the marker is in the shell's command line but not yet in an environment. That lasts
milliseconds, while a reap comes at least a back-off and a reconnect after the loss.
"""

from __future__ import annotations

from dataclasses import dataclass

from harness.errors import DeviceError

RUN_ENV = "HARNESS_RUN_ID"
WAIT_S = 5.0  # how long killed processes may take to disappear before the device is not trusted
STATUS = "harness-reap:"

# $1: the nonce; $2: the pid of the command's group leader, "" when unknown. Prints one status
# line: `killed: PID...` (none when nothing was left), `alive: PID...` (still there after WAIT_S
# of SIGKILLs: a process stuck in the kernel), or `noproc` (no /proc to search, no leader given).
# Exits 0 only for `killed`. A zombie's environ and cmdline read empty: it counts as gone.
SCRIPT = f"""n=$1 leader=$2 killed= i=0
if [ ! -r /proc/self/environ ]; then
  [ -n "$leader" ] || {{ echo {STATUS}noproc; exit 1; }}
  kill -9 -"$leader" 2>/dev/null; echo {STATUS}killed: "$leader"; exit 0
fi
while :; do
  pids=$(grep -ls "{RUN_ENV}=$n" /proc/[0-9]*/environ | cut -d/ -f3)
  if [ -n "$leader" ] && [ "$leader" != $$ ] && grep -qs "$n" "/proc/$leader/environ" "/proc/$leader/cmdline"; then
    pids="$leader $pids"
  fi
  [ -n "$pids" ] || break
  [ $i -lt {int(WAIT_S * 10)} ] || {{ echo {STATUS}alive: $pids; exit 1; }}
  for p in $pids; do kill -9 -"$p" 2>/dev/null; kill -9 "$p" 2>/dev/null; done
  killed="$killed $pids" i=$((i + 1))
  sleep 0.1
done
echo {STATUS}killed:$killed
"""


@dataclass(frozen=True)
class Orphan:
    """A command the harness has not seen end: `name` for messages, `nonce` in its environment,
    `leader` its group leader's pid when that arrived, `why` it may still run."""

    name: str
    nonce: str
    leader: str | None = None
    why: str = "cut off by the lost connection"

    @property
    def what(self) -> str:
        return f"the {self.name} {self.why}"


def export(nonce: str) -> str:
    """The shell words that put the nonce into the environment of what runs next."""
    return f"export {RUN_ENV}={nonce}"


def cannot_kill(orphan: Orphan, exc: BaseException) -> str:
    """Why an attempt fails without running its command: the orphan could not be reached."""
    return f"cannot kill {orphan.what}, and nothing runs beside it: {exc}"


def outcome(device: str, orphan: Orphan, output: str) -> str:
    """The message to log for SCRIPT's output. DeviceError when the orphan may still be running."""
    lines = [line.strip() for line in output.splitlines() if line.strip().startswith(STATUS)]
    status = lines[-1][len(STATUS):] if lines else ""
    what = orphan.what
    if status.startswith("killed:"):
        pids = sorted(set(status[len("killed:"):].split()), key=int)
        if not pids:
            return f"{device}: {what} had already ended"
        return f"{device}: killed {what} (pid {', '.join(pids)}, with its process group)"
    if status.startswith("alive:"):
        raise DeviceError(f"{device}: {what} survived SIGKILL for {WAIT_S:g} s (pid "
                          f"{', '.join(status[len('alive:'):].split())}); nothing more runs beside it")
    if status == "noproc":
        raise DeviceError(f"{device}: {what} may still run and cannot be found (no /proc/PID/environ "
                          "on the device, no pid reported); nothing more runs beside it")
    tail = " | ".join(output.strip().splitlines()[-3:]) or "(no output)"
    raise DeviceError(f"{device}: could not look for {what}: {tail}")
