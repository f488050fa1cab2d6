ALTER TABLE orders DROP COLUMN IF EXISTS mail_claimed_at;
