"""The shared contract: rewards, tags, run-directory paths, schemas, config, metrics."""
