"""The plugin contract: hook specs, the plugin manager, the registry of named kinds, interceptor
wrapping, the store and auth protocols, and who is calling. Everything a plugin imports."""
