"""Ask the catalogue what the rules need to know about one person.

Five to six queries whatever the person's history, each a batch, so a SQL
provider answers a login in a handful of round trips.
"""

from __future__ import annotations

from datetime import date

from .catalogue import Catalogue
from .rules import Facts


async def gather_facts(
    catalogue: Catalogue, person_id: str, today: date, open_data_limit: int
) -> Facts | None:
    """Everything the rules need about this person, or None if the catalogue does not know them."""
    person = await catalogue.person(person_id)
    if person is None:
        return None
    team = await catalogue.experiments_of(person_id)
    instruments = await catalogue.instruments_of(person_id)
    on_instruments = (
        await catalogue.experiments_on(i.id for i in instruments) if instruments else ()
    )
    open_data = (
        await catalogue.open_proposals(today, open_data_limit) if open_data_limit > 0 else ()
    )
    known = {p.id for p in open_data}
    wanted = {e.proposal_id for e in team} | {e.proposal_id for e in on_instruments}
    fetched = await catalogue.proposals(sorted(wanted - known)) if wanted - known else ()
    proposals = tuple(fetched) + tuple(open_data)
    experiments = (
        await catalogue.experiments_of_proposals(sorted(p.id for p in proposals))
        if proposals
        else ()
    )
    return Facts(
        person=person,
        team_experiments=tuple(team),
        scientist_instruments=tuple(i.id for i in instruments),
        proposals=proposals,
        experiments=tuple(experiments),
    )
