"""Services: what the routes call (upload, release, relay), each over the wired components."""
