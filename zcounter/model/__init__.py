"""The replicated data model, pure (no I/O): a PN-counter with observed reset per key
(:mod:`.pncounter`), the compact keyspace that holds them (:mod:`.keyspace`) and the hash
tree that lets two nodes find which keys differ (:mod:`.hashtree`)."""
