"""Domain logic. Nothing here imports Socket.IO or SQL: services use repositories and backend interfaces."""
