"""Hubs carry a session's events to every socket on it: :mod:`.base` draws the interface and
the events, :mod:`.local` is the hub of one process."""
