-- ConsentGranted version 2 records who gave a consent; the read model shows it. Refilled from the
-- log at the next start (no checkpoint: the read model is filled into fresh tables and swapped in).
ALTER TABLE rm_consents ADD COLUMN granted_by text;
DELETE FROM subscription_checkpoints WHERE name = 'consents';
