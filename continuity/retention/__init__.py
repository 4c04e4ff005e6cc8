"""Retention: the pure planner, legal holds, and applying a plan."""
