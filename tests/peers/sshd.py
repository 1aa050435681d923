"""A real OpenSSH server for tests, optionally alone in a network namespace behind a veth link.

`start_sshd(workdir)` writes an sshd_config, ed25519 host and user keys, authorized_keys and a
known_hosts file into `workdir`, runs `/usr/sbin/sshd -D -E <log> -f <config>` and returns an
`SSHHost` once the port accepts TCP connections. With `netns=True` sshd runs in a fresh namespace
`harness-<pid>-<n>` reached over a veth pair (host side 10.X.Y.1/30, namespace side 10.X.Y.2/30),
so `link_down()` can cut the link as a pulled cable would. No pytest here: tests/conftest.py wraps it.

Killing: sshd forks one child per connection and that child calls setsid(), as does the child
running the user's command, so neither stays in the listener's process group and `os.killpg`
would leave open connections alive. sshd is therefore started as `unshare --pid --fork
--kill-child --mount-proc sshd ...`: it is the init of its own PID namespace, and when it dies the
kernel kills every process left in that namespace and reaps them before unshare (our child)
returns. So `kill()` is one SIGKILL, and when it returns every connection is closed. The namespace
has its own /proc, as a board has: the pids a session's shell prints are the ones it finds in
/proc and can kill. This needs root, as do the network namespaces and sshd's /run/sshd.
"""

from __future__ import annotations

import atexit
import functools
import getpass
import itertools
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

NETNS_PORT = 2222      # a fresh namespace holds nothing else, so any fixed port is free in it
_counter = itertools.count(1)
_live: dict[int, SSHHost] = {}   # id() -> host running or holding a namespace, for the atexit cleanup


