"""The replicated data model, pure (no I/O): a PN-counter with observed reset per key
(:mod:`.pncounter`) whose records have births and whose keys can expire (:mod:`.expiry`,
issue 21), the compact keyspace that holds them (:mod:`.keyspace`, with what arrives
from other nodes in :mod:`.merging`, a batch's parts in :mod:`.batch`, expiry and
collection in :mod:`.lives`, and the packed form of a key's records and their one join
in :mod:`.records`), the hash tree that lets two nodes find which keys differ
(:mod:`.hashtree`) and the page of states a repair moves (:mod:`.page`)."""
