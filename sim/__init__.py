"""The world and the time: SimPy kernel, MCU model, virtual sleeper, runner and CLI."""
