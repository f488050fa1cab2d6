-- The order mail's claim: the run that is sending it, and since when.
ALTER TABLE orders ADD COLUMN mail_claimed_at timestamptz;
