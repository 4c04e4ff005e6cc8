"""Chaos: the devhost SIGKILLed at a step boundary and inside a long step of each workflow, then restarted."""
