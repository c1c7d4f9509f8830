"""The pure state machines: each takes data and a time and returns the next state and what
must be done. No I/O, no clock, no trio, so tests and hypothesis drive them directly."""
