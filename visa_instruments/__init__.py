"""The demo facility's instruments as EPICS IOCs (Channel Access, served by caproto).

Facility side, like the data: the hub will reach them through a gateway (issue 18), instances
never import this package. docs/instrument.md describes the PVs and the plan.
"""
