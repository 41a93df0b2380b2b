"""What every scenario gets: the run's sizes (full or quick), a scratch folder, tokens, the
CPU plan, and the shared seeded database (seeded once per run, on first use)."""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from bench import seed, servers
from bench.disk import CommitTimes, commit_times
from bench.postgres import fresh_schema
from bench.servers import CpuPlan, Server
from bench.tokens import Tokens


@dataclass(frozen=True)
class Profile:
    """How big and how long: ``FULL`` for figures, ``QUICK`` to see that everything runs."""

    name: str
    #: Rounds per figure (bare and chatbot take turns), and seconds of load per round.
    rounds: int
    duration: float
    roundtrip_levels: tuple[int, ...]
    big_messages: int
    small_messages: int
    many_sessions: int
    stream_levels: tuple[int, ...]
    #: Words in a streamed message (the echo streams one chunk per word, plus "Echo: ").
    stream_words: int
    frames_streams: int
    frames_words: int
    idle_levels: tuple[int, ...]
    #: Seconds the idle sockets are held before they are counted.
    hold: float
    handshake_concurrency: int
    fsync_commits: int
    #: The branch listing: messages of each session, and older branches along the branched one.
    branch_messages: int
    branch_forks: int
    #: The search corpus: users, sessions of each, messages of each session.
    search_users: int
    search_sessions: int
    search_session_messages: int
    #: On PostgreSQL (``--postgres``): connection levels of ``cluster``; messages sent, one
    #: at a time, for ``fanout``'s replies and for its streamed replies.
    cluster_levels: tuple[int, ...] = (1, 10, 100)
    fanout_messages: int = 300
    fanout_streams: int = 50


FULL = Profile(
    name="full",
    rounds=3,
    duration=3.0,
    roundtrip_levels=(1, 10, 100, 500),
    big_messages=1_000_000,
    small_messages=10_000,
    many_sessions=1_000,
    stream_levels=(1, 100),
    stream_words=20,
    frames_streams=20,
    frames_words=300,
    idle_levels=(1_000, 5_000, 10_000),
    hold=3.0,
    handshake_concurrency=10,
    fsync_commits=500,
    branch_messages=10_000,
    branch_forks=500,
    search_users=1_000,
    search_sessions=10,
    search_session_messages=100,
)

QUICK = Profile(
    name="quick",
    rounds=1,
    duration=0.5,
    roundtrip_levels=(1, 10, 100),
    big_messages=20_000,
    small_messages=2_000,
    many_sessions=100,
    stream_levels=(1, 100),
    stream_words=10,
    frames_streams=5,
    frames_words=100,
    idle_levels=(100, 200, 400),
    hold=0.2,
    handshake_concurrency=5,
    fsync_commits=50,
    branch_messages=2_000,
    branch_forks=100,
    search_users=20,
    search_sessions=5,
    search_session_messages=50,
    cluster_levels=(1, 10),
    fanout_messages=20,
    fanout_streams=5,
)


@dataclass
class Context:
    """The run's shared state, handed to every scenario."""

    profile: Profile
    workdir: Path
    cpus: CpuPlan
    #: The PostgreSQL of the run (``--postgres``), for the scenarios that need one.
    postgres: str | None = None
    tokens: Tokens = field(default_factory=Tokens)
    _history: seed.History | None = None
    _commit_times: CommitTimes | None = None
    _folders: Iterator[int] = field(default_factory=itertools.count)

    def folder(self, name: str) -> Path:
        """A new, empty folder of the scratch folder."""
        path = self.workdir / f"{next(self._folders):02d}-{name}"
        path.mkdir(parents=True)
        return path

    def chatbot(
        self, folder: Path, database: Path | None = None, synchronous: str | None = None
    ) -> Server:
        """A chatbot server (not started) on ``database``, by default a new one in ``folder``."""
        url = servers.sqlite_url(database or folder / "chat.db", synchronous)
        return servers.chatbot_server(folder, url, self.tokens.secret)

    def chatbot_on(
        self, folder: Path, database_url: str, name: str, *, memory_limits: bool = False
    ) -> Server:
        """A chatbot server (not started) named ``name`` on ``database_url``, for instance
        one of several processes on one PostgreSQL schema (see :meth:`schema`)."""
        return servers.chatbot_server(
            folder, database_url, self.tokens.secret, name=name, memory_limits=memory_limits
        )

    def schema(self, name: str) -> contextlib.AbstractAsyncContextManager[str]:
        """A fresh schema on the run's PostgreSQL for the block: its database URL."""
        if self.postgres is None:
            raise RuntimeError("this scenario runs on PostgreSQL: give --postgres URL")
        return fresh_schema(self.postgres, name)

    def bare(self, folder: Path) -> Server:
        """A bare server (not started)."""
        return servers.bare_server(folder)

    @contextlib.contextmanager
    def running(self, *started: Server) -> Iterator[None]:
        """The servers running, on the servers' CPU, for the time of the block."""
        with servers.running(self.cpus.server, *started):
            yield

    def migrated(self, folder: Path) -> Path:
        """A new database in ``folder`` with chatbot's schema."""
        database = folder / "chat.db"
        servers.migrate(folder, database, self.tokens.secret)
        return database

    def history(self) -> seed.History:
        """The seeded database of big-session and history, made on first use."""
        if self._history is None:
            folder = self.folder("seeded")
            profile = self.profile
            self._history = seed.seed_history(
                self.migrated(folder),
                profile.big_messages,
                profile.small_messages,
                profile.many_sessions,
            )
        return self._history

    def commit_times(self) -> CommitTimes:
        """The disk's time for one SQLite commit here, measured on first use."""
        if self._commit_times is None:
            self._commit_times = commit_times(self.folder("fsync"), self.profile.fsync_commits)
        return self._commit_times
