"""The judging core: service, request planning, prompts, generators, result types, errors, engine factory."""
