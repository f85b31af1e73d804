"""The operators' page: server-rendered HTML over the store, live through the event stream."""
