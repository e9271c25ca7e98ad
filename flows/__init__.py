"""Prefect wiring only: thin tasks over pipeline_core, the flows, and scheduling."""
