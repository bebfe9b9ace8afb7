"""The helpers every test directory shares, one copy of each.

- ``ci``: skip or fail when something the test needs is missing (decided by ``CI``).
- ``clock``: a fake clock the test moves by hand.
- ``ports``: loopback ports, race-free: bind port 0 and hand over the socket.
- ``waiting``: wait for a condition with a deadline, failing with what was awaited.
- ``process``: child processes: restartable servers, the ``hookgate`` command, and
  ``hookgate run`` as a gateway process.
- ``receiver``: a real HTTP webhook receiver that records what it gets.
- ``gateway``: a gateway running in the test process, and what a test does with it.
- ``manifests``: manifests as YAML text.
- ``redis_server``, ``brokers``, ``broker_harness``: real Redis and message brokers, and
  how the tests publish to them.
- ``queue_records``: events and attempts for the queue backend tests.
- ``invalid_objects``: manifests the schema and ``hookgate validate`` must refuse.
"""
