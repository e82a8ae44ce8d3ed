"""The real-time event path (issue 3).

``Events.Ingest`` (:mod:`server.events.servicer`) validates a batch
(:mod:`.validate`), publishes it to the JetStream stream ``FUNNEL_EVENTS``
(:mod:`.publisher`, stream setup and the embedded ``nats-server`` in
:mod:`.nats_server`) and replies after every PubAck; when NATS is unreachable
the events go to the local durable outbox in LMDB (:mod:`.outbox`) and a
forwarder publishes them when NATS is back. The ingest worker (:mod:`.worker`,
its own process) applies the stream to the users db, exactly once per stream
sequence. :mod:`.services` runs NATS and the worker beside ``funnel serve``.
:mod:`.erasure` erases a user (``Admin.DeleteUser``: stream purge, row, outbox,
tombstone the worker honours) and clears an opted-out user (``Admin.SetConsent``).
"""
