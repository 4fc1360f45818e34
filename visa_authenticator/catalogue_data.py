"""An in-memory catalogue: validated records plus the indexes the queries use.

Built once per load of the file and never changed afterwards, so a reload swaps
one object for another and a reader never sees half of an update.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date

from .catalogue import Experiment, Instrument, Person, Proposal


@dataclass(frozen=True)
class CatalogueData:
    """Immutable snapshot of a catalogue, answering the `Catalogue` questions synchronously."""

    persons: tuple[Person, ...] = ()
    instruments: tuple[Instrument, ...] = ()
    proposal_list: tuple[Proposal, ...] = ()
    experiments: tuple[Experiment, ...] = ()
    # only honoured by the demo authenticator; never part of a Person
    demo_passwords: Mapping[str, str] = field(default_factory=dict, repr=False)
    # indexes, built by __post_init__
    _person: dict[str, Person] = field(init=False, repr=False, compare=False)
    _proposal: dict[str, Proposal] = field(init=False, repr=False, compare=False)
    _instrument: dict[str, Instrument] = field(init=False, repr=False, compare=False)
    _by_member: dict[str, tuple[Experiment, ...]] = field(init=False, repr=False, compare=False)
    _by_proposal: dict[str, tuple[Experiment, ...]] = field(init=False, repr=False, compare=False)
    _by_instrument: dict[str, tuple[Experiment, ...]] = field(
        init=False, repr=False, compare=False
    )
    _scientist_of: dict[str, tuple[Instrument, ...]] = field(
        init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        by_member: dict[str, list[Experiment]] = defaultdict(list)
        by_proposal: dict[str, list[Experiment]] = defaultdict(list)
        by_instrument: dict[str, list[Experiment]] = defaultdict(list)
        for e in sorted(self.experiments, key=lambda e: (e.start, e.id)):
            by_proposal[e.proposal_id].append(e)
            by_instrument[e.instrument_id].append(e)
            for member in e.team:
                by_member[member].append(e)
        scientist_of: dict[str, list[Instrument]] = defaultdict(list)
        for i in self.instruments:
            for s in i.scientists:
                scientist_of[s].append(i)
        index = {
            "_person": {p.id: p for p in self.persons},
            "_proposal": {p.id: p for p in self.proposal_list},
            "_instrument": {i.id: i for i in self.instruments},
            "_by_member": {k: tuple(v) for k, v in by_member.items()},
            "_by_proposal": {k: tuple(v) for k, v in by_proposal.items()},
            "_by_instrument": {k: tuple(v) for k, v in by_instrument.items()},
            "_scientist_of": {k: tuple(v) for k, v in scientist_of.items()},
        }
        for name, value in index.items():
            object.__setattr__(self, name, value)  # frozen: set the indexes once

    def person(self, person_id: str) -> Person | None:
        return self._person.get(person_id)

    def instrument(self, instrument_id: str) -> Instrument | None:
        return self._instrument.get(instrument_id)

    def proposal(self, proposal_id: str) -> Proposal | None:
        return self._proposal.get(proposal_id)

    def experiments_of(self, person_id: str) -> tuple[Experiment, ...]:
        return self._by_member.get(person_id, ())

    def instruments_of(self, person_id: str) -> tuple[Instrument, ...]:
        return self._scientist_of.get(person_id, ())

    def experiments_on(self, instrument_ids: Iterable[str]) -> tuple[Experiment, ...]:
        ids = dict.fromkeys(instrument_ids)
        return tuple(e for i in ids for e in self._by_instrument.get(i, ()))

    def experiments_of_proposals(self, proposal_ids: Iterable[str]) -> tuple[Experiment, ...]:
        ids = dict.fromkeys(proposal_ids)
        return tuple(e for p in ids for e in self._by_proposal.get(p, ()))

    def proposals(self, proposal_ids: Iterable[str]) -> tuple[Proposal, ...]:
        found = (self.proposal(p) for p in dict.fromkeys(proposal_ids))
        return tuple(p for p in found if p is not None)

    def open_proposals(self, today: date, limit: int) -> tuple[Proposal, ...]:
        public = [p for p in self.proposal_list if p.is_open_on(today)]
        public.sort(key=lambda p: (p.public_date, p.id), reverse=True)
        return tuple(public[: max(limit, 0)])
