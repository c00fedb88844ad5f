"""HyperP's claims as checks: each reads runs (or trains a few tiny ones) and returns numbers and a verdict
whose thresholds it states (method.md sections 9 and 10). The `hyperp check` commands print them."""
