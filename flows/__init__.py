"""flows: Prefect flows and the segpipe command line."""
