"""User-facing errors.

Each kind of user mistake has its own type so the CLI can turn it into one clear line and a
documented exit code instead of a traceback. Anything that is *not* a RetrainError is a bug.
"""

from __future__ import annotations


class RetrainError(Exception):
    """Base class: a problem the user can fix; the message says what and how."""

    exit_code = 2


class ConfigError(RetrainError):
    """The policy file (or a command-line override) is missing, malformed or inconsistent."""


class DataError(RetrainError):
    """The data cannot be used: missing column, unusable type, NaN target, empty window."""


class UsageError(RetrainError):
    """The command's own arguments are wrong (`--as-of` outside the data, `--force` without a reason):
    the caller's typo, which nobody else is told of (not a `failed` notification)."""


class RegistryError(RetrainError):
    """The registry does not hold what was asked for: unknown model, version or stage."""


class ApprovalError(RetrainError):
    """`approve`/`reject` asked of a version that does not await a person's sign-off, or of a policy
    that asks for none (`validation.require_approval` off)."""


class TrackingServerError(RetrainError):
    """The tracking server cannot be reached."""


class LeaseHeldError(RetrainError):
    """Another cycle holds the lease on the registered model; not an error of the user's input."""

    exit_code = 3


class LeaseLostError(RetrainError):
    """This cycle's lease expired and another cycle took it over: it stops before writing more."""

    exit_code = 3


class HealthError(RetrainError):
    """Monitoring found downtime (unloadable model, data gap, slow predictions)."""

    exit_code = 4


class ModelError(RetrainError):
    """A model cannot be used: it does not load, or its input schema does not match the data."""


class TrainingError(RetrainError):
    """The training entry point failed, logged no model, or cannot be found or imported."""


class ServeError(RetrainError):
    """`serve` cannot start: no secret (or an unreadable or too short one), a port in use, a state
    folder that cannot be written, a folder to watch that is not one."""


class FleetError(RetrainError):
    """The fleet as a whole cannot run: no policy found where `--policies` points, two policies naming
    one registered model, a `--select` that is not KEY=VALUE. Refused before any model runs; a problem
    of one model's own policy is that model's row instead, and the others run."""


class ClusterError(RetrainError):
    """`--cluster` cannot be used: Dask's distributed package is not installed, no scheduler answers
    at the address, or it has no workers. Refused before any task runs."""
