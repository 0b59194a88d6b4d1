"""The I/O shell around the pure core: zmq sockets, the clock, SQLite storage."""
