"""Samplers' noise schedules."""

from .flow_match import FlowMatchConfig, FlowMatchEulerScheduler, calculate_shift

__all__ = ["FlowMatchConfig", "FlowMatchEulerScheduler", "calculate_shift"]
