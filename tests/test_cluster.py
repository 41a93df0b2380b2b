"""Two ``chatbot serve`` processes on one PostgreSQL: whatever holds in one process holds
across both. Each test starts two real servers on different ports sharing a fresh schema."""

from __future__ import annotations

import contextlib
import json
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect
from websockets.typing import Subprotocol

from tests.conftest import bearer, expect_close, make_token, recv_json, wait_for
from tests.pg_server import PostgresServer, needs_postgres_binaries
from tests.postgres import fresh_schema, run_sql
from tests.processes import ServeProcess

WORDS = " ".join(f"w{i}" for i in range(40))


class Cluster:
    def __init__(self, a: ServeProcess, b: ServeProcess, url: str) -> None:
        self.a, self.b, self.url = a, b, url


@contextlib.contextmanager
def two_processes(
    tmp_path: Path, delay: float = 0.05, url: str | None = None, **env: str
) -> Iterator[Cluster]:
    (tmp_path / "chatbot.toml").write_text(f'[backends.echo]\ntype = "echo"\ndelay = {delay}\n')
    with contextlib.nullcontext(url) if url else fresh_schema() as url:
        settings = {
            "CHATBOT_DATABASE_URL": url,
            "CHATBOT_CONFIG": str(tmp_path / "chatbot.toml"),
            "CHATBOT_PROCESS_TIMEOUT": "2",
            **env,
        }
        (tmp_path / "a").mkdir()
        (tmp_path / "b").mkdir()
        with (
            ServeProcess(tmp_path / "a", **settings) as a,
            ServeProcess(tmp_path / "b", **settings) as b,
        ):
            yield Cluster(a, b, url)


def socket(server: ServeProcess, user: str = "alice", **params: str) -> ClientConnection:
    query = "&".join(f"{k}={v}" for k, v in params.items())
    # The protocol's subprotocol: every frame has its type and reply_to, as a client that
    # sends ids gets them.
    return connect(
        f"{server.ws_url}?{query}",
        additional_headers=bearer(make_token(user)),
        subprotocols=[Subprotocol("chatbot.v1")],
        open_timeout=10,
    )


def new_session(server: ServeProcess, user: str = "alice") -> str:
    response = httpx.post(f"{server.url}/api/sessions", headers=bearer(make_token(user)), json={})
    assert response.status_code == 201, response.text
    session_id: str = response.json()["session_id"]
    return session_id


def history(server: ServeProcess, session_id: str, user: str = "alice") -> list[dict[str, Any]]:
    response = httpx.get(
        f"{server.url}/api/sessions/{session_id}/messages?limit=100",
        headers=bearer(make_token(user)),
    )
    assert response.status_code == 200, response.text
    messages: list[dict[str, Any]] = response.json()["messages"]
    return messages


def frames_until(ws: ClientConnection, done: Any, timeout: float = 20) -> list[dict[str, Any]]:
    """Every frame up to and including the first for which ``done(frame)``."""
    frames = []
    while True:
        frame = recv_json(ws, timeout=timeout)
        frames.append(frame)
        if done(frame):
            return frames


def is_reply(client_id: str) -> Any:
    return lambda f: f.get("type") in ("message", "error") and f.get("reply_to") == client_id


def test_a_reply_generated_on_one_process_reaches_sockets_on_the_other(tmp_path: Path) -> None:
    with two_processes(tmp_path) as cluster:
        session_id = new_session(cluster.a)
        with (
            socket(cluster.a, session_id=session_id) as sender,
            socket(cluster.b, session_id=session_id, stream="1") as streaming,
            socket(cluster.b, session_id=session_id) as plain,
        ):
            sender.send(json.dumps({"message": WORDS, "id": "m1"}))
            mine = frames_until(sender, is_reply("m1"))
            seen = frames_until(streaming, is_reply("m1"))
            other = frames_until(plain, is_reply("m1"))
        final = mine[-1]
        assert final["type"] == "message" and final["message"] == f"Echo: {WORDS}"
        # The plain socket on the other process gets exactly the reply frame.
        assert other == [final]
        # The streaming one gets the deltas, which add up to the reply, then the reply.
        deltas = [f for f in seen if f.get("type") == "delta"]
        assert len(deltas) >= 2
        assert "".join(f["delta"] for f in deltas) == final["message"]
        assert seen[-1] == final


