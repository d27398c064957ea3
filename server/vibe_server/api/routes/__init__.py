"""One router per resource: health, API docs, jobs, body_model, live, shutdown."""
