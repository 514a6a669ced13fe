"""The edgekit error tree: library code raises these, only the CLI turns them into messages and exit codes.

EdgekitError                 exit 2 unless said otherwise; the message is one line a user can act on
 ├── ConfigError              a config file or key is wrong (names the file and the key path)
 ├── InputError               a file, folder or option given by the user is unusable
 ├── ModelError               a model cannot be read, converted or run as asked
 ├── SourceError              a camera, stream or video cannot be opened or read
 ├── SinkError                a result destination (stdout file, MQTT broker) refuses or fails
 ├── DeviceError              an accelerator or the TFLite runtime itself is missing or broken
 ├── MissingExtra             an optional dependency is not installed (names the pip command)
 └── QualityGateError         exit 3: the conversion worked but missed a quality bar the user set
"""

from __future__ import annotations


class EdgekitError(Exception):
    """Base of every error edgekit reports to a user."""

    exit_code = 2

    def __init__(self, message: str) -> None:
        # One line: a message with newlines would be cut by log collectors and systemd's journal summary.
        super().__init__(" ".join(message.split()) if "\n" in message else message)

    @property
    def message(self) -> str:
        return str(self.args[0]) if self.args else ""


class ConfigError(EdgekitError):
    """A config file is unreadable, or a key in it is unknown, of the wrong type or out of range."""


class InputError(EdgekitError):
    """A path or option given by the user cannot be used as asked."""


class ModelError(EdgekitError):
    """A model cannot be read, converted or run."""


class SourceError(EdgekitError):
    """A frame source cannot be opened or has failed for good."""


class SinkError(EdgekitError):
    """A result sink cannot be opened or has failed for good."""


class DeviceError(EdgekitError):
    """An accelerator, its driver or the TFLite runtime is missing or unusable."""


class MissingExtra(EdgekitError):
    """An optional dependency is not installed; the message names what to install."""

    def __init__(self, what: str, extra: str, hint: str = "") -> None:
        command = hint or f"pip install 'edgekit[{extra}]'"
        super().__init__(f"{what} is not installed; install it with: {command}")


class QualityGateError(EdgekitError):
    """The result exists but is below a threshold the user asked for."""

    exit_code = 3
