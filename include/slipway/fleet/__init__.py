"""Fleet upgrades in waves: the fleet file, the wave decisions, the fleet report."""

from slipway.fleet.model import Fleet, FleetError, load_fleet, parse_fleet
from slipway.fleet.waves import Action, ClusterRecord, FleetPlan, next_action, plan_fleet, stage_waves

__all__ = [
    "Action",
    "ClusterRecord",
    "Fleet",
    "FleetError",
    "FleetPlan",
    "load_fleet",
    "next_action",
    "parse_fleet",
    "plan_fleet",
    "stage_waves",
]
