"""Answering messages: one turn (:mod:`.turn`), one generation at a time per session
(:mod:`.worker`), and the deadlines the server holds every backend to (:mod:`.deadlines`)."""
