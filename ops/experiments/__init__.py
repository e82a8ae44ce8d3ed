"""Experiment analysis: per-variant statistics from the event stream (``funnel experiments report``)."""
