"""REST routers on Open WebUI's paths."""
