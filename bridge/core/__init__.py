"""The domain's vocabulary, with no I/O: rules and their model, the metric catalog, errors,
label matchers, times and durations, PromQL helpers, number formatting, external tools."""
