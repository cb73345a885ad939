"""The HTTP edge: thin routers, dependencies, middleware and the one error boundary."""
