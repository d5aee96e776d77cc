"""Multi-process start-up: ``jax.distributed.initialize`` from the command line's flags.

    python -m vsegjax.main ... --coordinator_address=HOST:PORT --num_processes=N --process_id=I

runs the same command as process ``I`` of ``N``; process 0 hosts the coordinator. With
none of the three flags, a machine with ``libtpu`` (a Cloud TPU VM) initialises by JAX's
own auto-detection and any other machine runs as one process. On CPU the cross-process
collectives are gloo's (XLA's CPU default has none).

JAX's coordination client aborts the whole process, with a C++ stack trace, when the
coordinator does not answer in time. So the checks here come first, in Python: the flags
are validated, a worker waits for the coordinator's port itself, and a watchdog prints
one line naming the address and the expected process count just before JAX would abort.
"""

from __future__ import annotations

import dataclasses
import glob
import importlib.util
import os
import socket
import sys
import threading
import time

import jax


@dataclasses.dataclass(frozen=True)
class ProcessFlags:
    coordinator_address: str | None = None
    num_processes: int | None = None
    process_id: int | None = None
    timeout_s: int = 300

    @property
    def given(self) -> bool:
        return any(v is not None for v in (self.coordinator_address, self.num_processes,
                                           self.process_id))


def _host_port(address: str) -> tuple[str, int]:
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"--coordinator_address={address!r}: expected HOST:PORT, e.g. "
                         f"10.0.0.2:8476")
    return host.strip("[]"), int(port)


def validate(flags: ProcessFlags) -> None:
    """Raises ValueError naming the flag at fault."""
    missing = [name for name in ("coordinator_address", "num_processes", "process_id")
               if getattr(flags, name) is None]
    if missing and len(missing) < 3:
        raise ValueError(f"multi-process start-up needs --coordinator_address, "
                         f"--num_processes and --process_id together; missing "
                         f"{', '.join('--' + m for m in missing)}")
    if missing:
        return
    _host_port(flags.coordinator_address)
    if flags.num_processes < 1:
        raise ValueError(f"--num_processes={flags.num_processes}: must be >= 1")
    if not 0 <= flags.process_id < flags.num_processes:
        raise ValueError(f"--process_id={flags.process_id} is out of range for "
                         f"--num_processes={flags.num_processes} (0..{flags.num_processes - 1})")
    if flags.timeout_s < 1:
        raise ValueError(f"--initialization_timeout={flags.timeout_s}: must be >= 1 s")


def wait_for_port(address: str, timeout_s: float) -> None:
    """Returns once ``address`` accepts TCP connections; raises TimeoutError naming it."""
    host, port = _host_port(address)
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with socket.create_connection((host, port), timeout=2.0):
                return
        except OSError as e:
            if time.monotonic() >= deadline:
                raise TimeoutError(
                    f"the coordinator at {address} did not answer within {timeout_s:.0f} s "
                    f"({e}); start process 0 there first, or fix --coordinator_address"
                ) from None
            time.sleep(0.5)


def _watchdog(flags: ProcessFlags, done: threading.Event) -> None:
    if not done.wait(flags.timeout_s):
        print(f"error: process {flags.process_id} of {flags.num_processes} gave up after "
              f"{flags.timeout_s} s at the coordinator {flags.coordinator_address}: not all "
              f"--num_processes={flags.num_processes} processes joined. Start every process "
              f"with the same --coordinator_address and --num_processes and a distinct "
              f"--process_id.", file=sys.stderr, flush=True)
        os._exit(2)


def use_gloo_on_cpu() -> None:
    """Cross-process collectives for the CPU backend (set before any backend starts)."""
    jax.config.update("jax_cpu_collectives_implementation", "gloo")


def on_cloud_tpu() -> bool:
    """True on a Cloud TPU VM: libtpu installed and TPU chips attached (``/dev/accel*`` on
    v4/v5e, ``/dev/vfio/<n>`` on v5p/v6e). libtpu alone is not enough: ``vsegjax.compile``
    installs it on CPU machines to compile for TPUs."""
    if importlib.util.find_spec("libtpu") is None:
        return False
    return bool(glob.glob("/dev/accel*") or glob.glob("/dev/vfio/[0-9]*"))


def initialize(flags: ProcessFlags) -> bool:
    """Joins the process group the flags describe; returns whether JAX is now
    multi-process (False: one process, nothing initialised)."""
    validate(flags)
    if not flags.given:
        if on_cloud_tpu():
            jax.distributed.initialize()  # worker list and ids from the TPU metadata
            return jax.process_count() > 1
        return False
    if flags.num_processes == 1:
        return False
    use_gloo_on_cpu()
    if flags.process_id != 0:
        wait_for_port(flags.coordinator_address, flags.timeout_s)
    done = threading.Event()
    threading.Thread(target=_watchdog, args=(flags, done), daemon=True).start()
    # JAX's own limit a little later than the watchdog's, so the readable line wins.
    jax.distributed.initialize(coordinator_address=flags.coordinator_address,
                               num_processes=flags.num_processes,
                               process_id=flags.process_id,
                               initialization_timeout=flags.timeout_s + 30)
    done.set()
    if jax.process_count() != flags.num_processes:
        raise RuntimeError(f"--num_processes={flags.num_processes} but JAX reports "
                           f"{jax.process_count()} processes")
    return True