def test_a_session_is_answered_once_at_a_time_in_the_order_sent_across_processes(
    tmp_path: Path,
) -> None:
    with two_processes(tmp_path, delay=0.02) as cluster:
        session_id = new_session(cluster.a)
        with (
            socket(cluster.a, session_id=session_id) as on_a,
            socket(cluster.b, session_id=session_id) as on_b,
            socket(cluster.b, session_id=session_id, stream="1") as watcher,
        ):
            on_a.send(json.dumps({"message": "first " + WORDS, "id": "q1"}))
            # Sent to the other process while the first is being answered there.
            frames_until(watcher, lambda f: f.get("type") == "delta")
            on_b.send(json.dumps({"message": "second", "id": "q2"}))
            on_b.send(json.dumps({"message": "third", "id": "q3"}))
            frames = frames_until(watcher, is_reply("q3"))
            print("ON_B", on_b.recv(timeout=1))
        finals = [f for f in frames if f.get("type") == "message"]
        print([f for f in frames if f.get("type") != "delta"])
        assert [f["reply_to"] for f in finals] == ["q1", "q2", "q3"]
        # One at a time: no delta of a reply arrives before the reply before it is done.
        current = "q1"
        for frame in frames:
            if frame.get("type") == "delta":
                assert frame["reply_to"] == current
            elif frame.get("type") == "message":
                current = {"q1": "q2", "q2": "q3", "q3": "-"}[frame["reply_to"]]
        stored = history(cluster.b, session_id)
        assert [m["content"] for m in stored if m["role"] == "user"] == [
            "first " + WORDS, "second", "third",
        ]  # fmt: skip
        # Each reply follows its own question.
        for question, reply in zip(stored[::2], stored[1::2], strict=True):
            assert reply["content"] == f"Echo: {question['content']}"


def test_a_cancel_sent_to_one_process_stops_the_reply_generated_on_the_other(
    tmp_path: Path,
) -> None:
    with two_processes(tmp_path, delay=0.2) as cluster:
        session_id = new_session(cluster.a)
        with (
            socket(cluster.a, session_id=session_id, stream="1") as on_a,
            socket(cluster.b, session_id=session_id) as on_b,
        ):
            on_a.send(json.dumps({"message": WORDS, "id": "long"}))
            frames_until(on_a, lambda f: f.get("type") == "delta")
            on_b.send(json.dumps({"type": "cancel"}))
            final = frames_until(on_b, is_reply("long"))[-1]
        assert final["type"] == "message"
        assert final["status"] == "cancelled"
        assert len(final["message"]) < len(f"Echo: {WORDS}")
        (reply,) = [m for m in history(cluster.a, session_id) if m["role"] == "assistant"]
        assert reply["status"] == "cancelled"


def test_deleting_a_session_on_one_process_closes_its_sockets_on_the_other(
    tmp_path: Path,
) -> None:
    with two_processes(tmp_path) as cluster:
        session_id = new_session(cluster.a)
        with socket(cluster.b, session_id=session_id) as on_b:
            on_b.send(json.dumps({"type": "ping"}))
            assert recv_json(on_b) == {"type": "pong"}  # subscribed by now
            response = httpx.delete(
                f"{cluster.a.url}/api/sessions/{session_id}", headers=bearer(make_token("alice"))
            )
            assert response.status_code == 204
            assert expect_close(on_b) == (4404, "session not found")


def test_a_client_id_sent_to_both_processes_is_answered_once(tmp_path: Path) -> None:
    with two_processes(tmp_path, delay=0.05) as cluster:
        session_id = new_session(cluster.a)
        with (
            socket(cluster.a, session_id=session_id) as on_a,
            socket(cluster.b, session_id=session_id, stream="1") as on_b,
        ):
            on_a.send(json.dumps({"message": WORDS, "id": "same"}))
            frames_until(on_b, lambda f: f.get("type") == "delta")
            # The client lost its connection and sends it again, to the other process.
            on_b.send(json.dumps({"message": WORDS, "id": "same"}))
            first = frames_until(on_a, is_reply("same"))[-1]
            on_b_frames = frames_until(on_b, is_reply("same"))
            # Once answered, the same id again gets the stored reply, not a new one.
            on_b.send(json.dumps({"message": WORDS, "id": "same"}))
            again = frames_until(on_b, is_reply("same"))[-1]
        assert first["type"] == "message"
        assert on_b_frames[-1] == first
        assert again["message_id"] == first["message_id"]
        stored = history(cluster.a, session_id)
        assert [(m["role"], m["content"]) for m in stored] == [
            ("user", WORDS), ("assistant", f"Echo: {WORDS}"),
        ]  # fmt: skip


