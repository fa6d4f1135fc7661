-- Webhook deliveries (src/webhooks):
-- * a consent's grant remembers where in the log it began (commit order), so a subscription gets a
--   vehicle's data only from the grant in force on (not what was recorded before the owner agreed);
--   a grant that renews one still in force keeps its beginning; a row no grant event wrote (an
--   older writer) begins at the end of time: it opens nothing. Refilled from the log at the next
--   start (no checkpoint: the read model is filled into fresh tables and swapped in).
-- * a subscription's run of failed attempts is kept with its place in the log, so a restart does
--   not forget how long its endpoint has been failing.
ALTER TABLE rm_consents ADD COLUMN granted_tx bigint NOT NULL DEFAULT 9223372036854775807;
ALTER TABLE rm_consents ADD COLUMN granted_position bigint NOT NULL DEFAULT 9223372036854775807;
DELETE FROM subscription_checkpoints WHERE name = 'consents';
ALTER TABLE webhook_cursors ADD COLUMN failures bigint NOT NULL DEFAULT 0;
