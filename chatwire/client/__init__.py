"""chatwire's Python SDK. `chatwire.client.server`: the server-side client (API key) and the Redis emitter."""
