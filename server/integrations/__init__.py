"""Drop-in rewards for RL trainers: a client of grm-server and adapters for TRL and verl (no FastAPI here)."""
