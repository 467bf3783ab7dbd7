"""The model lifecycle: training on TLC data, the MLflow registry, promotion and its gate,
releases to the running functions, and what a service loads to serve."""
