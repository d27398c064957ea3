"""One router per resource: health, jobs, body_model."""
