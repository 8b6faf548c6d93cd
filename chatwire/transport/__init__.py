"""Socket.IO wiring: the server, the broker over it, and thin event handlers."""