def test_a_socket_opening_mid_reply_on_the_other_process_gets_the_text_so_far(
    tmp_path: Path,
) -> None:
    with two_processes(tmp_path, delay=0.05) as cluster:
        session_id = new_session(cluster.a)
        with (
            socket(cluster.a, session_id=session_id, stream="1") as on_a,
            socket(cluster.b, session_id=session_id, stream="1") as watcher,
        ):
            on_a.send(json.dumps({"message": WORDS, "id": "mid"}))
            # Once the other process has heard of "w5", a socket opening there mid-reply
            # starts from all of that.
            so_far = ""
            while "w5" not in so_far:
                so_far += "".join(f.get("delta", "") for f in frames_until(watcher, lambda f: True))
            with socket(cluster.b, session_id=session_id, stream="1") as late:
                frames = frames_until(late, is_reply("mid"))
        final = frames[-1]
        assert final["type"] == "message"
        deltas = [f["delta"] for f in frames if f.get("type") == "delta"]
        # The first delta is everything so far, the rest follow.
        assert deltas[0].startswith(so_far)
        assert "".join(deltas) == final["message"] == f"Echo: {WORDS}"


def test_a_process_killed_mid_reply_leaves_no_session_locked(tmp_path: Path) -> None:
    with two_processes(tmp_path, delay=0.1) as cluster:
        session_id = new_session(cluster.a)
        with socket(cluster.b, session_id=session_id) as on_b:
            with socket(cluster.a, session_id=session_id, stream="1") as on_a:
                on_a.send(json.dumps({"message": WORDS, "id": "doomed"}))
                frames_until(on_a, lambda f: f.get("type") == "delta")
                cluster.a.signal(signal.SIGKILL)
                cluster.a.wait()
            # The other process notices the silence, takes the session over and answers the
            # message in progress; the client sending it again gets that one reply.
            on_b.send(json.dumps({"message": WORDS, "id": "doomed"}))
            final = frames_until(on_b, is_reply("doomed"), timeout=30)[-1]
            assert final["type"] == "message"
            assert final["message"] == f"Echo: {WORDS}"
            # The session takes new messages as usual.
            on_b.send(json.dumps({"message": "still here?", "id": "after"}))
            after = frames_until(on_b, is_reply("after"))[-1]
            assert after["message"] == "Echo: still here?"
        stored = history(cluster.b, session_id)
        assert [(m["role"], m["content"]) for m in stored] == [
            ("user", WORDS), ("assistant", f"Echo: {WORDS}"),
            ("user", "still here?"), ("assistant", "Echo: still here?"),
        ]  # fmt: skip


def test_messages_left_by_a_stopped_process_are_answered_by_the_other(tmp_path: Path) -> None:
    with two_processes(tmp_path, delay=0.05) as cluster:
        session_id = new_session(cluster.a)
        replies: list[dict[str, Any]] = []
        with (
            socket(cluster.b, session_id=session_id) as on_b,
            socket(cluster.a, session_id=session_id, stream="1") as on_a,
        ):
            for n in range(3):
                on_a.send(json.dumps({"message": f"{n} {WORDS}", "id": f"n{n}"}))
            frames_until(on_a, lambda f: f.get("type") == "delta")
            stopping = threading.Thread(target=cluster.a.stop)
            stopping.start()
            replies += [
                f for f in frames_until(on_b, is_reply("n2"), 30) if f.get("type") == "message"
            ]
            stopping.join()
        assert [r["reply_to"] for r in replies] == ["n0", "n1", "n2"]
        wait_for(lambda: len(history(cluster.b, session_id)) == 6, "all three answered")