def sshd_binary() -> str | None:
    """Absolute path of the OpenSSH server, or None when it is not installed."""
    path = shutil.which("sshd", path=os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/usr/local/sbin"]))
    return os.path.abspath(path) if path else None


def _run(*cmd: str) -> str:
    """Run a command and return its output; RuntimeError with its stderr when it fails."""
    done = subprocess.run(cmd, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    if done.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed ({done.returncode}): {done.stderr.strip()}")
    return done.stdout


@functools.lru_cache(maxsize=None)
def netns_supported() -> str | None:
    """None when a network namespace with a veth pair can be made here, else why not (for pytest.skip)."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    if not shutil.which("ip"):
        return "the `ip` command (iproute2) is missing"
    ns, veth = f"harness-probe-{os.getpid()}", f"hp{os.getpid()}"
    try:
        _run("ip", "netns", "add", ns)
        try:
            _run("ip", "link", "add", veth, "type", "veth", "peer", "name", veth + "n", "netns", ns)
        finally:
            _run("ip", "netns", "del", ns)      # deleting the namespace deletes the veth pair too
    except RuntimeError as exc:
        return str(exc)
    return None


@dataclass
class SSHHost:
    """A running (or stopped) sshd; see the module docstring."""
    name: str
    host: str
    port: int
    user: str
    identity_file: Path
    known_hosts: Path
    host_key_pub: Path
    workdir: Path
    netns: str | None
    chroot: Path | None
    _veth: str | None = field(default=None, repr=False)       # host side; the namespace side adds "n"
    _proc: subprocess.Popen | None = field(default=None, init=False, repr=False)   # unshare
    _net_made: bool = field(default=False, init=False, repr=False)

    def _end(self, graceful: bool) -> None:
        """End sshd, the init of its PID namespace: the kernel then SIGKILLs everything else in it."""
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        try:                                            # unshare's one child: sshd
            inits = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
        except OSError:                                 # no CONFIG_PROC_CHILDREN: signal unshare instead,
            inits = []                                  # whose --kill-child passes a SIGKILL on
        inits = [int(pid) for pid in inits] or [proc.pid]
        for sig in ([signal.SIGTERM] if graceful else []) + [signal.SIGKILL]:
            for pid in inits:
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:                # already gone
                    pass
            try:
                proc.wait(timeout=5)                      # unshare returns once its namespace is empty
                return
            except subprocess.TimeoutExpired:
                continue                                  # SIGTERM ignored: SIGKILL next
        proc.wait()

    def kill(self) -> None:
        """SIGKILL sshd, and so every per-connection child: open connections drop at once. (unshare
        then logs a harmless "sigprocmask unblock failed" as it fails to re-raise SIGKILL.)"""
        self._end(graceful=False)

    def stop(self) -> None:
        """SIGTERM sshd (SIGKILL after 5 s; its sessions die with it), wait, remove any namespace.
        Idempotent; restart() may follow."""
        self._end(graceful=True)
        self._net_down()
        _live.pop(id(self), None)

    def restart(self) -> None:
        """Start sshd (again) on the same address, port and keys; waits until it accepts connections."""
        self._end(graceful=True)
        _live[id(self)] = self
        self._net_up()
        log = self.workdir / "sshd.log"
        cmd = ["unshare", "--pid", "--fork", "--kill-child", "--mount-proc", sshd_binary() or "/usr/sbin/sshd",
               "-D", "-E", str(log), "-f", str(self.workdir / "sshd_config")]
        if self.netns:
            cmd = ["ip", "netns", "exec", self.netns, *cmd]     # ip execs unshare: no process between
        with open(log, "ab") as early:               # what is printed before sshd opens its log
            self._proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=early, stderr=early,
                                          start_new_session=True)
        deadline = time.monotonic() + 10
        while self._proc.poll() is None:
            try:
                socket.create_connection((self.host, self.port), timeout=0.5).close()
                return
            except OSError:
                if time.monotonic() > deadline:
                    self._end(graceful=False)
                    raise RuntimeError(f"sshd on {self.host}:{self.port} not reachable in 10 s:\n"
                                       f"{self.log_text()[-2000:]}") from None
                time.sleep(0.05)
        raise RuntimeError(f"sshd exited with {self._proc.returncode}:\n{self.log_text()[-2000:]}")

    def _net_up(self) -> None:
        if not self.netns or self._net_made:
            return
        self._net_made = True                        # from here on, _net_down has something to undo
        ns, veth, inner, prefix = self.netns, self._veth, self._veth + "n", self.host.rsplit(".", 1)[0]
        for cmd in (f"netns add {ns}", f"link add {veth} type veth peer name {inner} netns {ns}",
                    f"addr add {prefix}.1/30 dev {veth}", f"link set {veth} up",
                    f"-n {ns} addr add {prefix}.2/30 dev {inner}", f"-n {ns} link set {inner} up",
                    f"-n {ns} link set lo up"):
            _run("ip", *cmd.split())

    def _net_down(self) -> None:
        if not self._net_made:
            return
        subprocess.run(["ip", "link", "del", self._veth], capture_output=True)   # absent if half-made
        subprocess.run(["ip", "netns", "del", self.netns], capture_output=True)
        if self.netns in _run("ip", "netns", "list").split():
            raise RuntimeError(f"network namespace {self.netns} could not be deleted")
        self._net_made = False

    def _link(self, state: str) -> None:
        if not self.netns:
            raise RuntimeError(f"{self.name} has no network namespace, so no link to set {state}")
        _run("ip", "-n", self.netns, "link", "set", self._veth + "n", state)

    def link_down(self) -> None:
        """Cut the link by setting the namespace's end of the veth down: the host's end keeps its
        route, so packets vanish and connects time out. (Setting the host's end down drops that
        route and packets leak out by the default route, where something may even answer.)"""
        self._link("down")

    def link_up(self) -> None:
        """Restore the link cut by link_down(), forgetting the failed ARP entry that the cut left
        (else connects fail with "No route to host" for a few seconds)."""
        self._link("up")
        _run("ip", "neigh", "flush", "dev", self._veth)

    def log_text(self) -> str:
        """sshd's log so far (LogLevel VERBOSE), "" before it exists."""
        log = self.workdir / "sshd.log"
        return log.read_text(errors="replace") if log.exists() else ""

    def inventory_entry(self, name: str, **extra) -> dict:
        """An inventory device entry reaching this server over SSH."""
        return {"name": name, "transport": "ssh", "host": self.host, "port": self.port, "user": self.user,
                "identity_file": str(self.identity_file), "known_hosts": str(self.known_hosts), **extra}


def _keypair(private: Path | None, dest: Path) -> Path:
    """The private key path of `private` (given as the key or its .pub), or a new ed25519 key at dest."""
    if private is not None:
        private = Path(private).resolve()
        return private.with_suffix("") if private.suffix == ".pub" else private
    if not dest.exists():
        _run("ssh-keygen", "-t", "ed25519", "-N", "", "-q", "-C", dest.name, "-f", str(dest))
    return dest


def _free_subnet(n: int) -> str:
    """The first three octets of a 10.X.Y.0/30 unused on this host (its .1 and .2 are the link ends)."""
    used = _run("ip", "-4", "-o", "addr", "show")
    for step in range(64 * 256):
        idx = (os.getpid() * 16 + n + step) % (64 * 256)
        prefix = f"10.{192 + idx // 256}.{idx % 256}"
        if f" {prefix}." not in used:
            return prefix
    raise RuntimeError("no free 10.192-255.Y.0/30 subnet")


def start_sshd(workdir: Path, *, name: str = "sshd", netns: bool = False, chroot: Path | None = None,
               authorized_key: Path | None = None, host_key: Path | None = None) -> SSHHost:
    """Start sshd serving the current user with public-key authentication only; see the module docstring.

    authorized_key: a private key (or its .pub) to authorize instead of generating one, so that
    several hosts share one user key. host_key: a private host key (or its .pub) to serve instead
    of a new one, e.g. to show a client a known host with a changed key. chroot: ChrootDirectory
    for every session; sshd refuses it unless every component of the path, from / down, is owned
    by root and not writable by group or others (so not below /tmp). Only the in-process
    `internal-sftp` subsystem works in an empty chroot; commands need a shell inside it.
    """
    if not sshd_binary() or not shutil.which("unshare"):
        raise RuntimeError("sshd or unshare is not installed (Debian: openssh-server, util-linux)")
    if os.geteuid() != 0:
        raise RuntimeError("start_sshd needs root (PID namespace, /run/sshd)")
    workdir = Path(workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    os.makedirs("/run/sshd", mode=0o755, exist_ok=True)       # sshd's privilege separation directory
    n = next(_counter)
    if netns:       # names unique per process and host; a veth name must stay within 15 characters
        address, port = f"{_free_subnet(n)}.2", NETNS_PORT
        ns, veth = f"harness-{os.getpid()}-{n}", f"hv{os.getpid()}x{n}"
    else:           # bind port 0 to have the kernel pick a free port (free again once closed)
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            address, port = "127.0.0.1", probe.getsockname()[1]
        ns = veth = None
    key = workdir / "ssh_host_ed25519_key"
    if host_key is not None and _keypair(host_key, key) != key:   # copied: sshd wants it private (0600)
        for suffix in ("", ".pub"):
            shutil.copyfile(f"{_keypair(host_key, key)}{suffix}", f"{key}{suffix}")
        key.chmod(0o600)
    _keypair(None, key)
    identity = _keypair(authorized_key, workdir / "id_ed25519")
    (workdir / "authorized_keys").write_text(Path(f"{identity}.pub").read_text())
    hostspec = address if port == 22 else f"[{address}]:{port}"
    key_type, key_data = Path(f"{key}.pub").read_text().split()[:2]
    (workdir / "known_hosts").write_text(f"{hostspec} {key_type} {key_data}\n")
    config = [f"ListenAddress {address}", f"Port {port}", f"HostKey {key}", f"PidFile {workdir / 'sshd.pid'}",
              "UsePAM no", "PasswordAuthentication no", "KbdInteractiveAuthentication no",
              "PubkeyAuthentication yes", f"AuthorizedKeysFile {workdir / 'authorized_keys'}", "StrictModes no",
              "PermitRootLogin prohibit-password", "Subsystem sftp internal-sftp", "MaxSessions 50",
              "MaxStartups 50", "LogLevel VERBOSE",
              # bash sources ~/.bashrc for a command sent over SSH only when it is a top-level shell
              # (shell.c: run_by_ssh && shell_level < 2). This host's root ~/.bashrc runs `pyenv
              # init`, whose rehash lock, left behind when a test kills a session mid-rc, stalls
              # every later login for a minute: the test servers keep the machine's dotfiles out.
              "SetEnv SHLVL=1"]
    chroot = Path(chroot).resolve() if chroot is not None else None
    if chroot is not None:
        config.append(f"ChrootDirectory {chroot}")
    (workdir / "sshd_config").write_text("\n".join(config) + "\n")
    host = SSHHost(name=name, host=address, port=port, user=getpass.getuser(), identity_file=identity,
                   known_hosts=workdir / "known_hosts", host_key_pub=Path(f"{key}.pub"), workdir=workdir,
                   netns=ns, chroot=chroot, _veth=veth)
    try:
        host.restart()
    except BaseException:
        host.stop()                                   # also removes a half-made namespace
        raise
    return host


@atexit.register
def _stop_all() -> None:
    """Stop what a test left running, so an aborted run leaves no sshd and no namespace behind."""
    for host in list(_live.values()):
        try:
            host.stop()
        except (OSError, RuntimeError, subprocess.SubprocessError) as exc:
            print(f"tests.peers.sshd: could not stop {host.name}: {exc}", file=sys.stderr)
