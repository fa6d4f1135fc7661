-- Where `projections rebuild` builds fresh read-model tables before swapping them in.
CREATE SCHEMA IF NOT EXISTS tacho_rebuild;
