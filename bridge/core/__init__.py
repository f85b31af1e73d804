"""The domain's vocabulary, with no I/O: alerts as they arrive, rules and their model, the
metric catalog, errors, label matchers, times and durations, PromQL helpers, number
formatting. What touches the machine (the keys file, external tools, processes) is
bridge.host."""
