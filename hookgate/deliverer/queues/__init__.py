"""Durable storage of events and their deliveries: the contract (``base``), the embedded
SQLite queue (``sqlite``), Redis Streams (``redis``) and the factory that opens one by URL
(``factory``). The bottom layer of the deliverer: it imports neither intake nor delivery."""
