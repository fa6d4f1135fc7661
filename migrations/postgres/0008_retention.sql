-- Dead letters and idempotency keys are kept for a documented period, then pruned by age.
CREATE INDEX dead_letters_age ON dead_letters (received_at);
CREATE INDEX command_idempotency_age ON command_idempotency (created_at);
