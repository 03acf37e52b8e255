"""The migration's refusals: one ``field: reason`` line per problem, before anything changes."""

from __future__ import annotations


class MigrationError(ValueError):
    """A migration input or precondition was refused.

    :param problems: ``(field, reason)`` pairs, in the order they were found.
    :param what: what was refused (``migration request``, ``slipway_migration connection``, ...).
    """

    def __init__(self, problems: list[tuple[str, str]], what: str = "migration") -> None:
        self.problems = tuple(problems)
        self.what = what
        count = len(self.problems)
        lines = [f"{what} refused ({count} problem{'s' if count != 1 else ''}):"]
        lines += [f"  {field}: {reason}" for field, reason in self.problems]
        super().__init__("\n".join(lines))

    def __reduce__(self) -> tuple[type[MigrationError], tuple[list[tuple[str, str]], str]]:
        return type(self), (list(self.problems), self.what)

    @property
    def fields(self) -> list[str]:
        return [field for field, _ in self.problems]


class ChecksumMismatch(RuntimeError):
    """Objects whose normalised checksum differs between source and target (or that are missing)."""

    def __init__(self, mismatches: list[str]) -> None:
        self.mismatches = list(mismatches)
        super().__init__(
            f"{len(self.mismatches)} object(s) differ between source and target: "
            + "; ".join(self.mismatches)
        )


class NotAvailable(RuntimeError):
    """Workloads that did not become available on the target in time."""
