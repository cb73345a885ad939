"""The HTTP layer: app factory, routes, edge middleware, serving classes, protocol models, metrics."""