@needs_postgres_binaries
def test_postgresql_restarted_under_load_loses_nothing_acknowledged(tmp_path: Path) -> None:
    database = PostgresServer()
    database.start()
    try:
        with two_processes(
            tmp_path, delay=0.001, url=database.url, CHATBOT_RATE_LIMIT_PER_MINUTE="100000"
        ) as cluster:
            session_id = new_session(cluster.a)
            load = Load([cluster.a, cluster.b])
            load.start()
            wait_for(lambda: load.acked_count() >= 40, "replies before the restart")
            with (
                socket(cluster.a, session_id=session_id) as on_a,
                socket(cluster.b, session_id=session_id) as on_b,
            ):
                database.stop()
                load.acked_at_restart = load.acked_count()
                # While it is down, a message gets an error frame, not silence.
                on_a.send(json.dumps({"message": "anyone?", "id": "down"}))
                error = frames_until(on_a, is_reply("down"))[-1]
                assert error["type"] == "error" and error["error"]["retryable"] is True
                database.start()
                # Both reconnect by themselves.
                for server in (cluster.a, cluster.b):
                    wait_for(
                        lambda s=server: httpx.get(f"{s.url}/readyz").status_code == 200,
                        "the process to be ready again",
                    )
                wait_for(lambda: load.acked_count() >= load.acked_at_restart + 40, "load again")
                # Sent again, the message is answered, and the other process hears of it.
                on_a.send(json.dumps({"message": "anyone?", "id": "down"}))
                reply = frames_until(on_a, is_reply("down"))[-1]
                assert reply["type"] == "message" and reply["message"] == "Echo: anyone?"
                assert frames_until(on_b, is_reply("down"))[-1] == reply
            load.stop()
            # Every reply a client saw is stored, once, after its question.
            for (_, session), acked in load.acked.items():
                stored = run_sql(
                    database.url,
                    "SELECT role, content FROM messages WHERE session_id = $1 ORDER BY id",
                    session,
                )
                replies = [row["content"] for row in stored if row["role"] == "assistant"]
                assert set(acked) <= set(replies)
                assert len(replies) == len(set(replies))
                questions = [row["content"] for row in stored if row["role"] == "user"]
                assert len(questions) == len(set(questions))
    finally:
        database.close()


class Load:
    """A client per process sending numbered messages one after another (a new id only once
    the last one was answered; an error means send it again), until stopped."""

    user = "loader"

    def __init__(self, servers: list[ServeProcess]) -> None:
        self.servers = servers
        self.acked: dict[tuple[ServeProcess, str], list[str]] = {}
        self.acked_at_restart = 0
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._client, args=(s,)) for s in servers]
        self._lock = threading.Lock()

    def acked_count(self) -> int:
        with self._lock:
            return sum(len(v) for v in self.acked.values())

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(30)

    def _client(self, server: ServeProcess) -> None:
        session_id = new_session(server, self.user)
        mine = self.acked.setdefault((server, session_id), [])
        n = 0
        with (
            socket(server, self.user, session_id=session_id) as ws,
            contextlib.suppress(ConnectionClosed),  # the test ended without stopping us
        ):
            while not self._stop.is_set():
                client_id = f"{server.port}-{n}"
                ws.send(json.dumps({"message": f"load {client_id}", "id": client_id}))
                frame = frames_until(ws, is_reply(client_id), timeout=60)[-1]
                if frame["type"] == "message":
                    with self._lock:
                        mine.append(frame["message"])
                    n += 1
                elif not frame["error"]["retryable"]:
                    raise AssertionError(frame)
                else:
                    self._stop.wait(0.05)  # a client's pause before it sends again


def test_a_quota_spent_on_one_process_is_enforced_on_the_other(tmp_path: Path) -> None:
    with two_processes(tmp_path, delay=0, CHATBOT_QUOTA_TOKENS_PER_DAY="5") as cluster:
        session_id = new_session(cluster.a)
        with (
            socket(cluster.a, session_id=session_id) as on_a,
            socket(cluster.b, session_id=session_id) as on_b,
        ):
            on_a.send(json.dumps({"message": "one two three four five six", "id": "spend"}))
            spent = frames_until(on_a, is_reply("spend"))[-1]
            assert spent["type"] == "message"
            assert spent["usage"]["input_tokens"] + spent["usage"]["output_tokens"] > 5
            on_b.send(json.dumps({"message": "more?", "id": "over"}))
            refused = frames_until(on_b, is_reply("over"))[-1]
        assert refused["type"] == "error"
        assert refused["error"]["code"] == "quota_exceeded"
        assert 0 < refused["error"]["retry_after"] <= 86_400
        # Never reached the model: nothing of it is stored.
        assert [m["content"] for m in history(cluster.a, session_id) if m["role"] == "user"] == [
            "one two three four five six"
        ]


def test_a_cancel_sent_right_behind_its_message_stops_it(tmp_path: Path) -> None:
    with two_processes(tmp_path, delay=0.1) as cluster:
        session_id = new_session(cluster.a)
        with socket(cluster.b, session_id=session_id) as on_b:
            on_b.send(json.dumps({"message": WORDS, "id": "quick"}))
            on_b.send(json.dumps({"type": "cancel"}))
            final = frames_until(on_b, is_reply("quick"))[-1]
        assert final["type"] == "message"
        assert final["status"] == "cancelled"
