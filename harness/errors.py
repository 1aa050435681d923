"""The harness's exceptions. A failure inside a cell is data (a stored reason); these are raised
where the harness itself cannot go on, and the CLI turns them into one message and an exit code."""

from __future__ import annotations


class HarnessError(Exception):
    """Base of every error the harness raises on purpose."""

    exit_code = 1


class ConfigError(HarnessError):
    """Bad input: a file, a key or a value the harness cannot accept. Exit code 2."""

    exit_code = 2

    def __init__(self, source: str, key: str | None, message: str):
        self.source = str(source)
        self.key = key
        self.message = message
        where = f"{self.source}: {key}" if key else self.source
        super().__init__(f"{where}: {message}")


class ConversionError(HarnessError):
    """A model could not be turned into a variant (stored on the cell, not raised to the user)."""


class DeviceError(HarnessError):
    """A device could not do what was asked."""


class DeviceUnreachable(DeviceError):
    """The device does not answer (no connection, no such host, no such binary)."""


class MachineLost(DeviceUnreachable):
    """The machine that holds the device is gone (a lab host that left the Ray cluster): its cells
    fail with this reason, the rest of the sweep goes on, and `sweep --resume` measures them again."""


class DeviceTimeout(DeviceError):
    """A step on the device ran past its timeout and was stopped."""


class RuntimeMissing(DeviceError):
    """The device has no TFLite runtime (or delegate library) the runner can use."""

    def __init__(self, message: str, install_hint: str | None = None):
        self.install_hint = install_hint
        super().__init__(f"{message}; install with: {install_hint}" if install_hint else message)


class SweepInterrupted(HarnessError):
    """The coordinator could not go on (the store cannot be written, say). The run is marked
    `interrupted`; its stored cells stay, and `harness sweep --resume RUN` measures the rest."""

    def __init__(self, run_id: str, cause: BaseException):
        self.run_id, self.cause = run_id, cause
        what = f"{type(cause).__name__}: {cause}" if str(cause) else type(cause).__name__
        super().__init__(f"run {run_id} interrupted by {what}; its finished cells are stored, and "
                         f"`harness sweep --resume {run_id}` measures the rest")


class RegressionDetected(HarnessError):
    """The gate found a latency regression. Exit code 1."""
