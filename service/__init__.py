"""The FastAPI service: promoted adapters over HTTP. `distill-slm serve` starts it."""
