"""The catalogue read from a YAML file (the demo, and small facilities).

The file is re-read when it changes on disk, so an administrator editing it sees
the change at the next login or refresh without restarting the hub. A file that
cannot be read or parsed never replaces the last good version.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from datetime import UTC, date, datetime
from typing import ClassVar

from traitlets import Unicode

from .catalogue import Catalogue, CatalogueUnavailable, Experiment, Instrument, Person, Proposal
from .catalogue_data import CatalogueData
from .catalogue_yaml import CatalogueFormatError, load_yaml, parse_catalogue

Signature = tuple[int, int, int]
_MISSING: Signature = (-1, -1, -1)


class FileCatalogue(Catalogue):
    """Persons, instruments, proposals and experiments from one YAML file."""

    cacheable: ClassVar[bool] = False  # in memory already; a TTL cache would only delay edits

    path = Unicode(
        "",
        config=True,
        help="""Path of the YAML catalogue (schema: docs/catalogue.md).

        Re-read whenever its modification time or size changes. Relative paths
        are relative to the hub's working directory.
        """,
    )

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)
        self._data: CatalogueData | None = None
        self._signature: Signature | None = None
        self._loaded_at: datetime | None = None
        self._failed_signature: Signature | None = None
        self.problems: tuple[str, ...] = ()

    def _stat(self) -> Signature | None:
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    def data(self) -> CatalogueData:
        """The current catalogue, re-reading the file first if it changed."""
        if not self.path:
            raise CatalogueUnavailable("FileCatalogue.path is not set")
        signature = self._stat()
        if signature is None:
            if self._failed_signature != _MISSING:  # report once, not on every query
                self._failed_signature = _MISSING
                self._report_failure("cannot be read (missing or not accessible)")
        elif signature == self._signature:
            self._failed_signature = None
        elif signature != self._failed_signature:
            self._load(signature)
        if self._data is None:
            raise CatalogueUnavailable(f"catalogue {self.path} has never been loaded successfully")
        return self._data

    def _load(self, signature: Signature) -> None:
        try:
            with open(self.path, encoding="utf-8") as f:
                text = f.read()
            data, problems = parse_catalogue(load_yaml(text), self.path)
        except (OSError, UnicodeDecodeError, CatalogueFormatError) as e:
            self._failed_signature = signature
            self._report_failure(str(e))
            return
        self._data, self._signature, self._failed_signature = data, signature, None
        self._loaded_at = datetime.now(UTC)
        self.problems = tuple(problems)
        for problem in problems:
            self.log.warning("Catalogue: %s", problem)
        self.log.info(
            "Catalogue %s loaded: %d persons, %d instruments, %d proposals, %d experiments"
            " (%d problems)",
            self.path,
            len(data.persons),
            len(data.instruments),
            len(data.proposal_list),
            len(data.experiments),
            len(problems),
        )

    def _report_failure(self, reason: str) -> None:
        if self._data is None:
            self.log.error("Catalogue %s %s; no catalogue loaded yet", self.path, reason)
        else:
            self.log.error(
                "Catalogue %s %s; keeping the version loaded at %s",
                self.path,
                reason,
                self._loaded_at.isoformat(timespec="seconds") if self._loaded_at else "?",
            )

    async def person(self, person_id: str) -> Person | None:
        return self.data().person(person_id)

    async def experiments_of(self, person_id: str) -> tuple[Experiment, ...]:
        return self.data().experiments_of(person_id)

    async def instruments_of(self, person_id: str) -> tuple[Instrument, ...]:
        return self.data().instruments_of(person_id)

    async def experiments_on(self, instrument_ids: Iterable[str]) -> tuple[Experiment, ...]:
        return self.data().experiments_on(instrument_ids)

    async def experiments_of_proposals(
        self, proposal_ids: Iterable[str]
    ) -> tuple[Experiment, ...]:
        return self.data().experiments_of_proposals(proposal_ids)

    async def proposals(self, proposal_ids: Iterable[str]) -> tuple[Proposal, ...]:
        return self.data().proposals(proposal_ids)

    async def open_proposals(self, today: date, limit: int) -> tuple[Proposal, ...]:
        return self.data().open_proposals(today, limit)
