"""The HTTP side: the aiohttp application, its routes and middleware, the guarded server,
authentication, the OpenAPI document and the bridge's own metrics."""
