"""The stack's Ray credentials for one command: the mutual-TLS files and the token, gone afterwards.

Ray's gRPC is mutual TLS and every call carries the token (README "Encrypted Ray
traffic"): a tool on an operator's machine needs the cluster CA, the operators'
client certificate and its key as files, and the variables naming them.
`cluster_access(outputs)` writes the three files into a fresh owner-only directory
outside $HOME and yields the environment; `run_with_access` runs one command in it,
passes on the signals sent to this process (SIGINT, SIGTERM, SIGHUP), and removes the
directory however the command ends (a SIGKILL of this process leaves it behind).
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path
from typing import Iterator, Mapping

from components.render import tls
from scripts.ops.local_tls import write_private
from scripts.ops.ray_state import CLIENT_ADDRESS_ENV

CA_OUTPUT, CERT_OUTPUT, KEY_OUTPUT = "rayTlsCaCert", "rayTlsOperatorCert", "rayTlsOperatorKey"
TOKEN_OUTPUT, DASHBOARD_OUTPUT, CLIENT_OUTPUT = "rayToken", "dashboardUrl", "rayClientAddress"
REQUIRED_OUTPUTS = (DASHBOARD_OUTPUT, CLIENT_OUTPUT, TOKEN_OUTPUT, CA_OUTPUT, CERT_OUTPUT, KEY_OUTPUT)

MASKED = "[secret]"  # what `pulumi stack output --json` prints for a secret without --show-secrets
FORWARDED_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
CHILD_POLL_S = 1.0  # a lost SIGCHLD costs at most this


class AccessError(RuntimeError):
    pass


def required_outputs(outputs_json: str) -> dict[str, str]:
    """The outputs this needs, from `pulumi stack output --json --show-secrets`; an error naming
    every one that is missing or masked."""
    try:
        outputs = json.loads(outputs_json)
    except ValueError as error:
        raise AccessError(f"the stack outputs are not JSON ({error})") from None
    if not isinstance(outputs, dict):
        raise AccessError("the stack outputs are not a JSON object")
    missing = [name for name in REQUIRED_OUTPUTS if not isinstance(outputs.get(name), str) or not outputs[name]]
    if missing:
        raise AccessError(
            f"the stack has no output {', '.join(missing)} (deployed before Ray's TLS and token? `pulumi up` exports them)"
        )
    masked = [name for name in REQUIRED_OUTPUTS if outputs[name] == MASKED]
    if masked:
        raise AccessError(f"the stack output {', '.join(masked)} is masked: read the outputs with --show-secrets")
    return {name: outputs[name] for name in REQUIRED_OUTPUTS}


def private_base() -> Path:
    """Where the directory goes: the session's runtime directory (a tmpfs only this user reads)
    or the temporary directory, whichever is not under $HOME (where backups and syncs look)."""
    home = Path.home().resolve()
    for base in (os.environ.get("XDG_RUNTIME_DIR"), tempfile.gettempdir()):
        # HOME=/ (some service accounts) would rule out everything: it is no home to keep clear.
        if base and os.access(base, os.W_OK) and (home == Path("/") or not Path(base).resolve().is_relative_to(home)):
            return Path(base)
    raise AccessError(f"no writable temporary directory outside $HOME ({home}): set TMPDIR")


@contextlib.contextmanager
def cluster_access(outputs: Mapping[str, str]) -> Iterator[dict[str, str]]:
    """This process's environment plus Ray's TLS and token settings, the files they name in a
    0700 directory (files 0600) that is gone afterwards. RAY_ADDRESS stays if set, else the dashboard."""
    directory = Path(tempfile.mkdtemp(prefix="ray-cluster-access-", dir=private_base()))  # mode 0700
    try:
        for name, output in ((tls.CA_CERT, CA_OUTPUT), (tls.OPERATOR_CERT, CERT_OUTPUT), (tls.OPERATOR_KEY, KEY_OUTPUT)):
            write_private(directory / name, outputs[output].encode())
        env = {**os.environ, **tls.tls_env(str(directory), tls.OPERATOR_CERT, tls.OPERATOR_KEY)}
        env |= {
            "RAY_AUTH_MODE": "token",
            "RAY_AUTH_TOKEN": outputs[TOKEN_OUTPUT],  # Ray prefers it to RAY_AUTH_TOKEN_PATH and ~/.ray/auth_token
            # `ray job submit` and Ray's state API verify the dashboard's HTTPS proxy with requests.
            "REQUESTS_CA_BUNDLE": str(directory / tls.CA_CERT),
        }
        env.setdefault("RAY_ADDRESS", outputs[DASHBOARD_OUTPUT])
        env.setdefault(CLIENT_ADDRESS_ENV, outputs[CLIENT_OUTPUT])
        yield env
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def _sent_by_another_process(info: signal.struct_siginfo, child: subprocess.Popen) -> bool:
    """A signal a process sent to this one (kill, systemd, a supervisor), not one the command got
    too: the terminal's (Ctrl-C, hang-up) comes from the kernel to the whole foreground process
    group, the command included; one from the command itself goes back to nobody (as sudo does)."""
    return info.si_code <= 0 and info.si_pid != child.pid  # si_code <= 0: SI_USER, SI_QUEUE, SI_TKILL


def run_with_access(outputs: Mapping[str, str], argv: list[str]) -> int:
    """Run `argv` with the cluster's credentials; its exit status (-N: killed by signal N).

    The forwarded signals and SIGCHLD stay blocked in this process until the directory is
    gone (waited for, never handled asynchronously), so no signal cuts the clean-up short;
    the command starts with this process's usual mask. OSError: `argv` could not be started."""
    waited = {*FORWARDED_SIGNALS, signal.SIGCHLD}
    usual = signal.pthread_sigmask(signal.SIG_BLOCK, waited)
    try:
        with cluster_access(outputs) as env:
            child = subprocess.Popen(argv, env=env, preexec_fn=lambda: signal.pthread_sigmask(signal.SIG_SETMASK, usual))
            while child.poll() is None:
                info = signal.sigtimedwait(waited, CHILD_POLL_S)
                if info is not None and info.si_signo != signal.SIGCHLD and _sent_by_another_process(info, child):
                    child.send_signal(info.si_signo)
        # The command has ended: what arrived meanwhile (the Ctrl-C it died of, too) has nothing left to stop.
        while signal.sigtimedwait(waited, 0) is not None:
            pass
        return child.returncode
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, usual)


def exit_as(returncode: int) -> int:
    """End like the command: killed by a signal, by the same signal (a shell then stops its
    script as it would for the command); else its exit status."""
    if returncode >= 0:
        return returncode
    signal.signal(-returncode, signal.SIG_DFL)
    os.kill(os.getpid(), -returncode)
    return 128 - returncode  # a signal whose default is not to end the process: the shells' number
