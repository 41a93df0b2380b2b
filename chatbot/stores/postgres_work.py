"""The tables and functions of the work shared by several processes on PostgreSQL (the
store's migration ``0002_work``).

* ``chatbot_processes``: each live process and when it last said so (a heartbeat).
* ``chatbot_jobs``: the messages waiting for a reply, per session, in the order sent,
  until answered. They outlive a process that dies or stops.
* ``chatbot_workers``: which process answers each busy session. One at a time: a process
  holds a session until its queue is empty, and a process whose heartbeat stopped loses its
  sessions to the next one that looks.

Every change to a session's queue or worker takes the same transaction-level advisory
lock, so that a message queued just as the worker finds the queue empty is never left
behind. Each function is one round trip.
"""

from __future__ import annotations

MIGRATION = """
CREATE TABLE chatbot_processes (
    id text PRIMARY KEY,
    seen_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE chatbot_jobs (
    id bigserial PRIMARY KEY,
    session_id text NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
    client_id text,
    job jsonb NOT NULL,
    -- Sent again while it was being answered: answered again if that failed.
    resent boolean NOT NULL DEFAULT false,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX chatbot_jobs_session ON chatbot_jobs (session_id, id);
CREATE UNIQUE INDEX chatbot_jobs_client ON chatbot_jobs (session_id, client_id)
    WHERE client_id IS NOT NULL;

CREATE TABLE chatbot_workers (
    session_id text PRIMARY KEY REFERENCES sessions(id) ON DELETE CASCADE,
    process text NOT NULL,
    since timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX chatbot_workers_process ON chatbot_workers (process);

CREATE FUNCTION chatbot_alive(p_process text, p_timeout double precision) RETURNS boolean
LANGUAGE sql STABLE AS $$
    SELECT EXISTS (
        SELECT 1 FROM chatbot_processes
        WHERE id = p_process AND seen_at > now() - make_interval(secs => p_timeout)
    )
$$;

-- Queue a job: 'duplicate' (its client id is queued already: the job is marked resent, by
-- the socket that sent it again), 'busy' (the queue is full),
-- 'queued' (a live process answers the session), 'claimed' (the caller does now) or
-- 'first:ID' (the caller does now, and the job ID it queued is the only one).
CREATE FUNCTION chatbot_submit(
    p_session text, p_client text, p_job jsonb, p_process text, p_queue integer,
    p_timeout double precision
) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    waiting integer;
    queued integer;
    holder text;
    new_id bigint;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtextextended('chatbot.work:' || p_session, 0));
    IF p_client IS NOT NULL THEN
        UPDATE chatbot_jobs SET resent = true, job = p_job
        WHERE session_id = p_session AND client_id = p_client;
        IF FOUND THEN
            RETURN 'duplicate';
        END IF;
    END IF;
    SELECT w.process INTO holder FROM chatbot_workers w WHERE w.session_id = p_session;
    SELECT count(*) INTO waiting FROM chatbot_jobs WHERE session_id = p_session;
    queued := waiting;
    IF holder IS NOT NULL AND waiting > 0 THEN
        waiting := waiting - 1;  -- the one being answered is not waiting
    END IF;
    IF waiting >= p_queue THEN
        RETURN 'busy';
    END IF;
    INSERT INTO chatbot_jobs (session_id, client_id, job) VALUES (p_session, p_client, p_job)
    RETURNING id INTO new_id;
    IF holder IS NOT NULL AND chatbot_alive(holder, p_timeout) THEN
        RETURN 'queued';
    END IF;
    INSERT INTO chatbot_workers (session_id, process) VALUES (p_session, p_process)
    ON CONFLICT (session_id) DO UPDATE SET process = EXCLUDED.process, since = now();
    IF queued = 0 THEN
        RETURN 'first:' || new_id;  -- the only job: the caller answers it without reading it
    END IF;
    RETURN 'claimed';
END
$$;

-- The worker's next job: remove the one answered (p_done; kept, to be answered again, if
-- it failed (p_failed) and was sent again meanwhile: the error frame crossed the resend),
-- then the oldest waiting one; none (and the session released) when the queue is empty,
-- when the caller stops (p_stop), or when another process took the session over.
CREATE FUNCTION chatbot_next_job(
    p_session text, p_process text, p_done bigint, p_stop boolean, p_failed boolean
) RETURNS TABLE (job_id bigint, job_body jsonb) LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(hashtextextended('chatbot.work:' || p_session, 0));
    IF p_done IS NOT NULL THEN
        DELETE FROM chatbot_jobs j WHERE j.id = p_done AND NOT (p_failed AND j.resent);
        UPDATE chatbot_jobs j SET resent = false WHERE j.id = p_done;
    END IF;
    IF NOT EXISTS (
        SELECT 1 FROM chatbot_workers w WHERE w.session_id = p_session AND w.process = p_process
    ) THEN
        RETURN;
    END IF;
    IF NOT p_stop THEN
        RETURN QUERY SELECT j.id, j.job FROM chatbot_jobs j
            WHERE j.session_id = p_session ORDER BY j.id LIMIT 1;
        IF FOUND THEN
            RETURN;
        END IF;
    END IF;
    DELETE FROM chatbot_workers w WHERE w.session_id = p_session AND w.process = p_process;
END
$$;

-- The heartbeat: say this process is alive, forget long-dead ones, and (unless p_claim is
-- false: a process stopping still says it is alive until its last reply is stored) claim
-- the sessions whose jobs nobody answers (their process stopped or died). Returns those.
CREATE FUNCTION chatbot_heartbeat(p_process text, p_timeout double precision, p_claim boolean)
RETURNS SETOF text LANGUAGE plpgsql AS $$
DECLARE
    orphan text;
BEGIN
    INSERT INTO chatbot_processes (id) VALUES (p_process)
    ON CONFLICT (id) DO UPDATE SET seen_at = now();
    DELETE FROM chatbot_processes
    WHERE seen_at < now() - make_interval(secs => 10 * p_timeout);
    IF NOT p_claim THEN
        RETURN;
    END IF;
    FOR orphan IN
        SELECT DISTINCT j.session_id FROM chatbot_jobs j
        LEFT JOIN chatbot_workers w ON w.session_id = j.session_id
        WHERE w.session_id IS NULL OR NOT chatbot_alive(w.process, p_timeout)
    LOOP
        PERFORM pg_advisory_xact_lock(hashtextextended('chatbot.work:' || orphan, 0));
        IF NOT EXISTS (
            SELECT 1 FROM chatbot_workers w
            WHERE w.session_id = orphan AND chatbot_alive(w.process, p_timeout)
        ) AND EXISTS (SELECT 1 FROM chatbot_jobs j WHERE j.session_id = orphan) THEN
            INSERT INTO chatbot_workers (session_id, process) VALUES (orphan, p_process)
            ON CONFLICT (session_id) DO UPDATE SET process = EXCLUDED.process, since = now();
            RETURN NEXT orphan;
        END IF;
    END LOOP;
END
$$;

-- A process that stops: its sessions go to the others (or to the next process to start).
CREATE FUNCTION chatbot_leave(p_process text) RETURNS void LANGUAGE sql AS $$
    DELETE FROM chatbot_workers WHERE process = p_process;
    DELETE FROM chatbot_processes WHERE id = p_process;
$$;
"""

SUBMIT = "SELECT chatbot_submit($1, $2, $3::jsonb, $4, $5, $6)"
NEXT_JOB = "SELECT job_id, job_body FROM chatbot_next_job($1, $2, $3, $4, $5)"
HEARTBEAT = "SELECT session_id FROM chatbot_heartbeat($1, $2, $3) AS claimed(session_id)"
LEAVE = "SELECT chatbot_leave($1)"
#: The sessions a process holds, each with the owner its first waiting job names (to read
#: the session as theirs; ``NULL``: nothing waits).
HELD = (
    "SELECT w.session_id, (SELECT j.job->>'owner' FROM chatbot_jobs j "
    "WHERE j.session_id = w.session_id ORDER BY j.id LIMIT 1) AS owner "
    "FROM chatbot_workers w WHERE w.process = $1"
)
